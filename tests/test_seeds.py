"""Several seeds: one experiment per seed on the same test rows, comparison.json's means and
intervals against the per-seed rows, significance.json against the stored predictions, a kill
inside the second seed, and one seed exactly as before."""

import json
import os
import shutil
import signal

import numpy as np
import pytest
from scipy import stats

from configs import compare
from pep_jax import experiment
from pep_jax.metrics import paired_bootstrap_auc
from test_experiment import cli, has_step, read_tree, wait_for, without_timings

SEEDS = (42, 43)
METHODS = ('ue', 'pep', 'sseds')  # PEP's pruning and SSEDS's pre-training are searches


def config(seeds=SEEDS):
  c = compare.get_config('tiny')
  c.methods = METHODS
  c.seeds = seeds
  c.compare.bootstrap_resamples = 200
  return c


def read(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return json.load(f)


def without_seconds(rows):
  """comparison.json's rows less their wall-clock means."""
  return [{k: v for k, v in r.items() if 'seconds' not in k} for r in rows]


@pytest.fixture(scope='module')
def several(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('seeds'))
  return workdir, experiment.run(config(), workdir)


def test_each_seed_is_a_whole_experiment_on_the_same_test_rows(several):
  workdir, rows = several
  assert sorted(os.listdir(os.path.join(workdir, 'seeds'))) == ['42', '43']
  assert not os.path.exists(os.path.join(workdir, 'retrain'))
  configs = {s: read(os.path.join(workdir, 'seeds', str(s)), 'config.json') for s in SEEDS}
  for seed, flat in configs.items():  # everything but the seed is the experiment's config
    assert flat['seed'] == seed and flat['seeds'] == []
  top = read(workdir, 'config.json')
  assert {k for k in top if configs[42].get(k) != top[k]} == {'seeds'}
  assert {k for k in configs[42] if configs[42][k] != configs[43][k]} == {'seed'}
  # The searches ran per seed: PEP's V0 and its tickets differ.
  v0 = [read_tree(os.path.join(workdir, 'seeds', str(s), 'init')) for s in SEEDS]
  assert v0[0].keys() == v0[1].keys()
  assert any(not np.array_equal(v0[0][k], v0[1][k]) for k in v0[0])
  tickets = [read(os.path.join(workdir, 'seeds', str(s), 'tickets', 'b516'), 'ticket.json')
             for s in SEEDS]
  assert tickets[0]['field_mean_size'] != tickets[1]['field_mean_size']
  # summary.json: every seed's rows with their seed, then the teacher.
  assert read(workdir, 'summary.json') == json.loads(json.dumps(rows))
  for seed in SEEDS:
    own = read(os.path.join(workdir, 'seeds', str(seed)), 'summary.json')
    assert [{'seed': seed, **r} for r in own[:-1]] == [r for r in rows if r['seed'] == seed]
  assert rows[-1]['method'] == 'teacher' and rows[-1]['seed'] is None


def test_comparison_rows_are_the_means_and_paired_differences_of_the_seeds(several):
  workdir, rows = several
  comparison = read(workdir, 'comparison.json')
  models = [r for r in rows if r['method'] != 'teacher']
  assert len(comparison) == len({(r['method'], r['setting']) for r in models})
  ue = {r['seed']: r for r in models if r['run'] == 'ue_d8'}
  t = stats.t.ppf(0.975, len(SEEDS) - 1)
  for row in comparison:
    mine = [r for r in models if (r['method'], r['setting']) == (row['method'], row['setting'])]
    assert row['seeds'] == [r['seed'] for r in mine] == list(SEEDS)
    aucs = np.array([r['test_auc'] for r in mine])
    assert row['test_auc_per_seed'] == list(aucs)
    assert row['test_auc_mean'] == pytest.approx(aucs.mean(), abs=1e-15)
    assert row['test_auc_std'] == pytest.approx(aucs.std(ddof=1), rel=1e-12)
    half = t * aucs.std(ddof=1) / np.sqrt(len(aucs))
    np.testing.assert_allclose(row['test_auc_ci95'], [aucs.mean() - half, aucs.mean() + half],
                               rtol=1e-12)
    assert row['test_logloss_mean'] == pytest.approx(np.mean([r['test_logloss'] for r in mine]))
    assert row['params'] == pytest.approx(np.mean([r['params'] for r in mine]))
    assert row['bytes'] == pytest.approx(np.mean([r['bytes'] for r in mine]))
    assert row['params_per_seed'] == [r['params'] for r in mine]
    deltas = np.array([r['test_auc'] - ue[r['seed']]['test_auc'] for r in mine])
    assert row['delta_auc_vs_ue_mean'] == pytest.approx(deltas.mean(), abs=1e-15)
    half = t * deltas.std(ddof=1) / np.sqrt(len(deltas))
    np.testing.assert_allclose(row['delta_auc_vs_ue_ci95'],
                               [deltas.mean() - half, deltas.mean() + half], rtol=1e-9,
                               atol=1e-15)
  assert [r['delta_auc_vs_ue_mean'] for r in comparison if r['run'] == 'ue_d8'] == [0.0]


def test_headline_comparisons_bootstrap_the_stored_test_predictions(several):
  workdir, _ = several
  document = read(workdir, 'significance.json')
  comparison = {r['run']: r for r in read(workdir, 'comparison.json')}
  assert document['resamples'] == 200 and document['comparisons']
  kinds = {(c['a']['run'], c['b']['run']): c['kind'] for c in document['comparisons']}
  assert kinds[('pep_b516', 'ue_d8')] == 'vs_uniform'
  assert kinds[('pep_b516', 'sseds_b516')] == 'vs_focus'  # same band: matched budget
  from pep_jax.data import load_dataset
  labels = np.asarray(load_dataset(config().data).test.labels)
  with open(os.path.join(workdir, 'summary.md')) as f:
    summary = f.read()
  for c in document['comparisons']:
    probs = {x: np.stack([np.load(os.path.join(workdir, 'seeds', str(s), 'retrain', c[x]['run'],
                                               'test_probs.npy')) for s in c['seeds']])
             for x in ('a', 'b')}
    assert probs['a'].dtype == np.float32 and probs['a'].shape == (len(SEEDS), len(labels))
    expected = paired_bootstrap_auc(labels, probs['a'], probs['b'], resamples=200, seed=0)
    np.testing.assert_allclose(c['bootstrap_ci95'], expected['ci'], atol=1e-12)
    a, b = comparison[c['a']['run']], comparison[c['b']['run']]
    per_seed = np.subtract(a['test_auc_per_seed'], b['test_auc_per_seed'])
    assert c['difference'] == pytest.approx(per_seed.mean(), abs=1e-15)
    assert c['difference'] == pytest.approx(expected['difference'], abs=1e-4)  # float32 probs
    intervals = [c['bootstrap_ci95'], c['seed_ci95']]
    assert c['separable'] == all(lo > 0 or hi < 0 for lo, hi in intervals)
    sentence = next(line for line in summary.splitlines()
                    if line.startswith(f'- {a["method"].upper()} {a["setting"]} vs '
                                       f'{b["method"].upper()} {b["setting"]} '))
    assert sentence.endswith(': separable.' if c['separable'] else ': not separable.')


def test_killed_inside_the_second_seed_resumes_to_the_same_comparison(several, tmp_path):
  reference, _ = several
  workdir = str(tmp_path / 'killed')
  args = ('--config=configs/compare.py:tiny', f'--workdir={workdir}',
          f'--config.seeds={SEEDS}', f'--config.methods={METHODS}',
          '--config.compare.bootstrap_resamples=200')
  second = os.path.join(workdir, 'seeds', str(SEEDS[1]))
  finished = {}
  for stop in ('prune/checkpoints', 'retrain/sseds_b516/latest'):
    proc = cli(*args)
    wait_for(lambda: has_step(os.path.join(second, stop), 20), proc, timeout=300)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = os.path.join(workdir, 'seeds', str(SEEDS[0]), 'retrain')
    finished = finished or {r: os.path.getmtime(os.path.join(first, r, 'result.json'))
                            for r in os.listdir(first)}
  assert not os.path.exists(os.path.join(workdir, 'comparison.json'))
  proc = cli(*args)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out
  first = os.path.join(workdir, 'seeds', str(SEEDS[0]), 'retrain')
  assert finished == {r: os.path.getmtime(os.path.join(first, r, 'result.json'))
                      for r in os.listdir(first)}  # the finished seed was read back
  assert without_seconds(read(workdir, 'comparison.json')) == without_seconds(
      read(reference, 'comparison.json'))
  assert read(workdir, 'significance.json') == read(reference, 'significance.json')
  assert without_timings(read(workdir, 'summary.json')) == without_timings(
      read(reference, 'summary.json'))


def test_one_seed_is_the_experiment_as_before_and_a_seed_of_several(several, tmp_path):
  reference, _ = several
  workdir = str(tmp_path / 'one')
  rows = experiment.run(config(seeds=(43,)), workdir)  # the same as seed=43, seeds=()
  assert not os.path.exists(os.path.join(workdir, 'seeds'))
  assert os.path.isdir(os.path.join(workdir, 'retrain', 'pep_b516'))
  summary = read(workdir, 'summary.json')
  assert summary == json.loads(json.dumps(rows)) and all('seed' not in r for r in summary)
  assert read(workdir, 'config.json') == read(os.path.join(reference, 'seeds', '43'),
                                              'config.json')
  assert without_timings(summary) == without_timings(
      read(os.path.join(reference, 'seeds', '43'), 'summary.json'))
  comparison = read(workdir, 'comparison.json')
  for row in comparison:  # one seed: no spread, so no interval
    assert row['seeds'] == [43] and row['test_auc_std'] is None
    assert row['test_auc_ci95'] is None and row['delta_auc_vs_ue_ci95'] is None
  document = read(workdir, 'significance.json')
  assert all(c['seed_ci95'] is None for c in document['comparisons'])


def test_a_work_directory_from_before_gets_its_test_predictions(several, tmp_path):
  """A one-seed work directory whose config.json predates seeds and runs without predictions
  resumes as it is; the predictions are computed from the best checkpoints."""
  source = os.path.join(several[0], 'seeds', '42')
  workdir = str(tmp_path / 'old')
  shutil.copytree(source, workdir)
  flat = read(workdir, 'config.json')
  for key in ('seeds', 'compare.bootstrap_resamples', 'compare.bootstrap_seed'):
    del flat[key]
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(flat, f)
  kept = {}
  for run in os.listdir(os.path.join(workdir, 'retrain')):
    path = os.path.join(workdir, 'retrain', run, 'test_probs.npy')
    kept[run] = np.load(path)
    os.remove(path)
  c = config(seeds=())
  rows = experiment.run(c, workdir)
  assert without_timings(rows) == without_timings(read(source, 'summary.json'))
  for run, probs in kept.items():
    np.testing.assert_array_equal(
        np.load(os.path.join(workdir, 'retrain', run, 'test_probs.npy')), probs, err_msg=run)


@pytest.mark.parametrize('seeds, message', [
    ((1, 1), 'each seed once'),
    ((1, -2), 'non-negative integers'),
    ((1.5, 2), 'non-negative integers'),
])
def test_bad_seeds_name_the_key(tmp_path, seeds, message):
  c = config(seeds=seeds)
  with pytest.raises(ValueError, match=f'config key seeds: .*{message}'):
    experiment.run(c, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_one_seed_and_several_never_share_a_work_directory(several, tmp_path):
  with pytest.raises(ValueError, match='config key seeds: .* holds an experiment with seeds'):
    experiment.run(config(seeds=()), several[0])
  one = str(tmp_path / 'one')
  os.makedirs(one)
  flat = read(os.path.join(several[0], 'seeds', '42'), 'config.json')
  with open(os.path.join(one, 'config.json'), 'w') as f:
    json.dump(flat, f)
  with pytest.raises(ValueError, match='config key seeds: .* holds the experiment of one seed'):
    experiment.run(config(), one)
