"""Every script of ``experiments/`` runs on a tiny config, and its table says what its runs did.

Each test runs one script as a user would (a subprocess, tiny data, a few seconds) and checks
the numbers of the table it writes against the work directories it leaves: the step a ticket
was cut at against the pruning curve, a retrained AUC against that run's summary row, a
difference against the two numbers it subtracts. ``interactions`` and ``runtime`` are tested in
``test_analysis.py``, ``bench_speed`` and ``bench_public`` in their own files.
"""

import csv
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import demo
from pep_jax import analysis
from pep_jax import workdir as wd
from pep_jax.data import load_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = '--config=configs/demo.py:tiny'


def page_renderers():
  """``experiments/readme_results.py``, which writes the pages' figures from results files."""
  return importlib.import_module('experiments.readme_results')


def script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  """Runs ``experiments/<name>.py`` with ``args``; fails on a non-zero exit."""
  env = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu', **(env or {})}
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', f'{name}.py'), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  return proc


def read_csv(path) -> list[dict]:
  with open(path) as f:
    return list(csv.DictReader(f))


def number(cell: str):
  return None if cell in ('', 'None') else float(cell)


def summary(workdir: str) -> list[dict]:
  with open(wd.summary_paths(workdir)['json']) as f:
    return json.load(f)


def pep_row(workdir: str, budget: int, method: str = 'pep') -> dict:
  (row,) = [r for r in summary(workdir) if r['method'] == method and r['budget'] == budget]
  return row


def test_granularity_table_follows_each_pruning_curve(tmp_path):
  script('granularity', TINY, f'--workdir={tmp_path}', '--granularities=global,feature_dimension')
  rows = read_csv(tmp_path / 'granularity.csv')
  assert [r['granularity'] for r in rows] == ['global'] * 2 + ['feature_dimension'] * 2
  assert (tmp_path / 'granularity.png').exists()
  for row in rows:
    workdir = str(tmp_path / row['granularity'])
    result = analysis.prune_result(workdir)
    budget = int(row['budget'])
    assert budget in result['budgets']
    assert int(row['final_nonzeros']) == result['final_nonzeros']
    if budget not in result['reached']:
      assert row['ticket_step'] == '' and row['test_auc'] == ''
      continue
    (ticket,) = [t for t in wd.find_tickets(workdir) if t['budget'] == budget]
    step = int(row['ticket_step'])
    assert step == ticket['step'] and int(row['nonzeros']) == ticket['nonzeros'] <= budget
    steps, counts = analysis.prune_curve(workdir)  # logged every few steps
    assert (counts[steps < step] > budget).all()
    assert analysis.first_step_at_or_under(steps, counts, budget) >= step
    assert number(row['test_auc']) == pytest.approx(pep_row(workdir, budget)['test_auc'],
                                                    abs=1e-12)


def test_reachability_table_against_its_runs(tmp_path):
  script('reachability', TINY, f'--workdir={tmp_path}', '--s_inits=-8,-4', '--gates=sigmoid:4')
  rows = read_csv(tmp_path / 'reachability.csv')
  assert [r['setting'] for r in rows] == ['s-8_sigmoid_x4', 's-4_sigmoid_x4']
  (ue,) = [r for r in summary(str(tmp_path / 'ue')) if r['method'] == 'ue']
  reached_any = False
  for row in rows:
    workdir = str(tmp_path / row['setting'])
    result = analysis.prune_result(workdir)
    smallest = min(result['budgets'])
    assert row['reached'] == str(smallest in result['reached'])
    assert int(row['pruning_steps']) == result['steps']
    assert number(row['final_fraction']) == pytest.approx(
        result['final_nonzeros'] / result['table_entries'], rel=1e-12)
    if row['reached'] == 'True':
      reached_any = True
      retrained = pep_row(workdir, smallest)
      assert number(row['test_auc']) == pytest.approx(retrained['test_auc'], abs=1e-12)
      assert number(row['vs_ue_d8']) == pytest.approx(retrained['test_auc'] - ue['test_auc'],
                                                      abs=1e-12)
  assert reached_any  # the larger thresholds reach the budget on the tiny data


