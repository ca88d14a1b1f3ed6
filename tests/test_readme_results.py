"""The README's measured figures are the results files' (experiments/readme_results.py)."""

import importlib
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
  return importlib.import_module('experiments.readme_results')


@pytest.fixture(scope='module')
def generator():
  return _load()


@pytest.mark.parametrize('page', _load().PAGES)
def test_every_results_block_is_written_from_its_results_file(generator, page):
  with open(os.path.join(ROOT, page)) as f:
    text = f.read()
  assert generator.BLOCK.findall(text), f'{page} has no results block'
  assert generator.render(text) == text, 'run: python experiments/readme_results.py'


def test_a_figure_changed_by_hand_is_caught(generator):
  with open(os.path.join(ROOT, 'README.md')) as f:
    readme = f.read()
  with open(os.path.join(ROOT, 'docs', 'results', 'demo.json')) as f:
    demo = json.load(f)
  ue = next(r for r in demo['rows'] if r['method'] == 'ue' and r['setting'] == 'd=16')
  figure = f'{ue["test_auc"]:.4f}'
  assert figure in readme
  edited = readme.replace(figure, f'{ue["test_auc"] + 0.01:.4f}', 1)
  assert generator.render(edited) != edited
  assert generator.render(edited) == readme


def test_every_page_with_a_results_block_is_checked(generator):
  pages = [os.path.relpath(os.path.join(d, f), ROOT)
           for d, _, files in os.walk(os.path.join(ROOT, 'docs')) for f in files
           if f.endswith('.md') and 'results' not in os.path.relpath(d, ROOT).split(os.sep)]
  for page in ['README.md'] + pages:
    with open(os.path.join(ROOT, page)) as f:
      if generator.BLOCK.search(f.read()):
        assert page in generator.PAGES, f'{page} has results blocks but is not in PAGES'


def test_an_export_figure_changed_by_hand_is_caught(generator):
  with open(os.path.join(ROOT, 'docs', 'serving.md')) as f:
    page = f.read()
  with open(os.path.join(ROOT, 'docs', 'results', 'bench_export.json')) as f:
    bench = json.load(f)
  row = next(r for r in bench['rows'] if r['part'] == 'forms' and r['form'] == 'int8'
             and r['layout'] == 'bitmask')
  figure = f'{row["bytes"]:,}'
  assert figure in page
  edited = page.replace(figure, f'{row["bytes"] + 1:,}', 1)
  assert generator.render(edited) != edited
  assert generator.render(edited) == page


def test_an_sseds_figure_changed_by_hand_is_caught(generator):
  with open(os.path.join(ROOT, 'docs', 'methods.md')) as f:
    page = f.read()
  with open(os.path.join(ROOT, 'docs', 'results', 'sseds_study.json')) as f:
    study = json.load(f)
  rows = [r for r in study['rows'] if r['dataset'] == 'compare' and r['method'] == 'sseds'
          and r['variant'] == 'paper' and r['seed'] == study['seeds'][0]]
  row = min(rows, key=lambda r: r['budget'])
  figure = f'{row["params"]:,} of the {row["budget"]:,} allowed'
  assert figure in page
  edited = page.replace(figure, f'{row["params"] + 1:,} of the {row["budget"]:,} allowed', 1)
  assert generator.render(edited) != edited
  assert generator.render(edited) == page


def test_the_quantised_forms_measured_the_recorded_comparison():
  """compare_forms.json is of the comparison compare.json records, not of an earlier run."""
  with open(os.path.join(ROOT, 'docs', 'results', 'compare.json')) as f:
    compare = json.load(f)
  with open(os.path.join(ROOT, 'docs', 'results', 'compare_forms.json')) as f:
    forms = json.load(f)
  assert forms['comparison_sha256'] == compare['comparison_sha256'], (
      'docs/results/compare_forms.json measured another comparison: run '
      'experiments/compare_forms.py on the recorded work directory')
