"""Baseline embedding layers (MDE, MGQE, DartsEmb, per-field widths) against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pep_jax.config import default_config
from pep_jax.layers.embedding import FieldWidthEmbedding, field_offsets
from pep_jax.methods import dartsemb, mde, mgqe
from pep_jax.models.ctr import build_model

FIELD_DIMS = (3, 7, 2, 5)
ROWS = sum(FIELD_DIMS)


def random_ids(batch, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(np.stack([rng.integers(0, n, batch) for n in FIELD_DIMS], 1), jnp.int32)


def global_ids(ids):
  return np.asarray(ids) + field_offsets(FIELD_DIMS)[None, :]


def random_counts(seed=0):
  return np.random.default_rng(seed).integers(0, 6, ROWS)  # many ties, some unseen features


def with_params(variables, **params):
  """``variables`` with some of the layer's params replaced."""
  return {**variables, 'params': {**variables['params'], **params}}


# MDE

HAND_COUNTS = np.array([50, 0, 10, 30, 5, 5, 0, 100])


def test_mde_layout_of_hand_made_counts():
  block_of_row, row_in_block, sizes = mde.block_layout(HAND_COUNTS, 4)
  # By count: rows 7, 0 | 3, 2 | 4, 5 (tie: lower row first) | 1, 6.
  np.testing.assert_array_equal(block_of_row, [0, 3, 1, 1, 2, 2, 3, 0])
  np.testing.assert_array_equal(row_in_block, [1, 0, 1, 0, 0, 1, 1, 0])
  np.testing.assert_array_equal(sizes, [2, 2, 2, 2])
  assert block_of_row.dtype == np.int32 and row_in_block.dtype == np.int32
  assert sizes.dtype == np.int64


def test_mde_block_widths_follow_the_formula():
  block_of_row, _, _ = mde.block_layout(HAND_COUNTS, 4)
  popularity = mde.block_popularity(HAND_COUNTS, block_of_row, 4)
  np.testing.assert_allclose(popularity, [(100 + 50) / 400, (30 + 10) / 400, (5 + 5) / 400, 0])
  # 16 * (0.1 / 0.375) ** 0.3 = 10.76, 16 * (0.025 / 0.375) ** 0.3 = 7.10; block 3 never seen.
  assert mde.block_widths(popularity, 16, 0.3) == (16, 11, 7, 1)
  assert mde.block_widths(popularity, 16, 0.0) == (16, 16, 16, 1)
  for alpha in (0.1, 0.2, 1.0):
    expected = [max(1, round(16 * (p / popularity[0]) ** alpha)) if p > 0 else 1
                for p in popularity]
    assert mde.block_widths(popularity, 16, alpha) == tuple(expected)
  assert mde.block_widths(np.zeros(3), 8, 0.3) == (8, 8, 8)


def test_mde_layout_partitions_rows_most_popular_first():
  counts = np.random.default_rng(1).integers(0, 50, 103)
  block_of_row, row_in_block, sizes = mde.block_layout(counts, 8)
  assert sizes.sum() == 103 and sizes.max() - sizes.min() <= 1
  slots = set(zip(block_of_row.tolist(), row_in_block.tolist()))
  assert len(slots) == 103  # every row in exactly one slot
  assert all(0 <= r < sizes[b] for b, r in slots)
  for b in range(7):
    assert counts[block_of_row == b].min() >= counts[block_of_row == b + 1].max()


def test_mde_bad_settings_name_the_key():
  for blocks in (0, 9):
    with pytest.raises(ValueError, match='mde.blocks'):
      mde.block_layout(HAND_COUNTS, blocks)
  with pytest.raises(ValueError, match='mde.alphas'):
    mde.block_widths(np.ones(2), 8, 1.5)


def mde_layer(dim=4, num_blocks=3, alpha=1.0):
  counts = random_counts()
  block_of_row, row_in_block, sizes = mde.block_layout(counts, num_blocks)
  widths = mde.block_widths(mde.block_popularity(counts, block_of_row, num_blocks), dim, alpha)
  layer = mde.MDEEmbedding(FIELD_DIMS, dim, tuple(int(s) for s in sizes), widths)
  layout = {'block': jnp.asarray(block_of_row), 'local': jnp.asarray(row_in_block)}
  return layer, layout