def test_lottery_ticket_table_holds_each_arm(tmp_path):
  script('lottery_ticket', TINY, f'--workdir={tmp_path}', f'--results={tmp_path}/results.json')
  (row,) = read_csv(tmp_path / 'lottery_ticket.csv')
  run = str(tmp_path / 'run')
  budget = int(row['budget'])
  (ticket,) = [t for t in wd.find_tickets(run) if t['budget'] == budget]
  assert int(row['ticket_step']) == ticket['step']
  assert number(row['rewind']) == pytest.approx(pep_row(run, budget)['test_auc'], abs=1e-12)
  assert number(row['random']) == pytest.approx(pep_row(run, budget, 'pep_random')['test_auc'],
                                                abs=1e-12)
  with open(tmp_path / 'no_retraining.json') as f:
    scored = json.load(f)
  assert number(row['no_retraining']) == pytest.approx(scored[str(budget)]['test_auc'],
                                                       abs=1e-12)
  (ue,) = [r for r in summary(run) if r['method'] == 'ue']
  assert number(row['unpruned']) == pytest.approx(ue['test_auc'], abs=1e-12)
  config = demo.get_config('tiny')
  data = load_dataset(config.data)
  assert int(row['unpruned_nonzeros']) == data.num_features * config.embedding.dim
  with open(tmp_path / 'results.json') as f:
    results = json.load(f)
  (recorded,) = results['rows']
  assert recorded['ticket_step'] == int(row['ticket_step'])
  assert recorded['rewind'] == pytest.approx(number(row['rewind']), abs=1e-12)
  assert results['data']['features'] == data.num_features
  pages = page_renderers()
  assert f'{recorded["ticket_step"]:,}' in pages.render_lottery_ticket(results)
  assert f'{recorded["ticket_step"]:,}' in pages.render_pep_ticket_steps(results)


def test_sizes_vs_frequency_table_is_the_last_snapshot(tmp_path):
  script('sizes_vs_frequency', TINY, f'--workdir={tmp_path}', '--every_steps=50',
         f'--results={tmp_path}/results.json')
  rows = read_csv(tmp_path / 'sizes_vs_frequency.csv')
  config = demo.get_config('tiny')
  data = load_dataset(config.data)
  assert [r['field'] for r in rows] == list(data.field_names)
  snapshots = np.load(tmp_path / 'snapshots.npz')
  sizes = snapshots[[k for k in snapshots.files if k != 'steps'][0]][-1]  # [N] at the last step
  counts = analysis.feature_counts(data.train.ids, data.field_dims)
  bounds = np.concatenate([[0], np.cumsum(data.field_dims)])
  for f, row in enumerate(rows):
    lo, hi = bounds[f], bounds[f + 1]
    assert int(row['vocabulary']) == data.field_dims[f]
    assert int(row['intrinsic_dim']) == data.info['intrinsic_dims'][f]
    assert number(row['mean_size']) == pytest.approx(sizes[lo:hi].mean(), rel=1e-9)
    assert number(row['mean_count']) == pytest.approx(counts[lo:hi].mean(), rel=1e-9)
  with open(tmp_path / 'results.json') as f:
    results = json.load(f)
  assert results['steps'] == [int(s) for s in snapshots['steps']]
  assert results['final_nonzeros'] == int(sizes.sum())
  assert [r['mean_size'] for r in results['rows']] == [number(r['mean_size']) for r in rows]
  pages = page_renderers()
  assert f'{results["steps"][-1]:,}' in pages.render_sizes_vs_frequency(results)
  assert 'What the masks follow' in pages.render_pep_masks(results)


