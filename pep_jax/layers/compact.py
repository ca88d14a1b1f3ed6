"""Compact (stored) layouts of trained embeddings, and the lookups that read them.

A layout is a pair of functions:

* an encoder ``encode_<layout>(...) -> dict[str, np.ndarray]`` (numpy): from the trained arrays
  to exactly the arrays an artifact stores;
* a lookup ``<layout>_lookup(arrays, ids, gids, dim) -> [B, F, D] float32`` (pure JAX, jit-able,
  ``dim`` static): ``ids [B, F]`` per-field indices, ``gids [B, F]`` global rows. It gathers the
  looked-up rows only; no ``[N, D]`` table is ever built.

What a layout stores is what it costs: :func:`nbytes` of its arrays. With ``N`` features in
``F`` fields of ``vocab_f`` features, width ``D`` and float32 entries:

* ``dense``: ``table [N, D]``; ``4 N D`` bytes.
* ``bitmask`` (``D <= 32``): ``bits [N]`` (uint8/16/32, ``m`` bytes each), ``offsets [N]``
  (int32), ``values [nnz]``; ``N (m + 4) + 4 nnz``.
* ``csr``: ``indptr [N + 1]`` (int32), ``cols [nnz]`` (uint8/16, ``c`` bytes each),
  ``values [nnz]``; ``4 (N + 1) + (c + 4) nnz``.
* ``fieldwidth``: ``field_<f> [vocab_f, w_f]`` and ``proj_<f> [w_f, D]`` where ``w_f > 0``;
  ``4 sum_f w_f (vocab_f + D)``.
* ``fieldcols``: ``field_<f> [vocab_f, k_f]`` where ``k_f > 0``, ``columns [F, ceil(D / 8)]``
  (uint8); ``4 sum_f k_f vocab_f + F ceil(D / 8)``.
* ``mde``: ``block_<b> [n_b, w_b]``, ``proj_<b> [w_b, D]`` where ``w_b < D``, ``index [N]``
  (int32); ``4 params + 4 N``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pep_jax.layers.embedding import field_offsets


# ----------------------------------------------------------------------------- helpers


def smallest_uint(limit: int) -> np.dtype:
  """The narrowest unsigned dtype holding ``0 .. limit``."""
  for dtype in (np.uint8, np.uint16, np.uint32):
    if limit <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  raise ValueError(f'{limit} does not fit 32 bits')


def nbytes(arrays: dict[str, np.ndarray]) -> int:
  """Bytes a layout stores: the sum of its arrays' ``nbytes``."""
  return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def index_bits(n: int) -> int:
  """Bits of an index into ``n`` values: ``ceil(log2(n))`` (0 for a single value)."""
  return (int(n) - 1).bit_length()


def _zeros(gids: jax.Array, dim: int) -> jax.Array:
  return jnp.zeros(gids.shape + (dim,), jnp.float32)


# ----------------------------------------------------------------------------- dense


def encode_dense(table: np.ndarray) -> dict[str, np.ndarray]:
  """The ``dense`` layout of a ``[N, D]`` table: the table itself, ``4 N D`` bytes."""
  return {'table': np.ascontiguousarray(table, np.float32)}


def dense_lookup(arrays: dict[str, jax.Array], ids: jax.Array, gids: jax.Array,
                 dim: int) -> jax.Array:
  """``table[gids]``: ``table [N, D]``, ``gids [B, F]`` -> ``[B, F, D]``."""
  del ids, dim
  return jnp.take(arrays['table'], gids, axis=0)  # [B, F, D]


# ----------------------------------------------------------------------------- bitmask


def encode_bitmask(table: np.ndarray) -> dict[str, np.ndarray]:
  """The ``bitmask`` layout of a ``[N, D]`` table, ``D <= 32``; see :func:`bitmask_lookup`.

  Bytes: ``N (m + 4) + 4 nnz`` with ``m`` the bytes of a ``D``-bit mask (1, 2 or 4).
  """
  dim = table.shape[1]
  if dim > 32:
    raise ValueError(f'the bitmask layout holds at most 32 dimensions, the table has {dim}; '
                     'use the csr layout')
  nonzero = table != 0  # [N, D]
  weights = np.uint64(1) << np.arange(dim, dtype=np.uint64)
  bits = (nonzero.astype(np.uint64) * weights).sum(axis=1)
  counts = nonzero.sum(axis=1)
  offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
  return {'bits': bits.astype(smallest_uint((1 << dim) - 1)), 'offsets': offsets,
          'values': table[nonzero].astype(np.float32)}


