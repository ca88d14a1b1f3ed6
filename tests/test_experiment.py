"""End to end on tiny synthetic data: outputs, resume after SIGKILL, compile-once, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import demo
from pep_jax.data import load_dataset, pipeline
from pep_jax import experiment
from recorded import assert_like_recorded, assert_tickets_like_recorded, tickets_of
from pep_jax.train.checkpoint import CheckpointError
from pep_jax.train.fit import NonFiniteLossError
from pep_jax.train.setup import build_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny():
  return demo.get_config('tiny')


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  rows = experiment.run(tiny(), workdir)
  return workdir, rows


def test_outputs_of_a_full_run(finished_run):
  workdir, rows = finished_run
  for name in ('summary.json', 'summary.md', 'frontier.png', 'metrics.jsonl', 'config.json',
               'prune/result.json', 'init/0'):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary == json.loads(json.dumps(rows))
  methods = [r['method'] for r in summary]
  assert 'pep' in methods and 'ue' in methods and methods[-1] == 'teacher'
  keys = {'method', 'budget', 'nonzeros', 'sparsity', 'valid_auc', 'test_auc', 'test_logloss',
          'test_auc_batch_mean'}
  for row in summary:
    assert keys <= set(row)
  for row in summary[:-1]:
    assert 0.5 < row['test_auc'] < 1 and row['test_logloss'] > 0
  assert_like_recorded(summary, 'demo_tiny')  # python tests/recorded/record.py
  pep = [r for r in summary if r['method'] == 'pep']
  for row in pep:  # a retrained ticket keeps exactly its mask's entries (or fewer)
    assert row['nonzeros'] <= row['ticket_nonzeros'] <= row['budget']
  ue = [r for r in summary if r['method'] == 'ue'][0]
  assert ue['nonzeros'] == 368 * 8 and ue['sparsity'] == 0.0


@pytest.mark.accelerator
def test_tickets_like_those_recorded_on_a_cpu(finished_run):
  """The step each budget is reached at, its non-zeros, per-field sizes and mask, against the
  run recorded by ``tests/recorded/record.py`` (on another platform within the tolerances of
  ``tests/recorded``)."""
  workdir, _ = finished_run
  assert_tickets_like_recorded(tickets_of(tiny(), workdir), 'demo_tiny')


def test_tickets_record_their_budget_and_v0_is_saved(finished_run):
  workdir, _ = finished_run
  with open(os.path.join(workdir, 'prune', 'result.json')) as f:
    result = json.load(f)
  assert result['budgets'] == [1472, 589]
  for budget in result['reached']:
    with open(os.path.join(workdir, 'tickets', f'b{budget}', 'ticket.json')) as f:
      ticket = json.load(f)
    assert ticket['nonzeros'] <= budget and ticket['step'] >= 1
    assert len(ticket['field_mean_size']) == 6


def test_rerun_is_a_no_op_with_the_same_summary(finished_run):
  workdir, rows = finished_run
  mtime = os.path.getmtime(os.path.join(workdir, 'prune', 'result.json'))
  again = experiment.run(tiny(), workdir)
  assert json.dumps(again) == json.dumps(rows)
  assert os.path.getmtime(os.path.join(workdir, 'prune', 'result.json')) == mtime


def test_evaluate_stage_rescores_best_checkpoints(finished_run):
  workdir, rows = finished_run
  config = tiny()
  config.stage = 'evaluate'
  again = experiment.run(config, workdir)
  for a, b in zip(rows, again):
    assert a['test_auc'] == pytest.approx(b['test_auc'], abs=1e-9)


def test_random_reinit_ablation_sits_beside_the_rewound_tickets(finished_run, tmp_path):
  import shutil
  workdir = str(tmp_path / 'copy')
  shutil.copytree(finished_run[0], workdir)
  config = tiny()
  config.stage = 'retrain'
  config.retrain.init = 'random'
  rows = experiment.run(config, workdir)
  rewound = [r for r in rows if r['method'] == 'pep']
  random = [r for r in rows if r['method'] == 'pep_random']
  assert len(random) == len(rewound) > 0
  assert [r['budget'] for r in random] == [r['budget'] for r in rewound]
  assert all(a['test_auc'] != b['test_auc'] for a, b in zip(random, rewound))
  assert rewound == [r for r in finished_run[1] if r['method'] == 'pep']


def test_train_step_compiles_once_including_the_last_partial_batch():
  config = tiny()
  data = load_dataset(config.data)
  stage = build_stage(config, data, 'pep')
  state = stage.initial_state()
  assert len(data.train) % config.train.batch_size != 0  # there is a partial batch
  for batch in pipeline.batches(data.train, config.train.batch_size, shuffle=True, seed=0):
    state, _ = stage.train_step(state, batch, {})
  assert stage.train_step._cache_size() == 1


def test_another_config_in_the_same_workdir_is_refused(finished_run):
  workdir, _ = finished_run
  config = tiny()
  config.embedding.dim = 4
  with pytest.raises(ValueError, match='embedding.dim'):
    experiment.run(config, workdir)


def test_budget_larger_than_the_table_names_the_key(tmp_path):
  config = tiny()
  config.prune.budgets = (10_000_000,)
  with pytest.raises(ValueError, match='prune.budgets'):
    experiment.run(config, str(tmp_path))


def test_nan_loss_stops_with_a_clear_error_and_keeps_checkpoints(tmp_path):
  config = tiny()
  config.stage = 'prune'
  config.optimizer.learning_rate = 1e38  # parameters overflow after the first update
  config.optimizer.clip_norm = 0.0
  with pytest.raises(NonFiniteLossError, match='step'):
    experiment.run(config, str(tmp_path))
  assert os.path.exists(tmp_path / 'init' / '0')
  assert not os.path.exists(tmp_path / 'prune' / 'result.json')


def test_corrupted_checkpoint_gives_a_clear_error_and_is_left_alone(tmp_path):
  config = tiny()
  config.stage = 'prune'
  config.prune.max_epochs = 1
  workdir = str(tmp_path)
  experiment.run(config, workdir)
  os.remove(os.path.join(workdir, 'prune', 'result.json'))  # pretend it was cut short
  ckpt_root = os.path.join(workdir, 'prune', 'checkpoints')
  latest = max(int(s) for s in os.listdir(ckpt_root) if s.isdigit())
  state_dir = os.path.join(ckpt_root, str(latest), 'state')
  damaged = []
  for dirpath, _, files in os.walk(state_dir):
    for name in files:
      if 'ocdbt' in dirpath or name.startswith('_METADATA'):
        path = os.path.join(dirpath, name)
        with open(path, 'r+b') as f:
          f.truncate(max(0, os.path.getsize(path) // 3))
        damaged.append(path)
  assert damaged
  before = sorted(os.listdir(ckpt_root))
  with pytest.raises(CheckpointError, match=str(latest)):
    experiment.run(config, workdir)
  assert sorted(os.listdir(ckpt_root)) == before


def test_missing_initial_state_for_retraining_names_it(finished_run, tmp_path):
  workdir, _ = finished_run
  import shutil
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  shutil.rmtree(os.path.join(copy, 'init'))
  shutil.rmtree(os.path.join(copy, 'retrain'))
  config = tiny()
  config.stage = 'retrain'
  with pytest.raises(FileNotFoundError, match='init'):
    experiment.run(config, copy)


def test_missing_real_data_names_the_files(tmp_path):
  config = tiny()
  config.data.name = 'criteo'
  config.data.dir = str(tmp_path / 'no_such_folder')
  with pytest.raises(Exception, match='no_such_folder'):
    experiment.run(config, str(tmp_path / 'work'))


def cli(*args, **kwargs):
  env = dict(os.environ, PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu')
  return subprocess.Popen([sys.executable, '-m', 'pep_jax.main', *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_cli_rejects_an_unknown_config_key(tmp_path):
  proc = cli('--config=configs/demo.py:tiny', f'--workdir={tmp_path}',
             '--config.train.batchsize=64')
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode != 0
  assert 'batchsize' in out


def test_cli_rejects_a_bad_stage(tmp_path):
  proc = cli('--config=configs/demo.py:tiny', f'--workdir={tmp_path}', '--config.stage=trian')
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode != 0 and 'error: config key stage' in out
  assert 'Traceback' not in out


def without_timings(rows):
  """Summary rows less their wall-clock seconds, which differ between runs."""
  return [{k: v for k, v in r.items() if 'seconds' not in k} for r in rows]


def read_tree(directory):
  """Every array of every finished checkpoint under ``directory``, by path."""
  arrays = {}
  for dirpath, dirnames, _ in os.walk(directory):
    if 'state' in dirnames and os.path.exists(os.path.join(dirpath, 'commit_success.txt')):
      tree = ocp.StandardCheckpointer().restore(os.path.join(dirpath, 'state'))
      flat = ocp.tree.to_flat_dict(tree, sep='/')
      rel = os.path.relpath(dirpath, directory)
      arrays.update({f'{rel}:{k}': np.asarray(v) for k, v in flat.items()})
  return arrays


def wait_for(predicate, proc, timeout=120):
  start = time.time()
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(f'finished before it could be killed:\n{proc.stdout.read()}')
    if time.time() - start > timeout:
      raise AssertionError('timed out')
    time.sleep(0.02)


def has_step(directory, minimum=1):
  return os.path.isdir(directory) and any(
      s.isdigit() and int(s) >= minimum for s in os.listdir(directory))


def test_killed_mid_prune_and_mid_retrain_resumes_to_the_same_result(tmp_path, finished_run):
  reference, _ = finished_run
  workdir = str(tmp_path / 'killed')
  args = ('--config=configs/demo.py:tiny', f'--workdir={workdir}')

  proc = cli(*args)
  wait_for(lambda: has_step(os.path.join(workdir, 'prune', 'checkpoints'), 20), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(workdir, 'prune', 'result.json'))

  proc = cli(*args)
  wait_for(lambda: has_step(os.path.join(workdir, 'retrain', 'pep_b1472', 'latest'), 20), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))

  proc = cli(*args)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out

  with open(os.path.join(workdir, 'summary.json')) as f:
    resumed = without_timings(json.load(f))
  with open(os.path.join(reference, 'summary.json')) as f:
    uninterrupted = without_timings(json.load(f))
  assert resumed == uninterrupted
  for part in ('tickets', 'retrain'):
    a = read_tree(os.path.join(reference, part))
    b = read_tree(os.path.join(workdir, part))
    best_a = {k: v for k, v in a.items() if '/best/' in k or part == 'tickets'}
    best_b = {k: v for k, v in b.items() if '/best/' in k or part == 'tickets'}
    assert best_a.keys() == best_b.keys() and best_a
    for key in best_a:
      np.testing.assert_array_equal(best_a[key], best_b[key], err_msg=key)


def test_no_budget_reached_skips_retraining_and_still_writes_the_summary(tmp_path, capsys):
  config = tiny()
  config.prune.budgets = (0.01,)
  config.prune.max_epochs = 1
  rows = experiment.run(config, str(tmp_path))
  assert 'no budget of [29] was reached' in capsys.readouterr().out
  assert [r['method'] for r in rows] == ['ue', 'teacher']
  assert os.path.exists(tmp_path / 'summary.json') and os.path.exists(tmp_path / 'frontier.png')


def test_runs_in_worker_processes_give_the_sequential_summary(finished_run, tmp_path):
  reference, _ = finished_run
  config = tiny()
  config.train.parallel_runs = 2
  rows = experiment.run(config, str(tmp_path))
  with open(os.path.join(reference, 'summary.json')) as f:
    assert without_timings(rows) == without_timings(json.load(f))
