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


def _setup_part(seconds, before, date='2026-11-29T18:56:43+00:00', **extra):
  machine = {'platform': 'Linux', 'processor': 'x86_64', 'cpus': 2, 'python': '3.11.7',
             'jax': '0.10.2'}
  return {'command': 'python ...', 'returncode': 0, 'seconds': seconds, 'status': 'passed',
          'load_average_before': [before, 2.0, 2.0], 'load_average_after': [3.0, 2.5, 2.0],
          'machine': machine, 'date': date, **extra}


def test_setup_times_says_each_part_with_its_load(generator):
  demo = _setup_part(152.4, 1.38)
  text = generator.render_setup_times({'demo': demo})
  assert 'the demo itself took 2 min 32 s on 2026-11-29' in text
  assert 'load average of 1.4 before it started' in ' '.join(text.split())
  assert 'test' not in text  # no figure for a part not measured
  tests = _setup_part(1076.1, 2.54, counts={'passed': 797, 'skipped': 2, 'warnings': 1})
  text = ' '.join(generator.render_setup_times({'demo': demo, 'tests': tests}).split())
  assert 'the test suite (797 passed and 2 skipped) took 17 min 56 s' in text
  assert 'load average of 2.5 before it started' in text


def test_setup_times_says_a_failed_suite_failed(generator):
  tests = _setup_part(61.0, 0.5, counts={'passed': 790, 'failed': 9}, status='failed',
                      returncode=1)
  text = ' '.join(generator.render_setup_times({'demo': _setup_part(48.0, 0.2),
                                                'tests': tests}).split())
  assert 'the demo itself took 48 s' in text
  assert 'the test suite (790 passed and 9 failed) failed after 1 min 1 s' in text


def test_reachability_prose_follows_its_results_file(generator):
  """The recommendation's step count and cost in AUC are read from the results file."""
  with open(os.path.join(ROOT, 'docs', 'results', 'reachability_standin_long.md')) as f:
    long_runs = f.read()
  text = generator.render_reachability_recommendation(long_runs)
  assert 'enough steps: 11,222 on the stand-in' in text
  changed = long_runs.replace('| 11222 | 11222 |', '| 12000 | 12000 |').replace(
      '| 0.7400 | 0.1089 |', '| 0.7300 | 0.0989 |')
  text = ' '.join(generator.render_reachability_recommendation(changed).split())
  assert 'enough steps: 12,000 on the stand-in' in text
  assert 'costs 0.019 AUC' in text


def test_a_reachability_figure_changed_by_hand_is_caught(generator):
  with open(os.path.join(ROOT, 'docs', 'analyses.md')) as f:
    page = f.read()
  for figure, edit in (('reaches 5% at step 4,317', 'reaches 5% at step 4,300'),
                       ('0.8128 to 0.8221', '0.8128 to 0.8231')):
    assert figure in ' '.join(page.split())
    edited = page.replace(figure, edit, 1)
    assert edited != page
    assert generator.render(edited) == page


def test_the_stand_ins_table_is_the_presets(generator):
  from pep_jax import presets
  config = presets.movielens_shaped_config()
  assert generator.STANDIN_TABLE == (sum(config.data.synthetic.vocab_sizes), config.embedding.dim)


def test_a_performance_figure_changed_by_hand_is_caught(generator):
  with open(os.path.join(ROOT, 'docs', 'performance.md')) as f:
    page = f.read()
  with open(os.path.join(ROOT, 'docs', 'results', 'bench_speed.json')) as f:
    bench = json.load(f)
  (demo,) = [r for r in bench['rows'] if r['part'] == 'demo']
  figure = f'the demo took {demo["seconds"]:.0f} s'
  assert page.count(figure) == 2  # how long the run took, and what both cores did for the demo
  for start in (0, page.index(figure) + 1):
    at = page.index(figure, start)
    edited = page[:at] + f'the demo took {demo["seconds"] + 10:.0f} s' + page[at + len(figure):]
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
