"""The analysis functions against brute-force references, and one tiny run through them."""

import collections
import json
import os

import numpy as np
import pytest

from configs import demo
from pep_jax import analysis
from pep_jax.data import load_dataset
from pep_jax.workdir import find_tickets


def test_feature_counts_match_a_counter():
  rng = np.random.default_rng(0)
  field_dims = [3, 5, 2]
  ids = np.stack([rng.integers(0, d, 200) for d in field_dims], 1)
  counts = analysis.feature_counts(ids, field_dims)
  offsets = [0, 3, 8]
  expected = collections.Counter(offsets[f] + int(ids[r, f])
                                 for r in range(len(ids)) for f in range(3))
  assert counts.tolist() == [expected.get(i, 0) for i in range(10)]


def test_frequency_groups_are_equal_sized_and_ordered_by_count():
  rng = np.random.default_rng(1)
  counts = rng.integers(0, 50, 103)
  groups = analysis.frequency_groups(counts, 4)
  sizes = np.bincount(groups, minlength=4)
  assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 103
  for g in range(3):  # every count of a group is <= every count of the next
    assert counts[groups == g].max() <= counts[groups == g + 1].min()


def test_group_sparsity_and_field_sizes_match_loops():
  rng = np.random.default_rng(2)
  dim, field_dims = 6, [4, 7, 9]
  mask = rng.random((20, dim)) < 0.3
  sizes = mask.sum(1)
  groups = rng.integers(0, 3, 20)
  got = analysis.group_sparsity(sizes, groups, 3, dim)
  for g in range(3):
    assert got[g] == pytest.approx(1 - mask[groups == g].mean())
  fields = analysis.field_mean_sizes(sizes, field_dims)
  assert fields.tolist() == pytest.approx([sizes[:4].mean(), sizes[4:11].mean(),
                                           sizes[11:].mean()])


def test_interaction_matrix_matches_a_loop_over_rows():
  rng = np.random.default_rng(3)
  field_dims = [3, 4, 5]
  table = rng.normal(size=(12, 4)).astype(np.float32)
  table[rng.random(table.shape) < 0.4] = 0
  ids = np.stack([rng.integers(0, d, 37) for d in field_dims], 1)
  got = analysis.interaction_matrix(table, ids, field_dims, chunk=8)
  offsets = [0, 3, 7]
  expected = np.zeros((3, 3))
  for row in ids:
    for i in range(3):
      for j in range(3):
        expected[i, j] += abs(float(np.dot(table[offsets[i] + row[i]].astype(np.float64),
                                           table[offsets[j] + row[j]].astype(np.float64))))
  np.testing.assert_allclose(got, expected / len(ids), rtol=1e-12)


def test_read_metrics_keeps_the_last_value_of_a_replayed_step(tmp_path):
  rows = [{'stage': 'prune', 'step': 10, 'nonzeros': 9}, {'stage': 'prune', 'step': 20, 'loss': 1},
          {'stage': 'retrain b5', 'step': 10, 'nonzeros': 1},
          {'stage': 'prune', 'step': 20, 'nonzeros': 7},
          {'stage': 'prune', 'step': 10, 'nonzeros': 8}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  steps, values = analysis.prune_curve(str(tmp_path))
  assert steps.tolist() == [10, 20] and values.tolist() == [8, 7]
  assert analysis.first_step_at_or_under(steps, values, 7.5) == 20
  assert analysis.first_step_at_or_under(steps, values, 5) is None
  (tmp_path / 'metrics.jsonl').write_text('{"stage": "prune"}\nnot json\n')
  with pytest.raises(ValueError, match='line 2'):
    analysis.prune_curve(str(tmp_path))


def test_variant_refuses_an_unknown_key():
  config = demo.get_config('tiny')
  assert analysis.variant(config, **{'embedding.dim': 3}).embedding.dim == 3
  assert config.embedding.dim == 8
  with pytest.raises(KeyError, match='embedding.dimm'):
    analysis.variant(config, **{'embedding.dimm': 3})


def test_tables_are_written_as_markdown_and_csv(tmp_path):
  rows = [{'a': 1, 'b': 0.5}, {'a': None, 'b': 1234.5}]
  table = analysis.write_tables(rows, ['a', 'b'], str(tmp_path), 't', 'Title', 'a note')
  assert table.splitlines()[2] == '| 1 | 0.5000 |'
  assert (tmp_path / 't.csv').read_text().splitlines() == ['a,b', '1,0.5', ',1234.5']
  assert 'a note' in (tmp_path / 't.md').read_text()


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('analysis'))
  config = demo.get_config('tiny')
  result = analysis.run_variant(config, workdir, uniform=True)
  return config, load_dataset(config.data), workdir, result


