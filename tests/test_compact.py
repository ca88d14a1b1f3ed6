"""Compact layouts: each lookup reads back the table it was given and stores what its method counts.

Every case encodes a small random table and keeps the dense ``[N, D]`` numpy table it stands
for. Layouts with a projection (fieldwidth, mde) use entries on a grid of 1/8 in [-1, 1], so
every product and sum of the few terms a row needs is exact in float32 in any order: their
lookups must match the numpy table exactly too. Stored bytes are compared with each layout's
bytes formula as the methods document it (docs/methods.md), computed by hand. Each case is also
quantised to 8 and 4 bits: its lookup must read the table that the dequantised arrays stand
for, and store the codes, scales and offsets of its tables instead of their floats.
"""

import types
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pep_jax.config import default_config
from pep_jax.layers import compact, quant
from pep_jax.layers.embedding import FieldWidthEmbedding, field_offsets
from pep_jax.methods import dartsemb, mde, mgqe, sseds
from pep_jax.methods.base import Candidate

FIELD_DIMS = (5, 1, 7, 3)  # one field of a single feature
NUM_ROWS = sum(FIELD_DIMS)
BATCH = 24


def sparse_table_bytes(nonzeros: int, num_rows: int, dim: int) -> int:
  """The bytes of a pruned table's ``bitmask``/``csr`` layout, counted by hand (4-byte values).

  Up to 32 dimensions, a bit mask of each feature's kept dimensions (1, 2 or 4 bytes) and the
  float values: ``N * b + 4 * nnz`` (each row's first value is a prefix sum of the masks'
  popcounts, derived when the artifact is loaded). Wider tables as CSR over features: each
  row's length (1 byte up to 255 dimensions, else 2), 1- or 2-byte column indices and the
  values.
  """
  if dim <= 32:
    mask_bytes = 1 if dim <= 8 else 2 if dim <= 16 else 4
    return int(num_rows) * mask_bytes + 4 * int(nonzeros)
  column_bytes = 1 if dim <= 256 else 2
  length_bytes = 1 if dim <= 255 else 2
  return (4 + column_bytes) * int(nonzeros) + length_bytes * int(num_rows)


class Case(NamedTuple):
  """An encoded table: ``arrays`` stand for ``table [N, D]``; ``accounted`` are the bytes its
  layout's formula gives."""

  layout: compact.Layout
  arrays: dict
  table: np.ndarray
  accounted: int


def grid(rng, shape) -> np.ndarray:
  """Entries ``k / 8``, ``|k| <= 8``: products and short sums of them are exact in float32."""
  return (rng.integers(-8, 9, size=shape) / 8).astype(np.float32)


def context(dim: int, counts=None, **sections) -> Any:
  """What the methods' ``size`` reads of a :class:`pep_jax.methods.base.Context`."""
  config = default_config()
  config.embedding.dim = dim
  for section, values in sections.items():
    for key, value in values.items():
      config[section][key] = value
  data = types.SimpleNamespace(field_dims=np.asarray(FIELD_DIMS), num_features=NUM_ROWS,
                               num_fields=len(FIELD_DIMS))
  return types.SimpleNamespace(config=config, data=data, train_counts=lambda: counts)


def skewed_counts(rng) -> np.ndarray:
  """Training counts from a few hundred down to never seen."""
  counts = (400 * rng.random(NUM_ROWS) ** 6).astype(np.int64)
  counts[rng.permutation(NUM_ROWS)[:3]] = 0
  return counts


def sparse_table(rng, dim: int) -> np.ndarray:
  table = rng.standard_normal((NUM_ROWS, dim)).astype(np.float32)
  table[rng.random(table.shape) < 0.6] = 0
  table[2] = 0  # a row of zeros
  table[3] = rng.standard_normal(dim)  # a full row
  return table


# ----------------------------------------------------------------------------- cases


def dense_case(rng) -> Case:
  dim = 12
  table = rng.standard_normal((NUM_ROWS, dim)).astype(np.float32)
  accounted = 4 * NUM_ROWS * dim
  return Case(compact.DENSE, compact.encode_dense(table), table, accounted)


def pruned_case(dim: int, encode: Callable, layout: compact.Layout):
  """A PEP ticket's table: ``b N + 4 nnz`` (bitmask: a ``b``-byte mask per row, the offsets are
  derived) or ``N + 5 nnz`` (csr up to 255 dimensions: a byte per row length and per column)."""

  def make(rng) -> Case:
    table = sparse_table(rng, dim)
    nnz = int((table != 0).sum())
    if layout is compact.BITMASK:
      accounted = NUM_ROWS * (1 if dim <= 8 else 2 if dim <= 16 else 4) + 4 * nnz
    else:
      accounted = NUM_ROWS + 5 * nnz
    assert sparse_table_bytes(nnz, NUM_ROWS, dim) == accounted  # what PEP's summary counts
    return Case(layout, encode(table), table, accounted)

  return make