def mde_reference(params, layout, ids, widths):
  """MDE's lookup in float64: ``block_b[local] @ proj_b`` for every id."""
  block, local = np.asarray(layout['block']), np.asarray(layout['local'])
  out = np.zeros(ids.shape + (4,))
  for (i, f), gid in np.ndenumerate(global_ids(ids)):
    b = block[gid]
    row = np.asarray(params[f'block_{b}'], np.float64)[local[gid]]
    out[i, f] = row @ np.asarray(params[f'proj_{b}'], np.float64) if widths[b] < 4 else row
  return out


# 32 rows of 4 fields look up more than the 17 features (the projected table is gathered); 2
# rows look up fewer (each lookup's row is gathered from the flat blocks, then projected).
@pytest.mark.parametrize('batch', [32, 2])
def test_mde_embedding_equals_numpy_reference(batch):
  layer, layout = mde_layer()
  assert layer.widths[0] == 4 and min(layer.widths) < 4
  ids = random_ids(batch)
  variables = layer.init(jax.random.PRNGKey(0), ids)
  variables = {**variables, 'layout': layout}
  params = variables['params']
  for b, w in enumerate(layer.widths):
    assert params[f'block_{b}'].shape == (layer.block_sizes[b], w)
    assert (f'proj_{b}' in params) == (w < 4)
  out = np.asarray(layer.apply(variables, ids))
  np.testing.assert_allclose(out, mde_reference(params, layout, ids, layer.widths), rtol=1e-6,
                             atol=1e-6)


@pytest.mark.parametrize('batch', [32, 2])
def test_mde_gradients_equal_numpy_reference(batch):
  """d/dparams of ``sum(out * c)``: the lookup's transpose, whichever way the rows are read."""
  layer, layout = mde_layer()
  ids = random_ids(batch)
  variables = {**layer.init(jax.random.PRNGKey(0), ids), 'layout': layout}
  params = variables['params']
  cot = np.random.default_rng(1).normal(size=ids.shape + (4,))
  grads = jax.grad(lambda p: jnp.sum(layer.apply({**variables, 'params': p}, ids) *
                                     jnp.asarray(cot, jnp.float32)))(params)
  block, local = np.asarray(layout['block']), np.asarray(layout['local'])
  expected = {k: np.zeros(v.shape) for k, v in params.items()}
  for (i, f), gid in np.ndenumerate(global_ids(ids)):
    b, c = block[gid], cot[i, f]
    if layer.widths[b] < 4:
      proj = np.asarray(params[f'proj_{b}'], np.float64)
      expected[f'block_{b}'][local[gid]] += proj @ c
      expected[f'proj_{b}'] += np.outer(np.asarray(params[f'block_{b}'])[local[gid]], c)
    else:
      expected[f'block_{b}'][local[gid]] += c
  for name, value in expected.items():
    np.testing.assert_allclose(np.asarray(grads[name]), value, rtol=1e-6, atol=1e-6,
                               err_msg=name)


def test_mde_accounting_hand_count():
  # Tables 9*4 + 8*2 + 5*1, projections 2*4 + 1*4 (block 0 is full width).
  assert mde.accounting((9, 8, 5), (4, 2, 1), 4, 22) == dict(params=69, bytes=4 * 69 + 4 * 22)


# MGQE

def test_mgqe_centroid_limits_hand_made():
  counts = np.array([5, 9, 1, 9, 0])
  np.testing.assert_array_equal(mgqe.centroid_limits(counts, 8, 0.4, 2), [2, 8, 2, 8, 2])
  np.testing.assert_array_equal(mgqe.centroid_limits(counts, 8, 0.2, 2), [2, 8, 2, 2, 2])
  np.testing.assert_array_equal(mgqe.centroid_limits(counts, 8, 1.0, 2), [8] * 5)
  with pytest.raises(ValueError, match='mgqe.rare_centroids'):
    mgqe.centroid_limits(counts, 8, 0.4, 9)


