"""The README's measured figures are the results files' (experiments/readme_results.py)."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def generator():
  spec = importlib.util.spec_from_file_location(
      'readme_results', os.path.join(ROOT, 'experiments', 'readme_results.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('page', ['README.md', 'docs/performance.md', 'docs/analyses.md'])
def test_every_results_block_is_written_from_its_results_file(generator, page):
  assert page in generator.PAGES
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