def fieldwidth_case(rng) -> Case:
  dim, widths = 12, (3, 0, 12, 1)  # a field without a table
  layer = FieldWidthEmbedding(FIELD_DIMS, dim, widths)
  shapes = layer.init(jax.random.key(0), jnp.zeros((1, len(FIELD_DIMS)), jnp.int32))['params']
  params = {name: grid(rng, value.shape) for name, value in shapes.items()}
  table = np.zeros((NUM_ROWS, dim), np.float32)
  for f, start in enumerate(field_offsets(FIELD_DIMS)):
    if widths[f]:
      table[start:start + FIELD_DIMS[f]] = params[f'field_{f}'] @ params[f'proj_{f}']
  accounted = dartsemb.accounting(FIELD_DIMS, widths, dim)['bytes']
  return Case(compact.FIELDWIDTH, compact.encode_fieldwidth(params), table, accounted)


def fieldcols_case(rng) -> Case:
  dim = 12  # columns take two bytes per field, the second one half used
  mask = rng.random((len(FIELD_DIMS), dim)) < 0.5
  mask[1] = False  # a field with no kept column
  mask[2] = True
  table = rng.standard_normal((NUM_ROWS, dim)).astype(np.float32)
  field_of_row = np.repeat(np.arange(len(FIELD_DIMS)), FIELD_DIMS)
  ctx = context(dim, sseds={'granularity': 'field', 'align': 'pad'})
  cand = Candidate('sseds', 'sseds_b1', 'b1', info={'budget': 1})
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(sseds, 'load_mask', lambda ctx, budget: mask)
    params = sseds.size(ctx, cand, None, None, None)['params']
  accounted = 4 * params + len(FIELD_DIMS) * -(-dim // 8)  # values and a bit per column
  return Case(compact.FIELDCOLS, compact.encode_fieldcols(table, mask, FIELD_DIMS),
              table * mask[field_of_row], accounted)


def mde_case(num_blocks: int, alpha: float):
  """An MDE table cut as :mod:`pep_jax.methods.mde` cuts it, counted by ``mde.accounting``."""

  def make(rng) -> Case:
    dim, counts = 12, skewed_counts(rng)
    block, local, sizes = mde.block_layout(counts, num_blocks)
    widths = mde.block_widths(mde.block_popularity(counts, block, num_blocks), dim, alpha)
    layer = mde.MDEEmbedding(FIELD_DIMS, dim, tuple(int(n) for n in sizes), widths)
    shapes = layer.init(jax.random.key(0), jnp.zeros((1, len(FIELD_DIMS)), jnp.int32))['params']
    params = {name: grid(rng, value.shape) for name, value in shapes.items()}
    table = np.zeros((NUM_ROWS, dim), np.float32)
    for row in range(NUM_ROWS):
      b = block[row]
      entries = params[f'block_{b}'][local[row]]
      table[row] = entries @ params[f'proj_{b}'] if f'proj_{b}' in params else entries
    accounted = mde.accounting(sizes, widths, dim, NUM_ROWS)['bytes']
    return Case(compact.MDE, compact.encode_mde(params, block, local), table, accounted)

  return make


def codes_from(rng, limits: np.ndarray, subspaces: int, num_centroids: int, sub_dim: int):
  """Random codes below each row's limit, random centroids and the table they stand for."""
  codes = (rng.random((len(limits), subspaces)) * limits[:, None]).astype(np.int64)
  centroids = rng.standard_normal((subspaces, num_centroids, sub_dim)).astype(np.float32)
  table = centroids[np.arange(subspaces), codes].reshape(len(limits), -1)
  return codes, centroids, table


def mgqe_case(frequent_fraction: float, rare_centroid_fraction: float):
  """MGQE's tiers (``mgqe.accounting``): 64 centroids, 3 subspaces of 2; with a rare fraction of
  1/8 the rare rows may use 8 centroids: 6- and 3-bit codes, rows of 18 and 9 bits."""

  def make(rng) -> Case:
    dim, subspaces, num_centroids = 6, 3, 64
    ctx = context(dim, skewed_counts(rng),
                  mgqe={'frequent_fraction': frequent_fraction,
                        'rare_centroid_fraction': rare_centroid_fraction})
    limits = mgqe._limits(ctx, num_centroids)  # the limits the method trains with
    codes, centroids, table = codes_from(rng, limits, subspaces, num_centroids,
                                         dim // subspaces)
    accounted = mgqe.accounting(NUM_ROWS, dim, subspaces, num_centroids, limits)['bytes']
    return Case(compact.CODES, compact.encode_codes(codes, centroids, limits), table,
                accounted)

  return make


def three_tier_case(rng) -> Case:
  """Limits 1, 5 and 64 (0-, 3- and 6-bit codes), tiers in 2 bits, 5 subspaces of 1."""
  dim, subspaces, num_centroids = 5, 5, 64
  limits = rng.choice(np.array([1, 5, 64]), size=NUM_ROWS)
  limits[:3] = (1, 5, 64)
  codes, centroids, table = codes_from(rng, limits, subspaces, num_centroids, 1)
  accounted = mgqe.accounting(NUM_ROWS, dim, subspaces, num_centroids, limits)['bytes']
  return Case(compact.CODES, compact.encode_codes(codes, centroids, limits), table,
              accounted)


CASES = {
    'dense': dense_case,
    'bitmask_d12': pruned_case(12, compact.encode_bitmask, compact.BITMASK),
    'bitmask_d32': pruned_case(32, compact.encode_bitmask, compact.BITMASK),
    'csr_d40': pruned_case(40, compact.encode_csr, compact.CSR),
    'fieldwidth': fieldwidth_case,
    'fieldcols': fieldcols_case,
    'mde_one_block': mde_case(1, 0.5),
    'mde_four_blocks': mde_case(4, 0.5),
    'mgqe_one_tier': mgqe_case(1.0, 0.125),
    'mgqe_two_tiers': mgqe_case(0.3, 0.125),
    'codes_three_tiers': three_tier_case,
}


@pytest.fixture(params=sorted(CASES), name='case')
def case_fixture(request) -> Case:
  return CASES[request.param](np.random.default_rng(sorted(CASES).index(request.param)))


def batches(seed: int, count: int = 3):
  """``(ids, gids)`` int32 ``[BATCH, F]``: random rows, the first and the last of every field."""
  rng = np.random.default_rng(seed)
  dims = np.asarray(FIELD_DIMS)
  for _ in range(count):
    ids = rng.integers(0, dims, size=(BATCH, len(dims)))
    ids[0], ids[1] = 0, dims - 1
    yield ids.astype(np.int32), (ids + field_offsets(FIELD_DIMS)).astype(np.int32)


def jitted(case: Case, traces: list):
  """The case's lookup, jitted, on the stored arrays and what its layout derives from them."""
  dim = case.table.shape[1]

  def lookup(arrays, ids, gids):
    traces.append(1)
    return case.layout.lookup(arrays, ids, gids, dim)

  return jax.jit(lookup)


def on_device(layout: compact.Layout, arrays: dict) -> dict:
  """Stored arrays as a server holds them: on the device, with the derived ones."""
  arrays = {k: v if isinstance(v, quant.Quantized) else jnp.asarray(v) for k, v in arrays.items()}
  return compact.with_derived(layout, arrays)


def quantized_case(case: Case, scheme: quant.Scheme) -> Case:
  """``case`` with its tables quantised: the table is what the dequantised arrays stand for,
  read by the float lookup; the bytes are the accounted ones with each table's ``4 size``
  replaced by its codes, ``4 ceil(size b / 32)`` bytes, and 4 (8 affine) bytes per group."""
  arrays = compact.quantize_arrays(case.layout, case.arrays, scheme)
  floats = {k: quant.dequantize(v) if isinstance(v, quant.Quantized) else v
            for k, v in arrays.items()}
  dim = case.table.shape[1]
  field = np.repeat(np.arange(len(FIELD_DIMS)), FIELD_DIMS)  # [N]: each row's field
  ids = np.zeros((NUM_ROWS, len(FIELD_DIMS)), np.int32)  # row g looked up in its own field
  ids[np.arange(NUM_ROWS), field] = np.arange(NUM_ROWS) - field_offsets(FIELD_DIMS)[field]
  gids = ids + field_offsets(FIELD_DIMS)
  rows = case.layout.lookup(on_device(case.layout, floats), jnp.asarray(ids), jnp.asarray(gids),
                            dim)  # [N, F, D]
  table = np.asarray(rows)[np.arange(NUM_ROWS), field]
  accounted = case.accounted
  for value in arrays.values():
    if isinstance(value, quant.Quantized):
      spec = value.spec
      groups = -(-(spec.size // spec.width) // spec.rows)
      words = -(-spec.size // (32 // spec.bits))  # the codes, packed in uint32 words
      accounted += 4 * words + (4 if spec.symmetric else 8) * groups - 4 * spec.size
  return Case(case.layout, arrays, table, accounted)


FORMS = {'float': None, 'int8': quant.SCHEMES['int8'], 'int4': quant.SCHEMES['int4'],
         'int4_symmetric_rows': quant.Scheme(4, 1), 'int8_affine_2': quant.Scheme(8, 2, False)}


@pytest.fixture(params=sorted(FORMS), name='form')
def form_fixture(request) -> str:
  return request.param


@pytest.fixture(name='stored')
def stored_fixture(case, form) -> Case:
  return case if FORMS[form] is None else quantized_case(case, FORMS[form])


# ----------------------------------------------------------------------------- tests


def test_lookup_reads_back_the_table(stored, form):
  arrays = on_device(stored.layout, stored.arrays)
  lookup = jitted(stored, [])
  exact = FORMS[form] is None or FORMS[form].symmetric
  for ids, gids in batches(0):
    rows = np.asarray(lookup(arrays, ids, gids))
    assert rows.dtype == np.float32
    if exact:
      np.testing.assert_array_equal(rows, stored.table[gids])  # [B, F, D], exactly
    else:  # an affine entry o + s u may be one fused multiply-add
      np.testing.assert_allclose(rows, stored.table[gids], rtol=1e-6, atol=1e-6)


def test_stored_bytes_are_the_accounting(stored):
  assert compact.nbytes(stored.arrays) == stored.accounted


def test_lookup_traces_once(stored):
  traces = []
  lookup = jitted(stored, traces)
  arrays = on_device(stored.layout, stored.arrays)
  for ids, gids in batches(1):
    lookup(arrays, ids, gids).block_until_ready()
  assert len(traces) == 1


def test_quantised_forms_store_fewer_bytes_and_keep_projections(case):
  int8 = compact.quantize_arrays(case.layout, case.arrays, quant.SCHEMES['int8'])
  int4 = compact.quantize_arrays(case.layout, case.arrays, quant.SCHEMES['int4'])
  assert compact.nbytes(int4) < compact.nbytes(int8) < compact.nbytes(case.arrays)
  for name, value in case.arrays.items():
    table = np.issubdtype(value.dtype, np.floating) and not name.startswith('proj_')
    assert isinstance(int8[name], quant.Quantized) == table, name


def test_derived_arrays_are_not_stored():
  table = sparse_table(np.random.default_rng(0), 12)
  stored = compact.encode_bitmask(table)
  assert set(stored) == {'bits', 'values'}
  counts = (table != 0).sum(axis=1)
  offsets = np.asarray(compact.bitmask_offsets({'bits': jnp.asarray(stored['bits'])})['offsets'])
  np.testing.assert_array_equal(offsets, np.cumsum(counts) - counts)
  stored = compact.encode_csr(table)
  assert set(stored) == {'lengths', 'cols', 'values'}
  indptr = compact.csr_indptr({'lengths': jnp.asarray(stored['lengths'])})['indptr']
  np.testing.assert_array_equal(indptr, np.concatenate([[0], np.cumsum(counts)]))


def test_mgqe_cases_have_the_tiers_they_claim():
  two = CASES['mgqe_two_tiers'](np.random.default_rng(0)).arrays
  assert two['code_bits'].tolist() == [3, 6] and 'tiers' in two
  one = CASES['mgqe_one_tier'](np.random.default_rng(0)).arrays
  assert one['code_bits'].tolist() == [6] and 'tiers' not in one


def test_mde_index_packs_block_and_row():
  params = {'block_0': np.zeros((5, 2), np.float32), 'block_1': np.zeros((3, 1), np.float32)}
  arrays = compact.encode_mde(params, np.array([1, 0, 0, 1]), np.array([2, 4, 0, 0]))
  assert compact.mde_index_shift([5, 3]) == 3
  assert arrays['index'].dtype == np.int32
  assert arrays['index'].tolist() == [1 << 3 | 2, 4, 0, 1 << 3]
  assert compact.mde_index_shift([1]) == 1


def test_mde_refuses_blocks_beyond_the_index_bits():
  # Zero-width blocks hold no entries: only their row counts matter here.
  wide = {f'block_{b}': np.zeros((2**30 if b == 0 else 1, 0), np.float32) for b in range(3)}
  with pytest.raises(ValueError, match='int32 index'):
    compact.encode_mde(wide, np.zeros(1, np.int64), np.zeros(1, np.int64))
  del wide['block_2']  # 30 bits for the row leave one for 2 blocks
  assert compact.encode_mde(wide, np.zeros(1, np.int64), np.zeros(1, np.int64))['index'].tolist() == [0]


def test_codes_streams_straddle_bytes():
  # Two rows of 3 codes of 3 bits: row 1 starts at bit 9, its codes cross byte boundaries.
  codes = np.array([[1, 7, 2], [5, 3, 6]])
  arrays = compact.encode_codes(codes, np.zeros((3, 8, 1), np.float32), np.array([8, 8]))
  bits = np.unpackbits(arrays['codes'], bitorder='little')
  values = [int(sum(bits[3 * i + j] << j for j in range(3))) for i in range(6)]
  assert values == codes.ravel().tolist() and arrays['codes'].nbytes == 3
