"""The training loop's two uses: the search's calls and stop, retraining's epochs and resume.

A search hands every compiled call to its callback and stops where it says; retraining validates
at every epoch's end, stops early, and a run killed inside an epoch resumes to the uninterrupted
run's result, checkpoints and logs.
"""

import json
import os

import jax
import numpy as np
import pytest

from configs import demo
from pep_jax.data import load_dataset, pipeline
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.fit import train_steps, train_to_best
from pep_jax.train.logging import MetricWriter
from pep_jax.train.setup import build_stage

K = 7  # steps per compiled call


class Killed(Exception):
  """Stands for the process being killed."""


class KillingWriter(MetricWriter):
  """A metric writer that dies at its first row of step ``at`` or later."""

  def __init__(self, workdir: str, at: int | None = None):
    super().__init__(workdir)
    self.at = at

  def write(self, stage: str, step: int, **scalars) -> None:
    if self.at is not None and step >= self.at:
      raise Killed(step)
    super().write(stage, step, **scalars)


def tiny(updates: str = 'dense'):
  config = demo.get_config('tiny')
  config.train.steps_per_dispatch = K
  config.optimizer.updates = updates
  config.optimizer.rows_sync_steps = 30  # rows mode: calls also stop at multiples of 30
  return config


def logged(workdir: str) -> list[dict]:
  """The rows of ``metrics.jsonl`` less their wall-clock fields."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in ('time', 'samples_per_second')} for r in rows]


def leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_the_search_hands_every_call_to_on_step_and_stops_where_it_says(tmp_path):
  config = tiny()
  data = load_dataset(config.data)
  stage = build_stage(config, data, 'pep')
  per_epoch = pipeline.num_batches(len(data.train), config.train.batch_size)
  budget = int(0.6 * stage.table_entries)
  stop_at = per_epoch + 2 * K  # a block end inside the second epoch
  calls, cut = [], {}

  def on_step(step, epoch_end, state, metrics):
    assert int(state.step) == step
    nonzeros = int(metrics['nonzeros'])
    calls.append((step, epoch_end))
    if 'step' not in cut and nonzeros <= budget:
      cut.update(step=step)
    elif 'step' not in cut:
      assert nonzeros > budget
    return step == stop_at

  def search(writer):
    return train_steps(config, data, stage, stage.initial_state(), {}, str(tmp_path / 'ckpt'),
                       'prune', writer, max_epochs=2, checkpoint_every=10, on_step=on_step,
                       halt_at=lambda: -1 if 'step' in cut else budget,
                       log_keys=('nonzeros',))

  writer = MetricWriter(str(tmp_path))
  state, progress = search(writer)
  assert int(state.step) == progress['steps'] == stop_at
  assert Checkpointer(str(tmp_path / 'ckpt')).latest_step() == stop_at
  assert 0 < cut['step'] % K, 'the budget should be reached inside a block'
  blocks = [e * per_epoch + min(b + K, per_epoch) for e in range(2)
            for b in range(0, per_epoch, K)]
  expected = sorted({s for s in blocks if s <= stop_at} | {cut['step']})
  assert calls == [(s, s == per_epoch) for s in expected]
  # Every 10th step and the epoch's last one are logged, with the budget's metric.
  steps = sorted({s for s in range(10, stop_at + 1, 10)} | {per_epoch})
  assert [(r['step'], sorted(r)) for r in logged(str(tmp_path))] == [
      (s, ['loss', 'nonzeros', 'stage', 'step']) for s in steps]

  calls.clear()
  state, progress = search(writer)  # resumes after stop_at and runs to the end
  writer.close()
  assert int(state.step) == progress['steps'] == 2 * per_epoch
  assert calls == [(s, s == 2 * per_epoch) for s in blocks if s > stop_at]


def retrain(config, data, stage, workdir: str, kill_at: int | None = None) -> dict:
  writer = KillingWriter(workdir, kill_at)
  try:
    return train_to_best(config, data, stage, stage.initial_state(), {},
                         os.path.join(workdir, 'run'), 'retrain', writer)
  finally:
    writer.close()


def without_seconds(result: dict) -> dict:
  """A result or progress document less its wall-clock seconds, its state and its test
  predictions."""
  return {k: v for k, v in result.items()
          if 'seconds' not in k and k not in ('best_state', 'test_probs')}


@pytest.mark.accelerator
@pytest.mark.parametrize('updates', ['dense', 'rows'])
def test_retraining_killed_inside_an_epoch_resumes_bit_exactly(tmp_path, updates):
  config = tiny(updates)
  data = load_dataset(config.data)
  stage = build_stage(config, data, 'plain')
  per_epoch = pipeline.num_batches(len(data.train), config.train.batch_size)
  whole = str(tmp_path / 'whole')
  uninterrupted = retrain(config, data, stage, whole)

  killed = str(tmp_path / 'killed')
  with pytest.raises(Killed):
    retrain(config, data, stage, killed, kill_at=per_epoch + 5 * K)
  saved = Checkpointer(os.path.join(killed, 'run', 'latest')).steps()
  assert saved[-1] % per_epoch, 'the kill should leave a checkpoint inside an epoch'
  if updates == 'rows':  # calls also stop at the rows' sync points, inside a block
    assert (saved[-1] % per_epoch) % K, 'the kill should leave a checkpoint inside a block'
  resumed = retrain(config, data, stage, killed)

  assert without_seconds(resumed) == without_seconds(uninterrupted)
  np.testing.assert_array_equal(resumed['test_probs'], uninterrupted['test_probs'])
  for a, b in zip(leaves(uninterrupted['best_state']), leaves(resumed['best_state'])):
    np.testing.assert_array_equal(a, b)
  for folder in ('latest', 'best'):
    ckpt_a = Checkpointer(os.path.join(whole, 'run', folder))
    ckpt_b = Checkpointer(os.path.join(killed, 'run', folder))
    assert ckpt_a.steps() == ckpt_b.steps()
    for step in ckpt_a.steps():
      state_a, progress_a = ckpt_a.restore(step, stage.abstract_state())
      state_b, progress_b = ckpt_b.restore(step, stage.abstract_state())
      assert without_seconds(progress_a) == without_seconds(progress_b)
      for a, b in zip(leaves(state_a), leaves(state_b)):
        np.testing.assert_array_equal(a, b)
  # Loss every 10th step (not at an epoch's end), validation at every epoch's end; nothing twice.
  rows = logged(killed)
  assert rows == logged(whole)
  epochs = uninterrupted['epochs']
  assert [r['step'] for r in rows if 'valid_auc' in r] == [
      per_epoch * (e + 1) for e in range(epochs)]
  assert [r['step'] for r in rows if 'loss' in r] == list(range(10, epochs * per_epoch + 1, 10))


def test_retraining_stopped_early_stays_stopped(tmp_path):
  config = tiny()
  config.train.patience, config.train.max_epochs = 1, 12
  config.optimizer.learning_rate = 0.05  # over-fits within a few epochs
  data = load_dataset(config.data)
  stage = build_stage(config, data, 'plain')
  first = retrain(config, data, stage, str(tmp_path))
  assert first['epochs'] < config.train.max_epochs, 'validation AUC should stop improving'
  assert first['epochs'] == first['best_epoch'] + 2  # patience 1: one epoch without progress
  rows = logged(str(tmp_path))
  again = retrain(config, data, stage, str(tmp_path))  # finished: trains nothing
  assert without_seconds(again) == without_seconds(first)
  assert logged(str(tmp_path)) == rows