def mgqe_setup(seed=0, batch=32):
  """An MGQE layer with random queries (so codes vary) and two tiers of limits."""
  layer = mgqe.MGQEEmbedding(FIELD_DIMS, 8, num_subspaces=4, num_centroids=6)
  ids = random_ids(batch, seed)
  variables = layer.init(jax.random.PRNGKey(seed), ids)
  assert variables['params']['centroids'].shape == (4, 6, 2)
  queries = jax.random.normal(jax.random.PRNGKey(seed + 1), (ROWS, 8)) * 0.5
  layout = {'limit': jnp.asarray(mgqe.centroid_limits(random_counts(seed), 6, 0.3, 2))}
  variables = with_params({'params': variables['params'], 'layout': layout}, table=queries)
  return layer, variables, ids


# 32 rows of 4 fields look up more than the 17 features (the whole table is quantised and the
# codes gathered); 2 rows look up fewer (the looked-up queries are quantised).
@pytest.mark.parametrize('batch', [32, 2])
def test_mgqe_forward_equals_reconstruction_of_codes(batch):
  layer, variables, ids = mgqe_setup(batch=batch)
  out = layer.apply(variables, ids)
  codes = layer.apply(variables, method='codes')
  assert codes.shape == (ROWS, 4) and codes.dtype == jnp.int32
  table = layer.apply(variables, codes, method='reconstruct')
  assert table.shape == (ROWS, 8)
  np.testing.assert_array_equal(out, np.asarray(table)[global_ids(ids)])


def test_mgqe_codes_are_the_argmin_within_each_limit():
  layer, variables, _ = mgqe_setup()
  codes = np.asarray(layer.apply(variables, method='codes'))
  limit = np.asarray(variables['layout']['limit'])
  assert set(limit) == {2, 6}
  assert np.all(codes < limit[:, None])
  queries = np.asarray(variables['params']['table'], np.float64).reshape(ROWS, 4, 1, 2)
  centroids = np.asarray(variables['params']['centroids'], np.float64)
  dist = np.sum((queries - centroids[None]) ** 2, axis=-1)  # [rows, S, K]
  dist = np.where(np.arange(6)[None, None, :] < limit[:, None, None], dist, np.inf)
  chosen = np.take_along_axis(dist, codes[..., None], axis=-1)[..., 0]
  np.testing.assert_allclose(chosen, dist.min(axis=-1), rtol=1e-6, atol=1e-7)
  assert np.mean(codes == np.argmin(dist, axis=-1)) > 0.99  # ties aside, the same index
  assert len(np.unique(codes[limit == 6])) > 2  # frequent rows do use the other centroids


def test_mgqe_quantize_equals_the_summed_distances_argmin():
  """The distances summed entry by entry give the codes of ``sum((q_s - c)^2, axis=-1)``,
  the formulation before it, bit for bit on 100,000 random queries."""
  queries = jax.random.normal(jax.random.PRNGKey(0), (100_000, 32))
  centroids = jax.random.normal(jax.random.PRNGKey(1), (4, 64, 8))
  limits = jnp.where(jnp.arange(100_000) < 5_000, 64, 16)

  def summed(queries, centroids, limits):
    subs = queries.reshape(queries.shape[:-1] + (4, 1, 8))
    dist = jnp.sum(jnp.square(subs - centroids), axis=-1)  # [N, S, K]
    allowed = jnp.arange(64) < limits[..., None, None]
    return jnp.argmin(jnp.where(allowed, dist, jnp.inf), axis=-1).astype(jnp.int32)

  np.testing.assert_array_equal(jax.jit(mgqe.quantize)(queries, centroids, limits),
                                jax.jit(summed)(queries, centroids, limits))


def test_mgqe_padded_table_codes_are_the_real_rows_codes():
  """A table padded to 32 rows (as for a mesh) quantises its 17 real rows on one device."""
  layer, variables, ids = mgqe_setup()
  padded = mgqe.MGQEEmbedding(FIELD_DIMS, 8, num_subspaces=4, num_centroids=6, row_multiple=32)
  table = jnp.pad(variables['params']['table'], ((0, 32 - ROWS), (0, 0)))
  limit = jnp.pad(variables['layout']['limit'], (0, 32 - ROWS), constant_values=6)
  padded_vars = {'params': {**variables['params'], 'table': table}, 'layout': {'limit': limit}}
  np.testing.assert_array_equal(padded.apply(padded_vars, ids), layer.apply(variables, ids))