def bitmask_lookup(arrays: dict[str, jax.Array], ids: jax.Array, gids: jax.Array,
                   dim: int) -> jax.Array:
  """Rows of a table stored as per-feature bit masks and packed non-zero values.

  Entry ``k`` of row ``g`` is ``values[offsets[g] + popcount(bits[g] & (2^k - 1))]`` when bit
  ``k`` of ``bits[g]`` is set, else 0.

  Args:
    arrays: ``bits`` uint ``[N]`` (bit ``k`` set where entry ``k`` of the row is non-zero),
      ``offsets`` int32 ``[N]`` (position in ``values`` of the row's first non-zero entry),
      ``values [nnz]`` (non-zero entries, row by row, dimension order inside a row).
    ids: unused.
    gids: int ``[B, F]`` table rows.
    dim: ``D``.

  Returns:
    ``[B, F, D]``.
  """
  del ids
  bits, offsets, values = arrays['bits'], arrays['offsets'], arrays['values']
  if values.shape[0] == 0:
    return _zeros(gids, dim)
  row_bits = jnp.take(bits, gids, axis=0)[..., None]  # [B, F, 1]
  k = jnp.arange(dim, dtype=bits.dtype)
  one = jnp.ones((), bits.dtype)
  present = (row_bits >> k) & one  # [B, F, D]
  before = jax.lax.population_count(row_bits & ((one << k) - one)).astype(jnp.int32)
  pos = jnp.take(offsets, gids, axis=0)[..., None] + before  # [B, F, D]
  return jnp.where(present == one, jnp.take(values, pos, mode='clip'), 0).astype(jnp.float32)


# ----------------------------------------------------------------------------- csr


def encode_csr(table: np.ndarray) -> dict[str, np.ndarray]:
  """The ``csr`` layout of a ``[N, D]`` table; see :func:`csr_lookup`.

  Bytes: ``4 (N + 1) + (c + 4) nnz`` with ``c`` the bytes of a column index (1 up to 256
  dimensions, else 2).
  """
  nonzero = table != 0
  indptr = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int32)
  cols = np.nonzero(nonzero)[1].astype(smallest_uint(table.shape[1] - 1))
  return {'indptr': indptr, 'cols': cols, 'values': table[nonzero].astype(np.float32)}


def csr_lookup(arrays: dict[str, jax.Array], ids: jax.Array, gids: jax.Array,
               dim: int) -> jax.Array:
  """Rows of a table in compressed sparse rows: row ``g`` holds
  ``values[indptr[g]:indptr[g+1]]`` at the dimensions ``cols[indptr[g]:indptr[g+1]]``.

  Args:
    arrays: ``indptr`` int32 ``[N + 1]``, ``cols`` uint ``[nnz]``, ``values [nnz]``.
    ids: unused.
    gids: int ``[B, F]`` table rows.
    dim: ``D``.

  Returns:
    ``[B, F, D]``.
  """
  del ids
  indptr, cols, values = arrays['indptr'], arrays['cols'], arrays['values']
  if values.shape[0] == 0:
    return _zeros(gids, dim)
  start = jnp.take(indptr, gids, axis=0)  # [B, F]
  length = jnp.take(indptr, gids + 1, axis=0) - start
  k = jnp.arange(dim, dtype=jnp.int32)
  pos = start[..., None] + k  # [B, F, D]: up to D entries per row
  present = k < length[..., None]
  val = jnp.where(present, jnp.take(values, pos, mode='clip'), 0).astype(jnp.float32)
  col = jnp.where(present, jnp.take(cols, pos, mode='clip').astype(jnp.int32), dim)
  flat_val, flat_col = val.reshape(-1, dim), col.reshape(-1, dim)  # [B * F, D]
  # Entries past a row's length go to the spare slot D, dropped afterwards.
  rows = jax.vmap(lambda c, v: jnp.zeros(dim + 1, jnp.float32).at[c].set(v))(flat_col, flat_val)
  return rows[:, :dim].reshape(gids.shape + (dim,))


# ----------------------------------------------------------------------------- fieldwidth


def encode_fieldwidth(params: dict) -> dict[str, np.ndarray]:
  """The ``fieldwidth`` layout of :class:`~pep_jax.layers.embedding.FieldWidthEmbedding`
  params: its per-field tables and projections, as they are.

  Bytes: ``4 sum_{f: w_f > 0} w_f (vocab_f + D)``.

  Args:
    params: ``field_<f> [vocab_f, w_f]`` and ``proj_<f> [w_f, D]`` for every field with
      ``w_f > 0``.

  Raises:
    ValueError: for a table without its projection (or the reverse), another name, or shapes
      that do not chain.
  """
  arrays = {}
  for name in sorted(params):
    kind, _, field = name.partition('_')
    if kind not in ('field', 'proj') or not field.isdigit():
      raise ValueError(f'fieldwidth layout: unexpected parameter {name!r}; expected field_<f> '
                       'and proj_<f>')
    if f'field_{field}' not in params or f'proj_{field}' not in params:
      raise ValueError(f'fieldwidth layout: field {field} needs both field_{field} and '
                       f'proj_{field}')
    arrays[name] = np.ascontiguousarray(params[name], np.float32)
  for name, table in arrays.items():
    if name.startswith('field_'):
      proj = arrays['proj_' + name[len('field_'):]]
      if table.ndim != 2 or proj.ndim != 2 or table.shape[1] != proj.shape[0]:
        raise ValueError(f'fieldwidth layout: {name} {table.shape} does not chain with its '
                         f'projection {proj.shape}')
  return arrays


