"""soft_threshold against a float64 numpy reference, finite differences and the paper's edges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pep_jax import soft_threshold
from pep_jax.ops import threshold as th

jax.config.update('jax_enable_x64', False)


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_soft_threshold(v, s):
  """Float64 reference: value and the sub-gradients of Eq. 11."""
  t = np_sigmoid(s)
  out = np.sign(v) * np.maximum(np.abs(v) - t, 0.0)
  keep = (out != 0).astype(np.float64)
  dv = keep
  dt = -np.sign(v) * keep
  ds = dt * t * (1 - t)
  return out, dv, ds


N, F, D = 11, 3, 5
FIELD_DIMS = (4, 2, 5)


def table_and_thresholds(granularity, seed=0):
  rng = np.random.default_rng(seed)
  v = rng.normal(scale=0.3, size=(N, D))
  shape = th.threshold_shape(granularity, N, F, D)
  s = rng.normal(loc=-1.5, scale=0.7, size=shape)
  return v, s


def expand_np(s, granularity):
  if th.is_per_field(granularity):
    return s[np.repeat(np.arange(F), FIELD_DIMS)]
  return np.broadcast_to(s, (N, s.shape[1])) if s.shape[0] == 1 else s


@pytest.mark.accelerator
@pytest.mark.parametrize('granularity', th.GRANULARITIES)
def test_values_and_gradients_match_float64_reference(granularity):
  v, s = table_and_thresholds(granularity)
  s_rows = expand_np(s, granularity)
  ref, ref_dv, ref_ds_rows = np_soft_threshold(v, s_rows)

  def f(v, s):
    t = th.table_thresholds(s, granularity, FIELD_DIMS, N)
    return soft_threshold(v, t)

  out = f(jnp.asarray(v, jnp.float32), jnp.asarray(s, jnp.float32))
  np.testing.assert_allclose(out, ref, atol=1e-6)

  # Gradient of sum(w * S) for a random cotangent w.
  w = np.random.default_rng(1).normal(size=(N, D))
  loss = lambda v, s: jnp.sum(jnp.asarray(w, jnp.float32) * f(v, s))
  gv, gs = jax.grad(loss, argnums=(0, 1))(jnp.asarray(v, jnp.float32),
                                           jnp.asarray(s, jnp.float32))
  np.testing.assert_allclose(gv, w * ref_dv, atol=1e-6)
  # ds sums the per-entry contributions over the entries sharing a threshold.
  ds_entries = w * np.broadcast_to(ref_ds_rows, (N, D))
  if granularity == 'global':
    expect = ds_entries.sum(keepdims=True)
  elif granularity == 'dimension':
    expect = ds_entries.sum(axis=0, keepdims=True)
  elif granularity == 'feature':
    expect = ds_entries.sum(axis=1, keepdims=True)
  elif granularity == 'feature_dimension':
    expect = ds_entries
  else:
    fields = np.repeat(np.arange(F), FIELD_DIMS)
    per_field = np.stack([ds_entries[fields == f].sum(axis=0) for f in range(F)])
    expect = per_field.sum(axis=1, keepdims=True) if granularity == 'field' else per_field
  np.testing.assert_allclose(gs, expect, atol=1e-5)


@pytest.mark.parametrize('granularity', th.GRANULARITIES)
def test_gradients_match_finite_differences(granularity):
  """Central differences in float64, away from the kinks, agree with the custom JVP."""
  jax.config.update('jax_enable_x64', True)
  try:
    v, s = table_and_thresholds(granularity, seed=3)
    v, s = jnp.asarray(v), jnp.asarray(s)
    w = jnp.asarray(np.random.default_rng(4).normal(size=(N, D)))
    loss = lambda v, s: jnp.sum(w * soft_threshold(v, th.table_thresholds(s, granularity,
                                                                          FIELD_DIMS, N)))
    gv, gs = jax.grad(loss, argnums=(0, 1))(v, s)
    eps = 1e-6
    for idx in [(0, 0), (3, 2), (7, 4), (10, 1)]:
      e = jnp.zeros_like(v).at[idx].set(eps)
      fd = (loss(v + e, s) - loss(v - e, s)) / (2 * eps)
      np.testing.assert_allclose(gv[idx], fd, atol=1e-6)
    for idx in [tuple(min(i, n - 1) for i, n in zip((0, 0), s.shape)),
                tuple(min(i, n - 1) for i, n in zip((2, 3), s.shape))]:
      e = jnp.zeros_like(s).at[idx].set(eps)
      fd = (loss(v, s + e) - loss(v, s - e)) / (2 * eps)
      np.testing.assert_allclose(gs[idx], fd, atol=1e-6)
  finally:
    jax.config.update('jax_enable_x64', False)


@pytest.mark.accelerator
def test_s_minus_150_is_an_exact_zero_threshold_in_float32():
  v = jnp.asarray([[-0.3, 0.0, 1e-30, 2.5]], jnp.float32)
  s = jnp.full((1, 4), -150.0, jnp.float32)
  assert float(jax.nn.sigmoid(s)[0, 0]) == 0.0  # exp(150) overflows; 1 / inf == 0
  out = soft_threshold(v, s)
  np.testing.assert_array_equal(out, v)  # nothing is thresholded
  gv, gs = jax.grad(lambda v, s: jnp.sum(soft_threshold(v, s)), argnums=(0, 1))(v, s)
  assert not np.any(np.isnan(gv)) and not np.any(np.isnan(gs))
  np.testing.assert_array_equal(gs, 0.0)  # sigmoid'(-150) underflows to exactly 0
  np.testing.assert_array_equal(gv, [[1.0, 0.0, 1.0, 1.0]])  # V = 0 gives S = 0: no gradient


@pytest.mark.accelerator
def test_subgradient_at_the_kink_is_zero():
  """|V| == g(s) gives S == 0 exactly, and Eq. 11 gives V and s no gradient there."""
  s = jnp.zeros((1, 2))  # g(s) = 0.5
  v = jnp.asarray([[0.5, -0.5]])
  gv, gs = jax.grad(lambda v, s: jnp.sum(soft_threshold(v, s)), argnums=(0, 1))(v, s)
  np.testing.assert_array_equal(soft_threshold(v, s), 0.0)
  np.testing.assert_array_equal(gv, 0.0)
  np.testing.assert_array_equal(gs, 0.0)


def test_mask_count_and_row_sizes():
  v = jnp.asarray([[0.9, 0.1, -0.7], [0.05, -0.02, 0.0], [0.0, 0.0, 0.0]])
  s = jnp.zeros((1, 1))  # threshold 0.5
  mask = th.keep_mask(v, s)
  np.testing.assert_array_equal(mask, [[True, False, True], [False] * 3, [False] * 3])
  assert int(th.count_nonzero(v, s)) == 2
  assert int(th.count_nonzero(v, s, num_rows=1)) == 2
  np.testing.assert_array_equal(th.row_sizes(mask), [2, 0, 0])


@pytest.mark.parametrize('gate', sorted(th.GATES))
def test_gates_are_valid(gate):
  """Positive, -> 0 at -inf, bounded positive derivative, and usable in soft_threshold."""
  g = th.get_gate(gate)
  xs = jnp.linspace(-30.0, 3.0, 200)
  assert np.all(np.asarray(g(xs)) >= 0)
  assert float(g(jnp.asarray(-80.0))) < 1e-20
  d = jax.vmap(jax.grad(g))(xs)
  assert np.all(np.asarray(d) >= 0) and np.all(np.isfinite(d))


def test_unknown_names_are_rejected_with_the_config_key():
  with pytest.raises(ValueError, match='embedding.gate'):
    th.get_gate('tanh')
  with pytest.raises(ValueError, match='embedding.granularity'):
    th.threshold_shape('row', 3, 1, 2)


def test_row_fields():
  np.testing.assert_array_equal(th.row_fields(FIELD_DIMS, 13),
                                [0] * 4 + [1] * 2 + [2] * 5 + [2, 2])


def test_gate_scale_multiplies_the_threshold_and_bounds_it():
  v = jnp.asarray([[1.5, -0.9, 0.3]])
  s = jnp.full((1, 3), 50.0)  # sigmoid(50) == 1 in float32
  np.testing.assert_allclose(th.soft_threshold(v, s, th.get_gate('sigmoid')), [[0.5, 0.0, 0.0]])
  np.testing.assert_allclose(th.soft_threshold(v, s, th.get_gate('sigmoid', 2.0)),
                             [[0.0, 0.0, 0.0]])
  s = jnp.zeros((1, 3))  # threshold 0.5 * scale
  np.testing.assert_allclose(th.soft_threshold(v, s, th.get_gate('sigmoid', 0.2)),
                             [[1.4, -0.8, 0.2]], rtol=1e-6)
  with pytest.raises(ValueError, match='embedding.gate_scale'):
    th.get_gate('sigmoid', 0.0)