def test_mgqe_quantize_breaks_ties_toward_the_lower_centroid_within_the_limit():
  centroids = jnp.asarray(np.stack([np.eye(4)[[0, 1, 2, 1, 3, 2]]] * 2), jnp.float32)  # [2, 6, 4]
  queries = jnp.asarray([[0, 1, 0, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 1, 0, 0]], jnp.float32)
  codes = mgqe.quantize(queries, centroids, jnp.asarray([6, 6]))
  np.testing.assert_array_equal(codes, [[1, 2], [4, 1]])  # duplicates at 1 and 3, 2 and 5
  codes = mgqe.quantize(queries, centroids, jnp.asarray([2, 4]))
  np.testing.assert_array_equal(codes[1], [0, 1])  # centroid 4 not allowed: all others tie


@pytest.mark.parametrize('batch', [32, 2])
def test_mgqe_losses_and_gradients(batch):
  layer, variables, ids = mgqe_setup(batch=batch)
  weight = jax.random.normal(jax.random.PRNGKey(5), (batch, 4, 8))

  def task(params):
    out = layer.apply({**variables, 'params': params}, ids)
    return jnp.sum(out * weight)

  # Straight through: the task gradient of a looked-up query is the output's cotangent.
  grads = jax.grad(task)(variables['params'])
  expected = np.zeros((ROWS, 8))
  np.add.at(expected, global_ids(ids), np.asarray(weight))
  np.testing.assert_allclose(grads['table'], expected, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(grads['centroids'], 0.0)  # they learn from the VQ loss only

  def vq(params):
    _, state = layer.apply({**variables, 'params': params}, ids, mutable=['losses'])
    return sum(jax.tree.leaves(state['losses']))

  _, state = layer.apply(variables, ids, mutable=['losses'])
  (loss,) = state['losses']['vq']
  codes = np.asarray(layer.apply(variables, method='codes'))[global_ids(ids)]  # [B, F, S]
  queries = np.asarray(variables['params']['table'], np.float64)[global_ids(ids)]
  centroids = np.asarray(variables['params']['centroids'], np.float64)
  chosen = centroids[np.arange(4), codes].reshape(batch, 4, 8)
  np.testing.assert_allclose(loss, 1.25 * np.mean((queries - chosen) ** 2), rtol=1e-5)
  grads = jax.grad(vq)(variables['params'])
  # d/dc mean((q - c)^2) over B * F * D entries, summed over the lookups that chose c.
  sub_grad = 2 * (chosen - queries).reshape(batch, 4, 4, 2) / (batch * 4 * 8)
  expected_c = np.zeros(centroids.shape)
  np.add.at(expected_c, (np.arange(4)[None, None, :], codes), sub_grad)
  np.testing.assert_allclose(grads['centroids'], expected_c, rtol=1e-5, atol=1e-8)
  expected_q = np.zeros((ROWS, 8))
  np.add.at(expected_q, global_ids(ids), 0.25 * 2 * (queries - chosen) / (batch * 4 * 8))
  np.testing.assert_allclose(grads['table'], expected_q, rtol=1e-5, atol=1e-8)


def test_mgqe_loss_is_small_beside_the_task_loss_at_init():
  field_dims = (20_000,)
  layer = mgqe.MGQEEmbedding(field_dims, 16, num_subspaces=4, num_centroids=64)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 20_000, (256, 1)), jnp.int32)
  variables = layer.init(jax.random.PRNGKey(0), ids)
  assert set(variables) == {'params', 'layout'}  # nothing sown while initialising
  _, state = layer.apply(variables, ids, mutable=['losses'])
  (loss,) = state['losses']['vq']
  assert 0 < loss < 1e-2 * np.log(2)


def test_mgqe_subspaces_must_divide_dim():
  with pytest.raises(ValueError, match='mgqe.subspaces'):
    mgqe.MGQEEmbedding(FIELD_DIMS, 8, 3, 4).init(jax.random.PRNGKey(0), random_ids(2))


