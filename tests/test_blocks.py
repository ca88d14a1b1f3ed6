"""Blocks of steps per compiled call give the one-step loop's tickets, and resume exactly."""

import jax
import numpy as np
import pytest

from configs import demo
from pep_jax.data import load_dataset
from pep_jax.data import pipeline
from pep_jax.train import evaluation
from pep_jax.train.fit import train_steps
from pep_jax.train.logging import MetricWriter
from pep_jax.train.setup import build_stage


def prune(tmp_path, name, per_dispatch, *, stop_at_cut=False, max_epochs=2, updates='dense'):
  """The tiny demo's PEP search with a budget of 60% of the table; returns what it cut."""
  config = demo.get_config('tiny')
  config.train.steps_per_dispatch = per_dispatch
  config.optimizer.updates = updates
  config.optimizer.rows_sync_steps = 30
  data = load_dataset(config.data)
  stage = build_stage(config, data, 'pep')
  budget = int(0.6 * stage.table_entries)
  cut = {}

  def on_step(step, epoch_end, state, metrics):
    if 'step' not in cut and int(metrics['nonzeros']) <= budget:
      cut.update(step=step, nonzeros=int(metrics['nonzeros']),
                 mask=np.asarray(stage.embedding_call(state, 'mask')))
    return stop_at_cut and cut.get('step') == step

  writer = MetricWriter(str(tmp_path / name))
  state, progress = train_steps(
      config, data, stage, stage.initial_state(), {}, str(tmp_path / name / 'ckpt'), name,
      writer, max_epochs=max_epochs, checkpoint_every=1000, on_step=on_step,
      halt_at=lambda: -1 if 'step' in cut else budget, log_keys=('nonzeros',))
  writer.close()
  return stage, state, progress, cut


@pytest.fixture(scope='module')
def one_step(tmp_path_factory):
  return prune(tmp_path_factory.mktemp('k1'), 'k1', 1)


def test_blocks_cut_the_same_ticket_as_one_step_per_call(one_step, tmp_path):
  _, state_1, _, cut_1 = one_step
  _, state_k, progress, cut_k = prune(tmp_path, 'k7', 7)
  assert cut_1['step'] % 7 not in (0, 6), 'the budget should fall inside a block'
  assert (cut_k['step'], cut_k['nonzeros']) == (cut_1['step'], cut_1['nonzeros'])
  np.testing.assert_array_equal(cut_k['mask'], cut_1['mask'])
  assert progress['steps'] == int(state_1.step) == int(state_k.step)
  assert 0 < progress['warmup_steps'] <= 7
  for a, b in zip(np.asarray(state_1.params['embedding']['table']),
                  np.asarray(state_k.params['embedding']['table'])):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize('updates', ['dense', 'rows'])
def test_a_run_stopped_inside_a_block_resumes_bit_exactly(tmp_path, updates):
  _, uninterrupted, _, _ = prune(tmp_path, 'whole', 7, updates=updates)
  _, stopped, _, cut = prune(tmp_path, 'resumed', 7, stop_at_cut=True, updates=updates)
  assert int(stopped.step) == cut['step'] and cut['step'] % 7 not in (0, 6)
  # The second call resumes inside that block and runs to the end.
  _, resumed, _, _ = prune(tmp_path, 'resumed', 7, updates=updates)
  assert int(resumed.step) == int(uninterrupted.step)
  for a, b in zip(jax_leaves(uninterrupted.params), jax_leaves(resumed.params)):
    np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_block_evaluation_matches_one_batch_per_call(one_step):
  stage, state, _, _ = one_step
  data = load_dataset(stage.config.data)
  blocked = evaluation.predict(stage, state, {}, data.valid, 1000)
  single = np.concatenate([
      np.asarray(stage.eval_step(state, b, {}))[b['weights'] > 0]
      for b in pipeline.batches(data.valid, 1000, shuffle=False)])
  assert blocked.shape == (len(data.valid),)
  np.testing.assert_allclose(blocked, single, rtol=0, atol=1e-6)