def test_rows_versus_dense_compares_the_two_work_directories(tmp_path):
  script('rows_vs_dense', TINY, f'--workdir={tmp_path}')
  with open(tmp_path / 'rows_vs_dense.json') as f:
    report = json.load(f)
  assert report['tickets'] and 'cpus' in report['machine']
  for row in report['tickets']:
    for mode in ('dense', 'rows', 'dense_seed'):
      workdir = str(tmp_path / mode)
      (ticket,) = [t for t in wd.find_tickets(workdir) if t['budget'] == row['budget']]
      assert row[f'{mode}_step'] == ticket['step']
      assert row[f'{mode}_nonzeros'] == ticket['nonzeros'] <= row['budget']
      assert row[f'{mode}_under_budget'] == pytest.approx(
          (row['budget'] - ticket['nonzeros']) / row['budget'])
      assert row[f'{mode}_test_auc'] == pep_row(workdir, row['budget'])['test_auc']
    assert 0 < row['jaccard'] <= 1 and 0 < row['jaccard_dense_seeds'] <= 1
  with open(wd.config_path(str(tmp_path / 'dense_seed'))) as f:
    assert json.load(f)['seed'] == demo.get_config('tiny').seed + 1
  for mode, speed in report['prune_samples_per_second'].items():
    assert speed > 0, mode


def test_bench_data_builds_and_reads_the_cache(tmp_path):
  out = tmp_path / 'bench_data.json'
  script('bench_data', '--rows=20000', f'--json={out}', f'--workdir={tmp_path / "w"}')
  with open(out) as f:
    report = json.load(f)
  assert report['rows'] == 20000 and report['cache_built_in_this_run']
  assert report['build_rows_per_s'] == pytest.approx(20000 / report['build_s'], rel=0.05)
  assert report['iterator_rows_per_s_prefetch'] > 0 and report['num_features'] > 0
  assert 0 < report['build_pass1_s'] < report['build_s'] <= report['prepare_s']
  assert report['command'].startswith('python experiments/bench_data.py --rows=20000')
  assert len(report['load_average_before']) == len(report['load_average_after']) == 3
  assert report['machine'] and report['date']