def fieldwidth_lookup(arrays: dict[str, jax.Array], ids: jax.Array, gids: jax.Array,
                      dim: int) -> jax.Array:
  """``e_f = field_f[ids_f] @ proj_f``; zeros for a field without a table (``w_f = 0``).

  Args:
    arrays: ``field_<f> [vocab_f, w_f]``, ``proj_<f> [w_f, D]``.
    ids: int ``[B, F]`` per-field indices.
    gids: unused.
    dim: ``D``.

  Returns:
    ``[B, F, D]``.
  """
  del gids
  fields = []
  for f in range(ids.shape[1]):
    if f'field_{f}' in arrays:
      rows = jnp.take(arrays[f'field_{f}'], ids[:, f], axis=0)  # [B, w_f]
      fields.append(rows @ arrays[f'proj_{f}'])  # [B, D]
    else:
      fields.append(jnp.zeros((ids.shape[0], dim), jnp.float32))
  return jnp.stack(fields, axis=1)  # [B, F, D]


# ----------------------------------------------------------------------------- fieldcols


def encode_fieldcols(table: np.ndarray, mask: np.ndarray,
                     field_dims: Sequence[int]) -> dict[str, np.ndarray]:
  """The ``fieldcols`` layout of ``table * mask``, field ``f`` keeping the same columns in
  every row (SSEDS with ``align='pad'`` at field granularity).

  Stored: ``field_<f> [vocab_f, k_f]`` (the kept columns of the field's rows, in column order)
  for every field with ``k_f > 0`` kept columns, and ``columns [F, ceil(D / 8)]`` uint8, bit
  ``j`` of byte ``c`` of row ``f`` set where field ``f`` keeps dimension ``8 c + j``. Bytes:
  ``4 sum_f vocab_f k_f + F ceil(D / 8)``.

  Args:
    table: ``[N, D]`` the real rows; entries outside the mask are not stored.
    mask: bool ``[F, D]``, the kept (field, dimension) slots.
    field_dims: ``vocab_f`` of each field, ``sum = N``.
  """
  table = np.asarray(table, np.float32)
  mask = np.asarray(mask, bool)
  dims = [int(v) for v in field_dims]
  if table.ndim != 2 or table.shape[0] != sum(dims):
    raise ValueError(f'fieldcols layout: table {table.shape} for fields of {sum(dims)} rows')
  if mask.shape != (len(dims), table.shape[1]):
    raise ValueError(f'fieldcols layout: mask {mask.shape}, expected '
                     f'{(len(dims), table.shape[1])} (fields, dimensions)')
  arrays = {}
  for f, (start, vocab) in enumerate(zip(field_offsets(dims), dims)):
    cols = np.flatnonzero(mask[f])
    if len(cols):
      arrays[f'field_{f}'] = np.ascontiguousarray(table[start:start + vocab][:, cols])
  arrays['columns'] = np.packbits(mask, axis=1, bitorder='little')  # [F, ceil(D / 8)]
  return arrays


def fieldcols_lookup(arrays: dict[str, jax.Array], ids: jax.Array, gids: jax.Array,
                     dim: int) -> jax.Array:
  """Rows of ``table * mask`` from the kept columns of each field.

  ``e_f[cols_f] = field_f[ids_f]`` and 0 elsewhere, ``cols_f`` the set bits of
  ``columns[f]`` in increasing order (``k_f`` of them, the table's static width).

  Args:
    arrays: ``field_<f> [vocab_f, k_f]``, ``columns`` uint8 ``[F, ceil(D / 8)]``.
    ids: int ``[B, F]`` per-field indices.
    gids: unused.
    dim: ``D``.

  Returns:
    ``[B, F, D]``.
  """
  del gids
  columns = arrays['columns']
  fields = []
  for f in range(ids.shape[1]):
    out = jnp.zeros((ids.shape[0], dim), jnp.float32)  # [B, D]
    if f'field_{f}' in arrays:
      table = arrays[f'field_{f}']  # [vocab_f, k_f]
      kept = jnp.unpackbits(columns[f], bitorder='little')[:dim]  # [D]
      cols = jnp.nonzero(kept, size=table.shape[1])[0]  # [k_f]
      out = out.at[:, cols].set(jnp.take(table, ids[:, f], axis=0))
    fields.append(out)
  return jnp.stack(fields, axis=1)  # [B, F, D]


