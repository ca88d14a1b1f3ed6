"""``take_rows`` equals ``jnp.take`` (values and gradients) on every mesh shape of 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multidevice import run_on_devices
from pep_jax import sharding

LOOKUP = '''
import jax.numpy as jnp
from jax.sharding import Mesh, AxisType
from pep_jax.sharding import specs, take_rows

rng = np.random.default_rng(0)
table = rng.normal(size=(64, 5)).astype(np.float32)  # 64 rows: 8 per device at most
mask = rng.random((64, 5)) < 0.5
ids = rng.integers(0, 64, size=(16, 3)).astype(np.int32)
cot = rng.normal(size=(16, 3, 5)).astype(np.float32)
out = {}
for shape in ((1, 8), (2, 4), (4, 2), (8, 1)):
  mesh = Mesh(np.asarray(jax.devices()).reshape(shape), ('data', 'table'),
              axis_types=(AxisType.Auto,) * 2)
  t = jax.device_put(table, specs.table_rows(mesh))
  m = jax.device_put(mask, specs.table_rows(mesh))
  i = jax.device_put(ids, specs.batch_sharding(mesh))
  loss = lambda t, i: jnp.sum(take_rows(t, i, mesh) * cot)
  rows = jax.jit(lambda t, i: take_rows(t, i, mesh))(t, i)
  grad = jax.jit(jax.grad(loss))(t, i)
  out[str(shape)] = {
      'rows': np.asarray(rows).tolist(), 'grad': np.asarray(grad).tolist(),
      'mask': np.asarray(jax.jit(lambda m, i: take_rows(m, i, mesh))(m, i)).tolist(),
      'rows_sharded_by_batch': rows.sharding.is_equivalent_to(specs.batch_sharding(mesh), 3),
      'grad_sharded_by_rows': grad.sharding.is_equivalent_to(specs.table_rows(mesh), 2),
  }
result(out)
'''


@pytest.fixture(scope='module')
def lookups():
  return run_on_devices(8, LOOKUP, timeout=60)


def _expected():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(64, 5)).astype(np.float32)
  mask = rng.random((64, 5)) < 0.5
  ids = rng.integers(0, 64, size=(16, 3)).astype(np.int32)
  cot = rng.normal(size=(16, 3, 5)).astype(np.float32)
  grad = np.zeros_like(table)
  np.add.at(grad, ids, cot)
  return table[ids], mask[ids], grad


@pytest.mark.parametrize('shape', ['(1, 8)', '(2, 4)', '(4, 2)', '(8, 1)'])
def test_take_rows_matches_take_on_8_devices(lookups, shape):
  rows, mask, grad = _expected()
  got = lookups[shape]
  np.testing.assert_array_equal(got['rows'], rows)
  np.testing.assert_array_equal(got['mask'], mask)
  np.testing.assert_allclose(got['grad'], grad, rtol=1e-6, atol=1e-6)
  assert got['rows_sharded_by_batch'] and got['grad_sharded_by_rows']


def test_single_device_mesh_is_the_same_function():
  mesh = sharding.single_device_mesh()
  table = jnp.arange(24.0).reshape(8, 3)
  ids = jnp.asarray([[0, 7], [3, 3]], jnp.int32)
  np.testing.assert_array_equal(sharding.take_rows(table, ids, mesh), jnp.take(table, ids, axis=0))
  grad = jax.grad(lambda t: jnp.sum(sharding.take_rows(t, ids, mesh)))(table)
  np.testing.assert_array_equal(grad, jax.grad(lambda t: jnp.sum(jnp.take(t, ids, axis=0)))(table))
  np.testing.assert_array_equal(sharding.take_rows(table, ids, None), table[ids])


@pytest.mark.accelerator
def test_take_rows_over_every_local_device():
  """The table split by rows over every device of this process (one on the CPU test run, every
  GPU or TPU chip under experiments/device_check.py): rows exact, gradients as numpy's."""
  devices = jax.local_devices()
  n = len(devices)
  mesh = jax.sharding.Mesh(np.asarray(devices).reshape(1, n), (sharding.DATA, sharding.TABLE),
                           axis_types=(jax.sharding.AxisType.Auto,) * 2)
  rng = np.random.default_rng(1)
  table = rng.normal(size=(16 * n, 5)).astype(np.float32)
  ids = rng.integers(0, 16 * n, size=(8 * n, 3)).astype(np.int32)
  cot = rng.normal(size=(8 * n, 3, 5)).astype(np.float32)
  t = jax.device_put(table, sharding.specs.table_rows(mesh))
  i = jax.device_put(ids, sharding.specs.batch_sharding(mesh))
  rows = jax.jit(lambda t, i: sharding.take_rows(t, i, mesh))(t, i)
  grad = jax.jit(jax.grad(lambda t, i: jnp.sum(sharding.take_rows(t, i, mesh) * cot)))(t, i)
  expected = np.zeros_like(table)
  np.add.at(expected, ids, cot)
  np.testing.assert_array_equal(rows, table[ids])
  np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)
  assert rows.sharding.is_equivalent_to(sharding.specs.batch_sharding(mesh), 3)
  assert grad.sharding.is_equivalent_to(sharding.specs.table_rows(mesh), 2)
