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


def _results(file):
  path = os.path.join(ROOT, 'docs', 'results', file)
  if not os.path.exists(path):
    pytest.skip(f'docs/results/{file} not measured')
  with open(path) as f:
    return json.load(f)


def _scaling_figure():
  rows = _results('bench_scaling.json')['rows']
  row = max((r for r in rows if r['devices'] == 1), key=lambda r: r['vocab'])
  return f'{row["temp_gib"]:.3f}', f'{row["temp_gib"] + 0.001:.3f}'


def _build_figure(file):
  rate = _results(file)['build_rows_per_s']
  return f'{rate:,.0f} |', f'{rate + 1:,.0f} |'


def _tfds_figure():
  build = _results('bench_tfds_1m.json')['tfds_build_s']
  return f'{build:.1f} s', f'{build + 0.1:.1f} s'


def _tfds_ratio():
  tfds, cache = _results('bench_tfds_1m.json'), _results('bench_data_1m.json')
  ratio = _load()._about(tfds["tfds_build_s"] / cache["build_s"])
  return f'builds {ratio}x faster', f'builds {ratio}0x faster'


@pytest.mark.parametrize('page, figures', [
    ('docs/sharding.md', _scaling_figure),
    ('docs/data.md', lambda: _build_figure('bench_data_1m.json')),
    ('docs/data.md', lambda: _build_figure('bench_data_5m.json')),
    ('docs/data.md', lambda: _build_figure('bench_data_full.json')),
    ('docs/data.md', _tfds_figure),
    ('README.md', _tfds_ratio),
], ids=['scaling', 'build_1m', 'build_5m', 'build_full', 'tfds', 'readme_tfds'])
def test_a_benchmark_figure_changed_by_hand_is_caught(generator, page, figures):
  with open(os.path.join(ROOT, page)) as f:
    text = f.read()
  figure, changed = figures()
  assert figure in text
  edited = text.replace(figure, changed, 1)
  assert generator.render(edited) != edited
  assert generator.render(edited) == text