def test_bench_scaling_checks_its_memory_model(tmp_path):
  out = tmp_path / 'bench_scaling.json'
  script('bench_scaling', '--devices=1,2', '--vocabs=100000,200000', '--dim=8',
         '--time_up_to=100000', '--time_steps=2', f'--out={out}',
         env={'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
  with open(out) as f:
    report = json.load(f)
  rows = report['rows']
  assert [(r['devices'], r['vocab']) for r in rows] == [(1, 100000), (2, 100000), (1, 200000),
                                                        (2, 200000)]
  for row in rows:  # (6 D + 3) * rows * 4 bytes, split over the devices; rows padded to 1024
    table_rows = round(row['table_gib'] * 2**30 / (8 * 4))
    assert table_rows >= row['vocab'] and table_rows % 1024 == 0
    assert row['model_state_gib'] == pytest.approx(
        (6 * 8 + 3) * table_rows * 4 / row['devices'] / 2**30, rel=1e-12)
  assert report['model_max_error'] == pytest.approx(max(r['model_error'] for r in rows))
  assert rows[0]['step_ms'] is not None and rows[-1]['step_ms'] is None  # --time_up_to
  assert report['settings']['devices'] == [1, 2] and report['settings']['dim'] == 8
  assert len(report['load_average_before']) == len(report['load_average_after']) == 3
  assert report['machine']['description'] and report['date']


def test_bench_tfds_says_what_it_needs(tmp_path):
  try:
    import tensorflow  # noqa: F401
  except ImportError:
    env = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu'}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'bench_tfds.py'),
                           '--rows=2000', f'--workdir={tmp_path}'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == 'bench_tfds.py needs TensorFlow: pip install tensorflow-cpu'
    return
  out = tmp_path / 'bench_tfds.json'
  script('bench_tfds', '--rows=2000', f'--json={out}', f'--workdir={tmp_path / "w"}')
  assert json.loads(out.read_text())['rows'] == 2000


def test_ml100k_rewritten_as_ml1m_reads_with_the_movielens_loader(tmp_path):
  src, out = tmp_path / 'ml-100k', tmp_path / 'as_1m'
  src.mkdir()
  (src / 'u.user').write_bytes(b'1|24|M|technician|85711\n2|53|F|other|94043\n'
                               b'3|17|M|student|32067\n')
  flags = ['0'] * 19
  action = flags.copy()
  action[1] = '1'
  drama_war = flags.copy()
  drama_war[8] = drama_war[17] = '1'
  (src / 'u.item').write_bytes(
      ('1|Toy Story (1995)|01-Jan-1995||http://x|' + '|'.join(action) + '\n'
       '2|Caf\xe9 Society (1995)|01-Jan-1995||http://y|' + '|'.join(drama_war) + '\n'
       ).encode('latin-1'))
  (src / 'u.data').write_bytes(b'1\t1\t5\t881250949\n2\t2\t3\t891717742\n3\t1\t1\t878887116\n'
                               b'1\t2\t4\t880606923\n')
  proc = script('ml100k_as_ml1m', f'--src={src}', f'--out={out}')
  assert 'wrote 4 ratings, 3 users and 2 movies' in proc.stdout
  assert (out / 'users.dat').read_bytes().splitlines() == [
      b'1::M::18::17::85711', b'2::F::50::0::94043', b'3::M::1::4::32067']
  assert (out / 'movies.dat').read_bytes().splitlines() == [
      b'1::Toy Story (1995)::Action', b'2::Caf\xe9 Society (1995)::Drama|War']
  assert (out / 'ratings.dat').read_bytes().splitlines()[0] == b'1::1::5::881250949'
  from configs import movielens_fm
  config = movielens_fm.get_config()
  config.data.dir = str(out)
  config.data.split = (0.34, 0.33, 0.33)
  data = load_dataset(config.data)
  assert len(data.train) + len(data.valid) + len(data.test) == 3  # the rating 3 is dropped


def test_bench_export_measures_every_form_of_every_run(tmp_path):
  from pep_jax import experiment
  workdir = str(tmp_path / 'run')
  summary_rows = experiment.run(demo.get_config('tiny'), workdir)
  out = tmp_path / 'bench_export.json'
  script('bench_export', f'--workdir={workdir}', '--parts=forms', '--forms=none,int8',
         '--repeats=1', f'--json={out}')
  with open(out) as f:
    report = json.load(f)
  rows = report['rows']
  assert {(r['run'], r['layout'], r['form']) for r in rows} == {
      (run, layout, form) for run, layouts in (('pep_b1472', ('bitmask', 'csr')),
                                               ('ue_d8', ('dense',)))
      for layout in layouts for form in ('none', 'int8')}
  by_run = {r['run']: r for r in summary_rows if r.get('run')}
  for row in rows:
    assert row['fraction_of_dense'] == pytest.approx(row['bytes'] / row['dense_table_bytes'])
    assert row['dense_table_bytes'] == 368 * 8 * 4
    assert row['auc_drop'] == pytest.approx(row['test_auc_reference'] - row['test_auc'])
    assert row['test_auc_reference'] == pytest.approx(by_run[row['run']]['test_auc'], abs=1e-9)
    if row['form'] == 'none':
      assert row['auc_drop'] == 0 and row['lookup_over_float'] == 1
      if row['layout'] in ('bitmask', 'dense'):  # the default layout: the summary's bytes
        assert row['bytes'] == by_run[row['run']]['bytes']
    else:
      assert row['bytes'] < by_run[row['run']]['bytes']


def test_device_check_on_the_cpu_writes_every_part(tmp_path):
  """The CPU path of the GPU/TPU check: one accelerator test, the speed rows at small sizes."""
  import jax
  proc = script('device_check', '--quick', '--tests-k=kink', f'--out={tmp_path}', '--install')
  assert 'nothing to install' in proc.stdout
  with open(tmp_path / 'device_check_cpu.json') as f:
    report = json.load(f)
  assert report['device'] == {'platform': 'cpu', 'kind': jax.devices()[0].device_kind,
                              'count': 1}
  assert report['jax'] == jax.__version__ and report['python'] == sys.version.split()[0]
  parts = report['parts']
  assert list(parts) == ['devices', 'tests', 'speed', 'aim'] and report['passed']
  assert report['notes'] == []
  assert parts['devices']['platform'] == 'cpu' and parts['devices']['pass']
  tests = parts['tests']
  assert tests['pass'] and tests['xla_flags'] == [] and tests['resume_bit_exact'] is None
  assert [(r['test'], r['outcome']) for r in tests['results']] == [
      ('tests.test_threshold::test_subgradient_at_the_kink_is_zero', 'passed')]
  speed = parts['speed']
  assert speed['pass'] and speed['shape'] == 'small' and speed['errors'] == []
  assert [(r['mode'], r['per_dispatch']) for r in speed['rows']] == [
      ('dense', 1), ('dense', 2), ('rows', 1), ('rows', 2)]
  for row in speed['rows']:
    assert (row['model'], row['method'], row['granularity']) == ('fm', 'pep',
                                                                'feature_dimension')
    assert row['samples_per_second'] > 0 and row['steps_timed'] == 3
    assert row['peak_bandwidth'] is None and row['bandwidth_fraction'] is None
    assert (row['bytes_per_step'] is not None) == (row['mode'] == 'dense')
  assert parts['aim']['pass'] is None
  best = max(r['samples_per_second'] for r in speed['rows'])
  assert parts['aim']['best_samples_per_second'] == best
  assert 'aim' in proc.stdout and 'passed in' in proc.stdout


def test_device_check_knows_the_peak_bandwidth_of_common_devices():
  import importlib
  check = importlib.import_module('experiments.device_check')
  assert check.peak_bandwidth('NVIDIA H100 80GB HBM3') == 3.35e12  # H100 SXM
  assert check.peak_bandwidth('NVIDIA H200') == 4.8e12
  assert check.peak_bandwidth('NVIDIA A100-SXM4-80GB') == 2.0e12
  assert check.peak_bandwidth('TPU v4') == 1.2e12
  assert check.peak_bandwidth('TPU v5 lite') == 0.82e12
  assert check.peak_bandwidth('NVIDIA H100 PCIe') is None
  assert check.peak_bandwidth('cpu') is None


def test_sseds_study_rows_against_each_variants_runs(tmp_path):
  out = tmp_path / 'out'
  script('sseds_study', f'--workdir={tmp_path}', '--datasets=compare', '--compare_variant=tiny',
         '--variants=paper,per_param_greedy', f'--out={out}')
  with open(out / 'sseds_study.json') as f:
    study = json.load(f)
  rows = study['rows']
  assert {r['variant'] for r in rows} == {'paper', 'per_param_greedy'}
  assert {r['method'] for r in rows if r['variant'] == 'paper'} == {'ue', 'pep', 'sseds'}
  assert {r['method'] for r in rows if r['variant'] != 'paper'} == {'ue', 'sseds'}
  for row in rows:
    workdir = str(tmp_path / 'compare' / row['variant'])
    (done,) = [r for r in summary(workdir) if r['method'] == row['method']
               and r['setting'] == row['setting']]
    assert row['test_auc'] == done['test_auc'] and row['params'] == done['params']
    if row['method'] == 'sseds':
      search = wd.search_result(workdir, 'sseds')
      assert (row['rank'], row['fill']) == (search['rank'], search['fill'])
  (ue,) = {r['test_auc'] for r in rows if r['method'] == 'ue'}  # one model in every variant
  facts = study['datasets']['compare']
  assert len(facts['field_dims']) == len(facts['intrinsic_dims']) == len(rows[0]['field_mean_size'])
  assert facts['features'] == sum(facts['field_dims'])
  assert all(r['best_epoch'] <= r['epochs'] <= facts['train_max_epochs'] for r in rows)
  table = (out / 'sseds_study.md').read_text()
  for row in rows:
    if row['method'] == 'sseds':
      fields = sum(w > 0 for w in row['field_mean_size'])
      assert f'({row["budget"]:,}) | {row["params"]:,} | {fields} | {row["test_auc"]:.4f} |' \
          in table