def test_mgqe_accounting_hand_count():
  limits = np.array([2, 8, 2, 8, 2])
  # Centroids 8 * 8 floats, codes 3 rows * 4 * 1 bit + 2 rows * 4 * 3 bits = 36 bits -> 5 bytes,
  # tiers 5 rows * 1 bit -> 1 byte, and the bits per code of the 2 tiers, a byte each.
  assert mgqe.accounting(5, 8, 4, 8, limits) == dict(params=64 + 20, bytes=256 + 5 + 1 + 2)
  # One tier: no tier bits; 5 * 4 codes of 3 bits = 60 bits -> 8 bytes; its bits per code.
  assert mgqe.accounting(5, 8, 4, 8, np.full(5, 8)) == dict(params=84, bytes=256 + 8 + 1)


# DartsEmb

def test_dartsemb_one_hot_arch_is_that_candidates_projected_lookup():
  layer = dartsemb.DartsEmbedding(FIELD_DIMS, 4, (1, 2, 4))
  ids = random_ids(16)
  variables = layer.init(jax.random.PRNGKey(0), ids)
  params = variables['params']
  np.testing.assert_array_equal(params['arch'], np.zeros((4, 3)))
  assert params['proj_w2'].shape == (4, 2, 4) and params['table_w2'].shape == (ROWS, 2)
  assert 0.5 / np.sqrt(2) < np.abs(params['proj_w2']).max() <= 1 / np.sqrt(2)
  picks = np.array([2, 0, 1, 0])  # candidate index per field
  arch = np.zeros((4, 3), np.float32)
  arch[np.arange(4), picks] = 60.0
  out = np.asarray(layer.apply(with_params(variables, arch=jnp.asarray(arch)), ids))
  gids = global_ids(ids)
  for f, c in enumerate(picks):
    w = (1, 2, 4)[c]
    expected = np.asarray(params[f'table_w{w}'])[gids[:, f]] @ np.asarray(params[f'proj_w{w}'])[f]
    np.testing.assert_allclose(out[:, f], expected, rtol=1e-6, atol=1e-6)
  chosen = layer.apply(with_params(variables, arch=jnp.asarray(arch)), method='chosen_widths')
  np.testing.assert_array_equal(chosen, [4, 1, 2, 1])
  # Zero logits: the plain average of the three candidates.
  uniform = np.mean([np.einsum('bfw,fwd->bfd', np.asarray(params[f'table_w{w}'])[gids],
                               np.asarray(params[f'proj_w{w}'])) for w in (1, 2, 4)], axis=0)
  np.testing.assert_allclose(layer.apply(variables, ids), uniform, rtol=1e-5, atol=1e-6)


def dartsemb_reference(params, ids, candidates):
  """The supernet's mixture in float64, lookup by lookup."""
  arch = np.asarray(params['arch'], np.float64)
  weights = np.exp(arch) / np.exp(arch).sum(axis=1, keepdims=True)  # [F, C]
  gids = global_ids(ids)
  out = np.zeros(ids.shape + (4,))
  for c, w in enumerate(candidates):
    table, proj = (np.asarray(params[k], np.float64) for k in (f'table_w{w}', f'proj_w{w}'))
    out += weights[None, :, c, None] * np.einsum('bfw,fwd->bfd', table[gids], proj)
  return out


