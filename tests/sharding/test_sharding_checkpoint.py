"""A checkpoint written on 8 devices restores on 1 or 4 (and back) and training carries on alike.

Restoring goes through ``Checkpointer.restore`` into ``Stage.abstract_state()``, whose leaves
carry the new mesh's shardings, so Orbax reads each device's rows straight into place.
"""

import numpy as np
import pytest

from multidevice import run_on_devices

RESHARD = '''
import tempfile
import optax
from pep_jax.data import load_dataset
from pep_jax.train.batches import resumable_batches
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.setup import build_stage

config = tiny_config()
data = load_dataset(config.data)
bs = config.train.batch_size


def train(stage, state, start, steps):
  losses = []
  for step, _, batch in resumable_batches(data.train, bs, seed=config.seed, start_step=start,
                                          max_epochs=100, sharding=stage.batch_sharding):
    state, metrics = stage.train_step(state, batch, {})
    losses.append(float(metrics['loss']))
    if step == start + steps:
      return state, losses


def host(tree):
  return [np.asarray(x).tolist() for x in jax.tree.leaves(tree)]


def table_rows_per_device(state):
  table = state.params['embedding']['table']
  mu = optax.tree_utils.tree_get(state.opt_state, 'mu')['embedding']['table']  # Adam's moment
  assert mu.shape == table.shape and mu.sharding == table.sharding
  return table.sharding.shard_shape(table.shape)[0]


stages = {n: build_stage(config, data, 'pep', mesh=mesh_of(n, config)) for n in (1, 4, 8)}
folder = tempfile.mkdtemp()
out = {}

# 8 devices: 10 steps, save, 10 more (the reference).
state8, _ = train(stages[8], stages[8].initial_state(), 0, 10)
saved = Checkpointer(folder + '/from8', max_to_keep=None)
saved.save(10, state8)
saved.wait()
out['saved8'] = host(state8)
out['rows8'] = table_rows_per_device(state8)
ref, ref_losses = train(stages[8], state8, 10, 10)
out['ref'] = {'losses': ref_losses, 'state': host(ref)}

# Restore that checkpoint on 1 and 4 devices and carry on for the same 10 steps.
for n in (1, 4):
  restored, _ = saved.restore(10, stages[n].abstract_state())
  out[f'restored{n}'] = {'state': host(restored), 'rows': table_rows_per_device(restored)}
  cont, losses = train(stages[n], restored, 10, 10)
  out[f'continued{n}'] = {'losses': losses, 'state': host(cont)}
  if n == 4:  # and back: 4 -> 8
    back = Checkpointer(folder + '/from4', max_to_keep=None)
    back.save(20, cont)
    back.wait()
    again, _ = back.restore(20, stages[8].abstract_state())
    out['back8'] = {'state': host(again), 'rows': table_rows_per_device(again),
                    'expected': host(cont)}
    back.close()
saved.close()
result(out)
'''


@pytest.fixture(scope='module')
def runs():
  return run_on_devices(8, RESHARD, timeout=120)


def _assert_trees_close(a, b, rtol=0.0, atol=0.0):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol,
                               atol=atol)


@pytest.mark.parametrize('n', [1, 4])
def test_restores_exactly_on_another_mesh(runs, n):
  restored = runs[f'restored{n}']
  _assert_trees_close(restored['state'], runs['saved8'])  # bit-exact, optimizer state included
  assert runs['rows8'] * 8 == restored['rows'] * n


@pytest.mark.parametrize('n', [1, 4])
def test_continues_to_the_same_result(runs, n):
  cont, ref = runs[f'continued{n}'], runs['ref']
  np.testing.assert_allclose(cont['losses'], ref['losses'], rtol=1e-5, atol=1e-6)
  _assert_trees_close(cont['state'], ref['state'], rtol=1e-4, atol=1e-5)


def test_and_back_from_4_to_8(runs):
  back = runs['back8']
  _assert_trees_close(back['state'], back['expected'])
  assert back['rows'] == runs['rows8']