# ----------------------------------------------------------------------------- mde


def mde_index_shift(block_sizes: Sequence[int]) -> int:
  """Low bits of an MDE ``index`` holding the row within its block: the bit length of
  ``max_b n_b - 1``, at least 1."""
  return max(1, index_bits(max(int(n) for n in block_sizes)))


def _mde_blocks(arrays: dict) -> int:
  count = 0
  while f'block_{count}' in arrays:
    count += 1
  return count


def encode_mde(params: dict, block: np.ndarray, local: np.ndarray) -> dict[str, np.ndarray]:
  """The ``mde`` layout of :class:`~pep_jax.methods.mde.MDEEmbedding` params and layout.

  Stored: the blocks ``block_<b> [n_b, w_b]`` and projections ``proj_<b> [w_b, D]`` as they
  are, and one int32 per feature locating its row,

      index[r] = block[r] << shift | local[r],   shift = mde_index_shift(n),

  so bytes are ``4 params + 4 N``.

  Args:
    params: ``block_<b>`` for ``b = 0 .. B-1`` and ``proj_<b>`` where ``w_b < D``.
    block: ``[N]`` int, the block of every feature.
    local: ``[N]`` int, its row in that block.

  Raises:
    ValueError: for inconsistent arrays, or more blocks than the ``31 - shift`` bits left in an
      int32 can number.
  """
  count = _mde_blocks(params)
  names = {f'{kind}_{b}' for kind in ('block', 'proj') for b in range(count)}
  if count == 0 or not set(params) <= names:
    raise ValueError(f'mde layout: expected block_0 .. block_<B-1> and some proj_<b>, got '
                     f'{sorted(params)}')
  sizes = [int(params[f'block_{b}'].shape[0]) for b in range(count)]
  shift = mde_index_shift(sizes)
  if index_bits(count) > 31 - shift:
    raise ValueError(f'mde layout: {count} blocks of up to {max(sizes)} rows do not fit one '
                     f'int32 index ({shift} bits for the row leave {31 - shift} for the block)')
  block = np.asarray(block, np.int64)
  local = np.asarray(local, np.int64)
  if block.shape != local.shape or block.ndim != 1:
    raise ValueError(f'mde layout: block {block.shape} and local {local.shape} must be [N]')
  if len(block) and (block.min() < 0 or block.max() >= count
                     or local.min() < 0 or (local >= np.asarray(sizes)[block]).any()):
    raise ValueError('mde layout: a feature points outside the blocks')
  arrays = {name: np.ascontiguousarray(value, np.float32) for name, value in params.items()}
  arrays['index'] = (block << shift | local).astype(np.int32)
  return arrays


def mde_lookup(arrays: dict[str, jax.Array], ids: jax.Array, gids: jax.Array,
               dim: int) -> jax.Array:
  """``e = block_b[l] @ proj_b`` (``block_b[l]`` where ``w_b = D``), ``(b, l)`` unpacked from
  ``index[gids]``.

  Every block is gathered at the clipped ``l`` of every lookup, so a lookup reads
  ``sum_b w_b`` entries; with the blocks stored apart, reading only the feature's own block
  in one gather would need their concatenation (a copy of every block on each call). The
  narrow blocks' rows, zero outside the feature's own block, are laid side by side and
  projected in one matmul against the projections stacked ``[sum_{w_b < D} w_b, D]``: one
  GEMM per lookup instead of one per block, the same multiply-adds (the zeros add exactly
  nothing), and full-width rows are selected as they are.

  Args:
    arrays: ``block_<b> [n_b, w_b]``, ``proj_<b> [w_b, D]``, ``index`` int32 ``[N]``.
    ids: unused.
    gids: int ``[B, F]`` table rows.
    dim: ``D``.

  Returns:
    ``[B, F, D]``.
  """
  del ids
  count = _mde_blocks(arrays)
  shift = mde_index_shift([arrays[f'block_{b}'].shape[0] for b in range(count)])
  index = jnp.take(arrays['index'], gids, axis=0)  # [B, F]
  block, local = index >> shift, index & ((1 << shift) - 1)
  narrow, projections, full = [], [], []
  for b in range(count):
    mine = (block == b)[..., None]  # [B, F, 1]
    rows = jnp.take(arrays[f'block_{b}'], local, axis=0, mode='clip')  # [B, F, w_b]
    if f'proj_{b}' in arrays:
      narrow.append(jnp.where(mine, rows, 0))
      projections.append(arrays[f'proj_{b}'])
    else:
      full.append((mine, rows))
  out = _zeros(gids, dim)
  if narrow:
    out = jnp.concatenate(narrow, axis=-1) @ jnp.concatenate(projections, axis=0)  # [B, F, D]
  for mine, rows in full:
    out = jnp.where(mine, rows, out)
  return out