# 16 rows: every field's mixture is computed whole; 4 rows: fields 0 and 2 (3 and 2 features)
# are, fields 1 and 3 (7 and 5) mix their looked-up rows.
@pytest.mark.parametrize('batch', [16, 4])
def test_dartsemb_mixture_and_gradients_equal_numpy_reference(batch):
  candidates = (1, 2, 4)
  layer = dartsemb.DartsEmbedding(FIELD_DIMS, 4, candidates)
  ids = random_ids(batch)
  params = layer.init(jax.random.PRNGKey(0), ids)['params']
  params = {**params, 'arch': jax.random.normal(jax.random.PRNGKey(3), (4, 3))}
  out = layer.apply({'params': params}, ids)
  np.testing.assert_allclose(out, dartsemb_reference(params, ids, candidates), rtol=1e-6,
                             atol=1e-6)
  cot = jax.random.normal(jax.random.PRNGKey(4), out.shape)
  grads = jax.grad(lambda p: jnp.sum(layer.apply({'params': p}, ids) * cot))(params)
  # The reference's gradient by central differences in float64 is too coarse; instead the
  # gradient of the lookup-by-lookup formulation (the layer before it mixed whole fields).
  def looked_up(p):
    weights = jax.nn.softmax(p['arch'], axis=-1)
    gids = jnp.asarray(global_ids(ids))
    total = jnp.zeros(ids.shape + (4,))
    for c, w in enumerate(candidates):
      rows = jnp.take(p[f'table_w{w}'], gids, axis=0)
      total += weights[None, :, c, None] * jnp.einsum('bfw,fwd->bfd', rows, p[f'proj_w{w}'])
    return jnp.sum(total * cot)
  expected = jax.grad(looked_up)(params)
  for name in params:
    np.testing.assert_allclose(grads[name], expected[name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_dartsemb_candidates_wider_than_dim_name_the_key():
  with pytest.raises(ValueError, match='dartsemb.candidate_sets'):
    dartsemb.DartsEmbedding(FIELD_DIMS, 4, (2, 8)).init(jax.random.PRNGKey(0), random_ids(2))


def test_dartsemb_accounting_hand_count():
  # Tables 3*2 + 0 + 2*4 + 5*1 = 19, projections (2 + 4 + 1) * 4 = 28.
  assert dartsemb.accounting(FIELD_DIMS, (2, 0, 4, 1), 4) == dict(params=47, bytes=188)


# Per-field widths

def test_field_width_embedding_equals_numpy_and_zero_width_is_zero():
  layer = FieldWidthEmbedding(FIELD_DIMS, 4, (2, 0, 4, 1))
  ids = random_ids(16)
  params = layer.init(jax.random.PRNGKey(0), ids)['params']
  assert set(params) == {'field_0', 'proj_0', 'field_2', 'proj_2', 'field_3', 'proj_3'}
  assert params['field_2'].shape == (2, 4) and params['proj_3'].shape == (1, 4)
  for f, w in ((0, 2), (2, 4)):  # U(+-1/sqrt(fan_in)) like the models' linear layers
    assert 0.5 / np.sqrt(w) < np.abs(params[f'proj_{f}']).max() <= 1 / np.sqrt(w)
  out = np.asarray(layer.apply({'params': params}, ids))
  np.testing.assert_array_equal(out[:, 1], 0.0)
  for f in (0, 2, 3):
    expected = np.asarray(params[f'field_{f}'])[np.asarray(ids)[:, f]] @ params[f'proj_{f}']
    np.testing.assert_allclose(out[:, f], expected, rtol=1e-6, atol=1e-6)


# Every layer in the models

def layers_with_layout():
  mde_emb, mde_layout = mde_layer()
  limit = {'limit': jnp.asarray(mgqe.centroid_limits(random_counts(), 6, 0.3, 2))}
  return {
      'mde': (mde_emb, mde_layout),
      'mgqe': (mgqe.MGQEEmbedding(FIELD_DIMS, 4, 2, 6), limit),
      'dartsemb': (dartsemb.DartsEmbedding(FIELD_DIMS, 4, (1, 2, 4)), None),
      'field_width': (FieldWidthEmbedding(FIELD_DIMS, 4, (2, 0, 4, 1)), None),
  }


@pytest.mark.parametrize('model_name', ['fm', 'deepfm'])
@pytest.mark.parametrize('kind', ['mde', 'mgqe', 'dartsemb', 'field_width'])
def test_every_layer_plugs_into_the_models(model_name, kind):
  embedding, layout = layers_with_layout()[kind]
  config = default_config().model
  config.name = model_name
  config.mlp_dims = (8, 8)
  model = build_model(config, FIELD_DIMS, embedding)
  ids = random_ids(16)
  variables = model.init(jax.random.PRNGKey(0), ids, train=False)
  assert 'losses' not in variables
  if layout is not None:
    variables['layout'] = {'embedding': layout}
  logits, state = model.apply(variables, ids, jnp.ones(16), train=True,
                              rngs={'dropout': jax.random.PRNGKey(1)},
                              mutable=['batch_stats', 'losses'])
  assert logits.shape == (16,) and np.all(np.isfinite(logits))
  assert ('losses' in state) == (kind == 'mgqe')
  assert np.all(np.isfinite(model.apply(variables, ids, train=False)))
