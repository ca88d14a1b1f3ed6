"""The three baselines: magnitude selection, random masks, QR tables and their budget search,
each against a reference written out by hand, then every one of them end to end."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import compare
from pep_jax import experiment
from pep_jax import workdir as wd
from pep_jax.data import load_dataset
from pep_jax.errors import ConfigError
from pep_jax.methods import magnitude, qr
from pep_jax.methods import random as random_mask
from pep_jax.methods.base import Context
from pep_jax.train.setup import build_stage
from test_experiment import read_tree

# Ties on purpose: |0.5| three times, |0.3| twice, |0.1| three times, two zeros.
TABLE = np.array([[0.5, -0.5, 0.1],
                  [0.0, 0.5, -0.2],
                  [0.3, -0.3, 0.1],
                  [0.1, 0.0, -0.4]], np.float32)
FIELDS = (1, 3)  # rows 0 | rows 1-3


def reference_top(values: np.ndarray, count: int) -> np.ndarray:
  keep = np.zeros(values.size, bool)
  keep[np.argsort(-abs(values).ravel(), kind='stable')[:count]] = True
  return keep.reshape(values.shape)


def test_global_magnitude_keeps_the_stable_argsort_prefix():
  for budget in range(TABLE.size + 1):
    keep = magnitude.select(TABLE, budget, FIELDS, 'global')
    np.testing.assert_array_equal(keep, reference_top(TABLE, budget), err_msg=str(budget))
    assert keep.sum() == budget
  # Three entries of |v| = 0.5 and room for two: the first two in row-major order.
  np.testing.assert_array_equal(magnitude.select(TABLE, 2, FIELDS, 'global'),
                                [[1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_field_quotas_are_the_largest_remainders_and_sum_to_the_budget():
  # Entries 3 and 9 of 12, budget 5: floors 1 and 3, remainders 3 and 9: the second field.
  np.testing.assert_array_equal(magnitude.field_quotas(5, (3, 9)), [1, 4])
  # Equal remainders: the earlier fields first.
  np.testing.assert_array_equal(magnitude.field_quotas(1, (6, 6)), [1, 0])
  np.testing.assert_array_equal(magnitude.field_quotas(2, (2, 2, 2)), [1, 1, 0])
  rng = np.random.default_rng(0)
  for _ in range(300):
    sizes = rng.integers(1, 40, size=rng.integers(1, 7))
    budget = int(rng.integers(0, sizes.sum() + 1))
    quotas = magnitude.field_quotas(budget, sizes)
    assert quotas.sum() == budget
    assert np.all(quotas <= sizes) and np.all(quotas >= 0)
    exact = budget * sizes / sizes.sum()
    assert np.all(np.abs(quotas - exact) < 1)


def test_field_magnitude_keeps_each_fields_share_by_the_stable_argsort():
  for budget in range(TABLE.size + 1):
    keep = magnitude.select(TABLE, budget, FIELDS, 'field')
    quotas = magnitude.field_quotas(budget, (3, 9))
    expected = np.concatenate([reference_top(TABLE[:1], int(quotas[0])),
                               reference_top(TABLE[1:], int(quotas[1]))])
    np.testing.assert_array_equal(keep, expected, err_msg=str(budget))
    assert keep.sum() == budget
  # Budget 5: field 0 keeps 1 of its tied 0.5s (the first), field 1 its 4 largest:
  # 0.5, -0.4, then the tied 0.3 and -0.3 in row-major order.
  np.testing.assert_array_equal(magnitude.select(TABLE, 5, FIELDS, 'field'),
                                [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_random_masks_keep_exactly_the_budget_and_depend_on_budget_and_seed():
  rows, dim = 129, 8
  masks = {b: random_mask.draw(rows, dim, b, 42) for b in (1, 100, 101, 516, rows * dim)}
  for b, mask in masks.items():
    assert mask.shape == (rows, dim) and mask.dtype == bool and mask.sum() == b
  np.testing.assert_array_equal(random_mask.draw(rows, dim, 100, 42), masks[100])  # reproduced
  # As documented: numpy's Generator seeded with (seed, budget), positions in row-major order.
  chosen = np.random.default_rng((42, 100)).choice(rows * dim, size=100, replace=False)
  np.testing.assert_array_equal(np.flatnonzero(masks[100]), np.sort(chosen))
  assert not np.array_equal(random_mask.draw(rows, dim, 100, 43), masks[100])  # another seed
  assert (masks[100] & ~masks[101]).any()  # another budget: another draw, not one more entry
  # Uniform over positions: each of 20 entries is kept in about a quarter of 400 draws.
  kept = sum(random_mask.draw(4, 5, 5, seed).astype(int) for seed in range(400))
  assert kept.min() > 70 and kept.max() < 130


# ----------------------------------------------------------------------------- QR

QR_FIELDS = (3, 10, 7, 4)  # with m = 4: plain, split (3 quotients), split (2), plain (V = m)


def qr_tables(rng, dim, buckets=4):
  tables = {}
  for f, v in enumerate(QR_FIELDS):
    if v <= buckets:
      tables[f'field_{f}'] = rng.normal(size=(v, dim)).astype(np.float32)
    else:
      tables[f'quotient_{f}'] = rng.normal(size=(-(-v // buckets), dim)).astype(np.float32)
      tables[f'remainder_{f}'] = rng.normal(size=(buckets, dim)).astype(np.float32)
  return tables


def loop_rows(tables, ids, buckets, combine):
  """The QR embedding of every id, one id at a time in Python."""
  out = np.zeros(ids.shape + (tables['field_0'].shape[1],), np.float32)
  for b in range(ids.shape[0]):
    for f in range(ids.shape[1]):
      x = int(ids[b, f])
      if f'field_{f}' in tables:
        out[b, f] = tables[f'field_{f}'][x]
        continue
      q, r = x // buckets, x - buckets * (x // buckets)
      assert (q, r) == divmod(x, buckets)
      a, c = tables[f'quotient_{f}'][q], tables[f'remainder_{f}'][r]
      out[b, f] = a * c if combine == 'product' else a + c
  return out


def every_id():
  """Rows covering every id of every field ``[max V, F]``."""
  return np.stack([np.arange(max(QR_FIELDS)) % v for v in QR_FIELDS], axis=1).astype(np.int32)


def test_qr_indices_are_quotient_and_remainder():
  ids = jnp.arange(23, dtype=jnp.int32)
  q, r = qr.split(ids, 4)
  np.testing.assert_array_equal(q, [x // 4 for x in range(23)])
  np.testing.assert_array_equal(r, [x % 4 for x in range(23)])


@pytest.mark.parametrize('combine', ['product', 'sum'])
def test_qr_rows_and_stored_layout_match_a_loop_over_ids(combine):
  rng = np.random.default_rng(1)
  tables = qr_tables(rng, dim=5)
  ids = every_id()
  expected = loop_rows(tables, ids, 4, combine)
  got = qr.qr_rows({k: jnp.asarray(v) for k, v in tables.items()}, jnp.asarray(ids), combine)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # The stored layout: the same tables, the layout's name says how they compose.
  arrays = qr.encode(tables)
  assert set(arrays) == set(tables)
  assert sum(a.nbytes for a in arrays.values()) == 4 * qr.stored_params(QR_FIELDS, 5, 4)
  lookup = qr.METHOD.layouts[f'qr_{combine}'].lookup
  served = lookup({k: jnp.asarray(v) for k, v in arrays.items()}, jnp.asarray(ids), None, 5)
  np.testing.assert_allclose(served, expected, rtol=1e-6)


@pytest.mark.parametrize('combine', ['product', 'sum'])
def test_qr_layer_has_the_documented_tables_and_spread(combine):
  layer = qr.QREmbedding(QR_FIELDS, 6, 4, combine)
  ids = jnp.asarray(every_id())
  variables = layer.init(jax.random.PRNGKey(0), ids)
  params = jax.tree.map(np.asarray, dict(variables['params']))
  assert {k: v.shape for k, v in params.items()} == {
      'field_0': (3, 6), 'quotient_1': (3, 6), 'remainder_1': (4, 6),
      'quotient_2': (2, 6), 'remainder_2': (4, 6), 'field_3': (4, 6)}
  np.testing.assert_allclose(layer.apply(variables, ids),
                             loop_rows(params, np.asarray(ids), 4, combine), rtol=1e-6)
  # Composed entries have the variance of the uniform table's Xavier-uniform entries.
  big = qr.QREmbedding((40_000,), 16, 200, combine)
  all_ids = jnp.arange(40_000, dtype=jnp.int32)[:, None]
  rows = big.apply(big.init(jax.random.PRNGKey(1), all_ids[:2]), all_ids)
  bound = np.sqrt(6 / (40_000 + 16))
  assert np.var(np.asarray(rows)) == pytest.approx(bound ** 2 / 3, rel=0.05)


TINY_FIELDS = (3, 40, 3, 40, 3, 40)  # compare.py:tiny, d = 8, uniform table 1032 entries


def test_qr_budget_search_picks_the_largest_table_within_the_budget():
  # P(m) / 8 = 3 * (3 fields: 3, or 4 for m < 3) + 3 * (40 fields: ceil(40 / m) + m, or 40).
  assert qr.stored_params(TINY_FIELDS, 8, 1) == 8 * (3 * 4 + 3 * 41)  # worse than plain
  assert qr.stored_params(TINY_FIELDS, 8, 15) == 8 * (9 + 3 * 18) == 504
  assert qr.stored_params(TINY_FIELDS, 8, 40) == 8 * 129
  # 516: 3 * (ceil(40 / m) + m) <= 55.5: 18 at m = 15 is the most (m = 16 costs 19).
  assert qr.choose_buckets(TINY_FIELDS, 8, 516) == 15
  # 413: 14 at m = 4, 9 and 10 alike: the largest m.
  assert qr.choose_buckets(TINY_FIELDS, 8, 413) == 10
  # The whole table: 40 at m = 38 (2 + 38) and at m >= 40 (plain): the largest, 40.
  assert qr.choose_buckets(TINY_FIELDS, 8, 1032) == 40
  # Against every m by brute force.
  for budget in range(384, 1100, 7):
    costs = {m: 8 * sum(v if v <= m else -(-v // m) + m for v in TINY_FIELDS)
             for m in range(1, 41)}
    best = max(c for c in costs.values() if c <= budget)
    assert qr.choose_buckets(TINY_FIELDS, 8, budget) == max(
        m for m, c in costs.items() if c == best)
  # Below the smallest QR table (13 per 40-field at m = 5..8: 384 entries) nothing fits.
  with pytest.raises(ConfigError, match=r'qr\.budgets.*384'):
    qr.choose_buckets(TINY_FIELDS, 8, 383)


# ----------------------------------------------------------------------------- end to end


def tiny(**overrides):
  config = compare.get_config('tiny')
  config.methods = ('magnitude', 'random', 'qr')
  for key, value in overrides.items():
    section, _, leaf = key.rpartition('.')
    (config[section] if section else config)[leaf] = value
  return config


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('baselines'))
  return workdir, experiment.run(tiny(), workdir)


@pytest.fixture(scope='module')
def data():
  return load_dataset(tiny().data)


def test_end_to_end_with_fm(finished, data):
  workdir, rows = finished
  by_method = {}
  for row in rows[:-1]:
    by_method.setdefault(row['method'], []).append(row)
  assert set(by_method) == {'magnitude', 'random', 'qr'}
  for name in ('magnitude', 'random'):
    assert [r['budget'] for r in by_method[name]] == [516, 206]
    for row in by_method[name]:
      assert row['params'] == row['nonzeros'] == row['budget']
      assert row['bytes'] == 4 * row['params'] + 1 * 129  # bitmask at d = 8: a mask per row
      assert 0.5 < row['test_auc'] < 1
  assert [(r['budget'], r['buckets'], r['params']) for r in by_method['qr']] == [
      (516, 15, 504), (413, 10, 408)]
  for row in by_method['qr']:
    assert row['bytes'] == 4 * row['params'] and 0.5 < row['test_auc'] < 1
  # Magnitude reused the uniform run it pre-trained: ue_d8 is finished, and its masks are the
  # selection from that run's best table.
  with open(os.path.join(workdir, 'magnitude', 'result.json')) as f:
    assert json.load(f)['pretrain_run'] == 'ue_d8'
  config = tiny()
  ctx = Context(config, data, workdir, None)
  plain = build_stage(config, data, 'plain')
  best = wd.restore_best(workdir, 'ue_d8', plain.abstract_state())
  table = np.asarray(best.params['embedding']['table'])[:129]
  for cand in magnitude.candidates(ctx):
    np.testing.assert_array_equal(magnitude._mask(ctx, cand),
                                  magnitude.select(table, cand.info['budget'], data.field_dims))


def test_retraining_starts_from_the_uniform_models_initial_values_times_the_mask(finished, data):
  workdir, _ = finished
  config = tiny()
  ctx = Context(config, data, workdir, None)
  v0 = np.asarray(build_stage(config, data, 'plain').initial_state().params['embedding']['table'])
  for method in (magnitude, random_mask):
    cand = method.candidates(ctx)[1]
    stage = method.METHOD.build(ctx, cand)
    state, constants = method.initial(ctx, cand, stage)
    mask = np.asarray(constants['ticket']['embedding']['mask'])
    assert mask[:129].sum() == cand.info['budget'] and not mask[129:].any()
    np.testing.assert_array_equal(mask[:129], method._mask(ctx, cand))
    np.testing.assert_array_equal(np.asarray(state.params['embedding']['table']), v0)


def test_finetuning_starts_from_the_trained_uniform_model(finished, data):
  workdir, _ = finished
  config = tiny(**{'magnitude.init': 'finetune'})
  ctx = Context(config, data, workdir, None)
  plain = build_stage(config, data, 'plain')
  best = wd.restore_best(workdir, 'ue_d8', plain.abstract_state())
  cand = magnitude.candidates(ctx)[0]
  state, _ = magnitude.initial(ctx, cand, magnitude.METHOD.build(ctx, cand))
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(best.params)):
    np.testing.assert_array_equal(a, b)
  assert int(state.step) == 0


def test_searches_are_skipped_once_finished(finished, data):
  workdir, rows = finished
  marks = {n: os.path.getmtime(os.path.join(workdir, n, 'result.json'))
           for n in ('magnitude', 'random')}
  again = experiment.run(tiny(), workdir)
  assert [r['params'] for r in again] == [r['params'] for r in rows]
  assert [r['test_auc'] for r in again] == [r['test_auc'] for r in rows]
  for name, mark in marks.items():
    assert os.path.getmtime(os.path.join(workdir, name, 'result.json')) == mark


def test_a_search_stopped_before_its_done_marker_ends_with_the_same_masks(finished, tmp_path):
  """Killed between the masks and result.json: the search runs again, keeps the masks it
  wrote (a checkpoint step is never overwritten) and writes the same result."""
  workdir = str(tmp_path / 'copy')
  shutil.copytree(finished[0], workdir)
  before = {n: read_tree(os.path.join(workdir, n)) for n in ('magnitude', 'random')}
  for name in ('magnitude', 'random'):
    os.remove(os.path.join(workdir, name, 'result.json'))
  rows = experiment.run(tiny(), workdir)
  assert [r['params'] for r in rows] == [r['params'] for r in finished[1]]
  for name, arrays in before.items():
    after = read_tree(os.path.join(workdir, name))
    assert after.keys() == arrays.keys() and arrays
    for key in arrays:
      np.testing.assert_array_equal(after[key], arrays[key], err_msg=key)
    assert os.path.exists(os.path.join(workdir, name, 'result.json'))


@pytest.mark.parametrize('model, methods, overrides', [
    ('autoint_plus', ('magnitude',), {'magnitude.scope': 'field', 'magnitude.init': 'finetune'}),
    ('deepfm', ('qr',), {'qr.combine': 'sum'}),
])
def test_end_to_end_with_other_models(tmp_path, model, methods, overrides):
  config = tiny(**overrides)
  config.methods = methods
  config.model.name = model
  config.model.mlp_dims = (16,)
  config.train.max_epochs = 1
  for name in methods:
    config[name].budgets = config[name].budgets[1:]
  rows = experiment.run(config, str(tmp_path))
  assert [r['method'] for r in rows[:-1]] == list(methods)
  for row in rows[:-1]:
    assert 0.5 < row['test_auc'] < 1
  if 'magnitude' in methods:
    assert rows[0]['params'] == rows[0]['budget'] == 206
    sizes = np.asarray(rows[0]['field_mean_size']) * np.asarray(TINY_FIELDS)
    # Shares of 206 over fields of 24 and 320 entries (of 1032): floors 4 and 63 (201 in
    # all); the 5 units left go to the remainders 904 of the 40-fields, then 816 of the first
    # two 3-fields (equal remainders: the earlier fields).
    np.testing.assert_allclose(sizes, [5, 64, 5, 64, 4, 64])
  else:
    assert rows[0]['params'] == 408 and rows[0]['bytes'] == 4 * 408


def test_qr_budgets_below_its_smallest_table_have_no_model(data, tmp_path, capsys):
  # Tiny's smallest QR table is 384 of 1,032 entries: 0.5 fits (m=38 or the like), 0.2 does not.
  ctx = Context(tiny(**{'qr.budgets': (0.5, 0.2)}), data, str(tmp_path), None)
  qr.check(ctx)
  assert 'config key qr.budgets: budget 206 is below the smallest QR' in capsys.readouterr().out
  assert [c.info['budget'] for c in qr.candidates(ctx)] == [516]


@pytest.mark.parametrize('key, value', [
    ('magnitude.budgets', (2000,)), ('magnitude.budgets', ()), ('magnitude.scope', 'row'),
    ('magnitude.init', 'warm'), ('random.budgets', (1.5,)), ('qr.budgets', (0.2,)),
    ('qr.combine', 'concat'),
])
def test_bad_settings_name_their_key(tmp_path, key, value):
  with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
    experiment.run(tiny(**{key: value}), str(tmp_path))
  assert not os.listdir(tmp_path)
