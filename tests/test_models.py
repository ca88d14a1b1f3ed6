"""Models and embedding layers: FM's formula, the plug-in contract, masks and padding."""

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pep_jax.config import default_config
from pep_jax.layers.embedding import (MaskedEmbedding, PEPEmbedding, PlainEmbedding,
                                      field_offsets, make_embedding)
from pep_jax.models.ctr import MODELS, build_model, fm_interaction

FIELD_DIMS = (3, 7, 2, 5)


def random_ids(batch, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(np.stack([rng.integers(0, n, batch) for n in FIELD_DIMS], 1), jnp.int32)


def test_fm_fast_formula_equals_pairwise_sum():
  emb = np.random.default_rng(0).normal(size=(6, 5, 4))
  brute = np.zeros(6)
  for f, g in itertools.combinations(range(5), 2):
    brute += np.sum(emb[:, f] * emb[:, g], axis=1)
  np.testing.assert_allclose(fm_interaction(jnp.asarray(emb, jnp.float32)), brute, rtol=1e-5,
                             atol=1e-5)


def test_offsets_address_one_table():
  np.testing.assert_array_equal(field_offsets(FIELD_DIMS), [0, 3, 10, 12])
  layer = PlainEmbedding(FIELD_DIMS, 4)
  ids = random_ids(8)
  variables = layer.init(jax.random.PRNGKey(0), ids)
  table = variables['params']['table']
  assert table.shape == (17, 4)
  out = layer.apply(variables, ids)
  np.testing.assert_array_equal(out, table[np.asarray(ids) + field_offsets(FIELD_DIMS)])


def test_xavier_init_bound_and_padding_rows():
  layer = PlainEmbedding(FIELD_DIMS, 4, row_multiple=8)
  table = layer.init(jax.random.PRNGKey(0), random_ids(2))['params']['table']
  assert table.shape == (24, 4)
  bound = np.sqrt(6 / (17 + 4))
  assert np.abs(table[:17]).max() <= bound and np.abs(table[:17]).max() > 0.5 * bound
  np.testing.assert_array_equal(table[17:], 0.0)


def test_pep_with_very_negative_s_is_the_plain_embedding():
  ids = random_ids(5)
  plain = PlainEmbedding(FIELD_DIMS, 4)
  pep = PEPEmbedding(FIELD_DIMS, 4, s_init=-150.0)
  pv = plain.init(jax.random.PRNGKey(1), ids)
  qv = pep.init(jax.random.PRNGKey(1), ids)
  np.testing.assert_array_equal(pv['params']['table'], qv['params']['table'])
  np.testing.assert_array_equal(plain.apply(pv, ids), pep.apply(qv, ids))
  assert int(pep.apply(qv, method='nonzeros')) == 17 * 4


@pytest.mark.parametrize('granularity', ['global', 'dimension', 'feature', 'feature_dimension',
                                         'field', 'field_dimension'])
def test_pep_lookup_agrees_with_the_thresholded_table(granularity):
  ids = random_ids(9)
  pep = PEPEmbedding(FIELD_DIMS, 4, row_multiple=4, granularity=granularity, s_init=-5.0)
  variables = pep.init(jax.random.PRNGKey(2), ids)
  # Random thresholds so that some entries are pruned and some are not.
  s = variables['params']['threshold']
  variables['params']['threshold'] = -2.0 + jax.random.normal(jax.random.PRNGKey(3), s.shape)
  table = pep.apply(variables, method='effective_table')
  out = pep.apply(variables, ids)
  np.testing.assert_array_equal(out, table[np.asarray(ids) + field_offsets(FIELD_DIMS)])
  mask = pep.apply(variables, method='mask')
  assert int(pep.apply(variables, method='nonzeros')) == int(np.asarray(mask)[:17].sum())
  assert 0 < int(np.asarray(mask)[:17].sum()) < 17 * 4


def test_masked_embedding_holds_the_mask_and_blocks_gradients():
  ids = random_ids(6)
  layer = MaskedEmbedding(FIELD_DIMS, 4)
  variables = layer.init(jax.random.PRNGKey(0), ids)
  mask = jax.random.bernoulli(jax.random.PRNGKey(5), 0.4, (17, 4))
  variables = {'params': variables['params'], 'ticket': {'mask': mask}}
  table = variables['params']['table']
  out = layer.apply(variables, ids)
  rows = np.asarray(ids) + field_offsets(FIELD_DIMS)
  np.testing.assert_array_equal(out, (table * mask)[rows])
  grad = jax.grad(lambda p: jnp.sum(layer.apply({'params': p, 'ticket': {'mask': mask}}, ids)))(
      variables['params'])['table']
  assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0)
  assert int(layer.apply(variables, method='nonzeros')) == int(np.sum(np.asarray(
      (table * mask) != 0)))


def model_config(name):
  c = default_config().model
  c.name = name
  c.mlp_dims = (8, 8)
  c.attn_dim = 8
  return c


@pytest.mark.parametrize('name', MODELS)
@pytest.mark.parametrize('kind', ['pep', 'masked', 'plain'])
def test_every_model_takes_every_embedding(name, kind):
  ids = random_ids(16)
  emb_cfg = ml_collections.ConfigDict(dict(dim=4, granularity='feature_dimension', s_init=-3.0,
                                           gate='sigmoid', gate_scale=1.0))
  model = build_model(model_config(name), FIELD_DIMS, make_embedding(kind, emb_cfg, FIELD_DIMS))
  variables = model.init(jax.random.PRNGKey(0), ids, train=False)
  logits = model.apply(variables, ids, train=False)
  assert logits.shape == (16,) and np.all(np.isfinite(logits))
  if name != 'lr':
    assert 'embedding' in variables['params']
  # Training mode with dropout and batch statistics works too.
  out, updates = model.apply(variables, ids, jnp.ones(16), train=True,
                             rngs={'dropout': jax.random.PRNGKey(1)}, mutable=['batch_stats'])
  assert out.shape == (16,)


def test_batch_norm_ignores_padding_rows():
  ids = random_ids(8)
  model = build_model(model_config('deepfm'), FIELD_DIMS,
                      PlainEmbedding(FIELD_DIMS, 4))
  variables = model.init(jax.random.PRNGKey(0), ids, train=False)
  weights = jnp.asarray([1, 1, 1, 1, 1, 0, 0, 0], jnp.float32)
  padded_ids = ids.at[5:].set(0)
  _, a = model.apply(variables, ids, weights, train=True, rngs={'dropout': jax.random.PRNGKey(1)},
                     mutable=['batch_stats'])
  _, b = model.apply(variables, padded_ids, weights, train=True,
                     rngs={'dropout': jax.random.PRNGKey(1)}, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_allclose, a, b)


def test_unknown_model_names_the_key():
  with pytest.raises(ValueError, match='model.name'):
    build_model(model_config('dcn'), FIELD_DIMS, PlainEmbedding(FIELD_DIMS, 4))