def test_a_pruned_ticket_is_scored_from_the_state_saved_with_it(tiny_run):
  config, data, workdir, result = tiny_run
  assert result['prune']['reached'] and result['rows']
  for ticket in find_tickets(workdir):
    scored = analysis.score_pruned_ticket(config, data, workdir, ticket)
    assert scored['nonzeros'] == ticket['nonzeros']  # the very state the mask came from
    assert 0.5 < scored['test_auc'] < 1


def test_best_tables_of_a_ticket_and_of_the_uniform_model(tiny_run):
  config, data, workdir, result = tiny_run
  budget = result['prune']['reached'][0]
  pep = analysis.best_effective_table(config, data, workdir, f'pep_b{budget}')
  row = [r for r in result['rows'] if r['method'] == 'pep' and r['budget'] == budget][0]
  assert pep.shape == (data.num_features, config.embedding.dim)
  assert int(np.count_nonzero(pep)) == row['nonzeros']
  ue = analysis.best_effective_table(config, data, workdir, 'ue_d8')
  assert np.count_nonzero(ue) == ue.size
  matrix = analysis.interaction_matrix(ue, data.test.ids, data.field_dims)
  np.testing.assert_allclose(matrix, matrix.T, rtol=1e-12)
  with pytest.raises(FileNotFoundError, match='ue_d4'):
    analysis.best_effective_table(config, data, workdir, 'ue_d4')


def test_size_snapshots_follow_the_prune_stage(tiny_run):
  config, data, workdir, result = tiny_run
  steps, sizes = analysis.size_snapshots(config, data, every_steps=25)
  assert steps[0] == 0 and 0 <= sizes.min() and sizes.max() <= config.embedding.dim
  assert np.all(np.diff(steps) > 0) and sizes.shape == (len(steps), data.num_features)
  # The same batches as the prune stage: the same count at every ticket and at the end.
  for ticket in find_tickets(workdir):
    first = np.flatnonzero(sizes.sum(1) <= ticket['budget'])[0]
    assert steps[first] - 25 < ticket['step'] <= steps[first]
    if steps[first] == ticket['step']:
      assert int(sizes[first].sum()) == ticket['nonzeros']
  assert steps[-1] == result['prune']['steps']
  assert int(sizes[-1].sum()) == result['prune']['final_nonzeros']


def test_seconds_per_epoch_times_the_steps_it_says(tiny_run):
  config, data, _, _ = tiny_run
  stage = analysis.build_stage(config, data, 'pep')
  timing = analysis.seconds_per_epoch(stage, stage.initial_state(), {}, data.train,
                                      config.train.batch_size, max_steps=3)
  per_epoch = -(-len(data.train) // config.train.batch_size)
  assert (timing['steps_timed'], timing['steps_per_epoch']) == (3, per_epoch)
  assert timing['seconds_per_epoch'] == pytest.approx(
      timing['ms_per_step'] / 1e3 * per_epoch)
  assert stage.train_step._cache_size() == 1  # compiled once, before the timed steps


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name, *args):
  """Runs ``experiments/<name>.py`` with ``args``; returns its output (fails on a non-zero exit)."""
  import subprocess
  import sys
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', f'{name}.py'), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  return proc.stdout


def test_interactions_script_reads_a_finished_run(tiny_run, tmp_path):
  _, data, workdir, result = tiny_run
  script('interactions', '--config=configs/demo.py:tiny', f'--workdir={tmp_path}',
         f'--run_dir={workdir}', '--rows=500', f'--results={tmp_path}/results.json')
  assert (tmp_path / 'interactions.png').exists()
  lines = (tmp_path / 'interactions.csv').read_text().splitlines()
  assert lines[0].startswith('model,run,nonzeros')
  assert len(lines) == 2 + len(result['prune']['reached'])  # header, uniform, every ticket
  expected = analysis.interaction_matrix(
      analysis.best_effective_table(tiny_run[0], data, workdir, 'ue_d8'), data.test.ids[:500],
      data.field_dims)
  np.testing.assert_allclose(np.load(tmp_path / 'interactions_ue_d8.npy'), expected)
  with open(tmp_path / 'results.json') as f:
    results = json.load(f)
  uniform = results['rows'][0]
  off = ~np.eye(data.num_fields, dtype=bool)
  assert uniform['mean_interaction'] == pytest.approx(expected[off].mean(), rel=1e-6)
  assert uniform['informative_correlation'] == pytest.approx(1.0)
  assert results['averaged_over_rows'] == 500


def test_runtime_script_times_every_method_of_every_model(tmp_path):
  script('runtime', '--config=configs/demo.py:tiny', f'--workdir={tmp_path}', '--models=fm,deepfm',
         '--max_steps=2')
  with open(tmp_path / 'runtime.json') as f:
    report = json.load(f)
  assert report['machine']['cpus'] == os.cpu_count()
  assert [r['model'] for r in report['rows']] == ['fm', 'deepfm']
  for row in report['rows']:
    assert row['steps_timed'] == 2 and row['base_s_per_epoch'] > 0 and row['pep_s_per_epoch'] > 0
    assert row['dartsemb_s_per_epoch'] > 0
