"""Compact (stored) layouts of trained embeddings, and the lookups that read them.

A layout is an encoder and a :class:`Layout`:

* an encoder ``encode_<layout>(...) -> dict[str, np.ndarray]`` (numpy): from the trained arrays
  to exactly the arrays an artifact stores;
* ``lookup(arrays, ids, gids, dim) -> [B, F, D] float32`` (pure JAX, jit-able, ``dim``
  static): ``ids [B, F]`` per-field indices, ``gids [B, F]`` global rows. It gathers the
  looked-up rows only; no ``[N, D]`` table is ever built;
* ``derive(arrays) -> dict`` (pure JAX), optional: the arrays the lookup needs that the stored
  ones determine (a pruned table's row offsets, a code stream's row positions). They are never
  stored: an ``O(N)`` pass computes them once when an artifact is loaded, and the lookup reads
  them beside the stored ones;
* ``float32``: names (prefixes) of float arrays the lookup reads whole, which stay float32 when
  the form is quantised (projections). Every other float array is a table the lookup gathers
  rows from, and may be a :class:`pep_jax.layers.quant.Quantized` array, read through
  :func:`pep_jax.layers.quant.take` (which dequantises the gathered rows only).

What a layout stores is what it costs: :func:`nbytes` of its arrays. With ``N`` features in
``F`` fields of ``vocab_f`` features, width ``D`` and float32 entries:

* ``dense``: ``table [N, D]``; ``4 N D`` bytes.
* ``bitmask`` (``D <= 32``): ``bits [N]`` (uint8/16/32, ``m`` bytes each), ``values [nnz]``;
  ``m N + 4 nnz``. Derived: ``offsets [N]``.
* ``csr``: ``lengths [N]`` (uint8/16, ``l`` bytes each), ``cols [nnz]`` (uint8/16, ``c`` bytes
  each), ``values [nnz]``; ``l N + (c + 4) nnz``. Derived: ``indptr [N + 1]``.
* ``fieldwidth``: ``field_<f> [vocab_f, w_f]`` and ``proj_<f> [w_f, D]`` where ``w_f > 0``;
  ``4 sum_f w_f (vocab_f + D)``.
* ``fieldcols``: ``field_<f> [vocab_f, k_f]`` where ``k_f > 0``, ``columns [F, ceil(D / 8)]``
  (uint8); ``4 sum_f k_f vocab_f + F ceil(D / 8)``.
* ``mde``: ``block_<b> [n_b, w_b]``, ``proj_<b> [w_b, D]`` where ``w_b < D``, ``index [N]``
  (int32); ``4 params + 4 N``.
* ``codes`` (MGQE): ``centroids [S, K, D_s]``, ``code_bits [T]`` (uint8) and the bit streams
  ``codes`` and ``tiers``; ``4 K D + T + ceil(code bits / 8) + ceil(tier bits / 8)``. Derived
  (``T > 1``): ``starts``, each row's first code bit.

A quantised form replaces each float table of ``size`` entries by its ``b``-bit codes, packed
in uint32 words, and a float32 scale per group of entries (and an offset, affine):
``4 ceil(size b / 32) + 4 G`` bytes (``+ 4 G``) instead of ``4 size``
(:mod:`pep_jax.layers.quant`).

A *bit stream* is a uint8 array read in little bit order: bit ``j`` of byte ``c`` is bit
``8 c + j`` of the stream. A value of ``w`` bits at stream bit ``p`` occupies bits
``p .. p + w - 1``, least significant first, and may straddle bytes; the last byte is padded
with zero bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pep_jax.layers import quant
from pep_jax.layers.embedding import field_offsets

_PACK_CHUNK = 1 << 20  # values packed at a time by _pack_bits: bits [chunk * width] uint8


# (arrays, per-field ids [B, F], global rows [B, F], width D) -> embeddings [B, F, D]
Lookup = Callable[[dict, jax.Array, jax.Array, int], jax.Array]


class Layout(NamedTuple):
  """How a stored layout is served.

  Attributes:
    lookup: ``(arrays, ids [B, F], gids [B, F], D) -> [B, F, D]``; ``arrays`` the stored ones
      (a table possibly :class:`~pep_jax.layers.quant.Quantized`) and the derived ones.
    derive: ``(stored arrays) -> {name: array}``, the arrays the lookup reads that the stored
      ones determine (computed once at load, never stored); None when there are none.
    float32: name prefixes of float arrays the lookup reads whole (projections); they are not
      quantised.
  """

  lookup: Lookup
  derive: Callable[[dict], dict] | None = None
  float32: tuple[str, ...] = ()


def with_derived(layout: Layout, arrays: dict) -> dict:
  """``arrays`` and what ``layout.derive`` computes from them (jnp; jit-able)."""
  if layout.derive is None:
    return dict(arrays)
  return {**arrays, **layout.derive(arrays)}


def quantize_arrays(layout: Layout, arrays: dict[str, np.ndarray],
                    scheme: quant.Scheme) -> dict:
  """Every float table of ``arrays`` quantised by ``scheme``; index arrays and the arrays
  ``layout.float32`` names stay as they are."""
  def table(name: str, array) -> bool:
    return (np.issubdtype(np.asarray(array).dtype, np.floating)
            and not any(name.startswith(prefix) for prefix in layout.float32))

  return {name: quant.quantize(a, scheme) if table(name, a) else a for name, a in arrays.items()}


# ----------------------------------------------------------------------------- helpers


def smallest_uint(limit: int) -> np.dtype:
  """The narrowest unsigned dtype holding ``0 .. limit``."""
  for dtype in (np.uint8, np.uint16, np.uint32):
    if limit <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  raise ValueError(f'{limit} does not fit 32 bits')


def nbytes(arrays: dict) -> int:
  """Bytes a layout stores: the sum of its arrays' ``nbytes`` (float or quantised)."""
  return int(sum(quant.nbytes(a) for a in arrays.values()))


def index_bits(n: int) -> int:
  """Bits of an index into ``n`` values: ``ceil(log2(n))`` (0 for a single value)."""
  return (int(n) - 1).bit_length()


def _pack_bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
  """A bit stream holding ``values[m]`` in ``widths[m]`` bits, one value after another.

  Args:
    values: ``[M]`` non-negative integers, ``values[m] < 2 ** widths[m]``.
    widths: ``[M]`` bits of each value, ``0 .. 32``.

  Returns:
    uint8 ``[ceil(sum(widths) / 8)]``.
  """
  values = np.asarray(values, np.uint64)
  widths = np.asarray(widths, np.int64)
  out, carry = [], np.zeros(0, np.uint8)
  for lo in range(0, len(values), _PACK_CHUNK):
    value, width = values[lo:lo + _PACK_CHUNK], widths[lo:lo + _PACK_CHUNK]
    owner = np.repeat(np.arange(len(value)), width)  # [bits]: the value each bit belongs to
    first = np.cumsum(width) - width
    place = (np.arange(len(owner)) - first[owner]).astype(np.uint64)  # bit of its value
    bits = np.concatenate([carry, ((value[owner] >> place) & 1).astype(np.uint8)])
    whole = len(bits) // 8 * 8
    out.append(np.packbits(bits[:whole], bitorder='little'))
    carry = bits[whole:]
  out.append(np.packbits(carry, bitorder='little'))
  return np.concatenate(out)


def _read_bits(stream: jax.Array, byte: jax.Array, bit: jax.Array, width: jax.Array,
               max_width: int) -> jax.Array:
  """Values of a bit stream: ``width`` bits starting at bit ``bit`` of byte ``byte``.

  ``value = (sum_j stream[byte + j] << 8 j) >> bit  mod 2 ** width``, from the
  ``ceil((7 + max_width) / 8)`` bytes a value may touch, each a clipped gather: bytes past the
  end of the stream only feed bits above ``width``, which are masked off.

  Args:
    stream: uint8 ``[L]``, ``L >= 1``.
    byte: int32 ``[...]``.
    bit: int32 ``[...]`` in ``0 .. 7``.
    width: int32 ``[...]`` in ``0 .. max_width``.
    max_width: static, at most 32.

  Returns:
    uint32 ``[...]``.
  """
  bit = bit.astype(jnp.uint32)
  value = jnp.zeros(byte.shape, jnp.uint32)
  for j in range(-(-(7 + max_width) // 8)):
    piece = jnp.take(stream, byte + j, mode='clip').astype(jnp.uint32)
    # Byte j holds value bits 8 j - bit .. 8 j - bit + 7 (a shift by 32 or more gives 0).
    value |= piece >> bit if j == 0 else piece << (jnp.uint32(8 * j) - bit)
  mask = (jnp.uint32(1) << width.astype(jnp.uint32)) - jnp.uint32(1)  # width 32: all ones
  return value & mask


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
  return quant.take(arrays['table'], gids)  # [B, F, D]


DENSE = Layout(dense_lookup)


# ----------------------------------------------------------------------------- bitmask


def encode_bitmask(table: np.ndarray) -> dict[str, np.ndarray]:
  """The ``bitmask`` layout of a ``[N, D]`` table, ``D <= 32``; see :func:`bitmask_lookup`.

  Bytes: ``m N + 4 nnz`` with ``m`` the bytes of a ``D``-bit mask (1, 2 or 4).
  """
  dim = table.shape[1]
  if dim > 32:
    raise ValueError(f'the bitmask layout holds at most 32 dimensions, the table has {dim}; '
                     'use the csr layout')
  nonzero = table != 0  # [N, D]
  weights = np.uint64(1) << np.arange(dim, dtype=np.uint64)
  bits = (nonzero.astype(np.uint64) * weights).sum(axis=1)
  return {'bits': bits.astype(smallest_uint((1 << dim) - 1)),
          'values': table[nonzero].astype(np.float32)}


def bitmask_offsets(arrays: dict) -> dict[str, jax.Array]:
  """``offsets [N]`` int32, the position in ``values`` of each row's first entry:
  ``offsets[g] = sum_{r < g} popcount(bits[r])``."""
  counts = jax.lax.population_count(arrays['bits']).astype(jnp.int32)  # [N]
  return {'offsets': jnp.cumsum(counts) - counts}


def bitmask_lookup(arrays: dict, ids: jax.Array, gids: jax.Array, dim: int) -> jax.Array:
  """Rows of a table stored as per-feature bit masks and packed non-zero values.

  Entry ``k`` of row ``g`` is ``values[offsets[g] + popcount(bits[g] & (2^k - 1))]`` when bit
  ``k`` of ``bits[g]`` is set, else 0.

  Args:
    arrays: ``bits`` uint ``[N]`` (bit ``k`` set where entry ``k`` of the row is non-zero),
      ``values [nnz]`` (non-zero entries, row by row, dimension order inside a row; float or
      quantised), and the derived ``offsets`` int32 ``[N]`` (:func:`bitmask_offsets`).
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
  start = jnp.take(offsets, gids, axis=0)  # [B, F]
  return jnp.where(present == one, quant.take_runs(values, start, before, mode='clip'),
                   0).astype(jnp.float32)  # entry k at start + before[k]


BITMASK = Layout(bitmask_lookup, bitmask_offsets)


# ----------------------------------------------------------------------------- csr


def encode_csr(table: np.ndarray) -> dict[str, np.ndarray]:
  """The ``csr`` layout of a ``[N, D]`` table; see :func:`csr_lookup`.

  Bytes: ``l N + (c + 4) nnz`` with ``l`` the bytes of a row length (1 up to 255 dimensions,
  else 2) and ``c`` those of a column index (1 up to 256 dimensions, else 2).
  """
  nonzero = table != 0
  lengths = nonzero.sum(axis=1).astype(smallest_uint(table.shape[1]))
  cols = np.nonzero(nonzero)[1].astype(smallest_uint(table.shape[1] - 1))
  return {'lengths': lengths, 'cols': cols, 'values': table[nonzero].astype(np.float32)}


def csr_indptr(arrays: dict) -> dict[str, jax.Array]:
  """``indptr [N + 1]`` int32, the prefix sum of the row lengths."""
  lengths = arrays['lengths'].astype(jnp.int32)
  return {'indptr': jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(lengths)])}


def csr_lookup(arrays: dict, ids: jax.Array, gids: jax.Array, dim: int) -> jax.Array:
  """Rows of a table in compressed sparse rows: row ``g`` holds
  ``values[indptr[g]:indptr[g+1]]`` at the dimensions ``cols[indptr[g]:indptr[g+1]]``.

  Args:
    arrays: ``lengths`` uint ``[N]``, ``cols`` uint ``[nnz]``, ``values [nnz]`` (float or
      quantised), and the derived ``indptr`` int32 ``[N + 1]`` (:func:`csr_indptr`).
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
  val = jnp.where(present, quant.take_runs(values, start, jnp.broadcast_to(k, pos.shape),
                                           mode='clip'), 0).astype(jnp.float32)
  col = jnp.where(present, jnp.take(cols, pos, mode='clip').astype(jnp.int32), dim)
  flat_val, flat_col = val.reshape(-1, dim), col.reshape(-1, dim)  # [B * F, D]
  # Entries past a row's length go to the spare slot D, dropped afterwards.
  rows = jax.vmap(lambda c, v: jnp.zeros(dim + 1, jnp.float32).at[c].set(v))(flat_col, flat_val)
  return rows[:, :dim].reshape(gids.shape + (dim,))


CSR = Layout(csr_lookup, csr_indptr)


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
    arrays: ``field_<f> [vocab_f, w_f]`` (float or quantised), ``proj_<f> [w_f, D]`` (float).
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
      rows = quant.take(arrays[f'field_{f}'], ids[:, f])  # [B, w_f]
      fields.append(rows @ arrays[f'proj_{f}'])  # [B, D]
    else:
      fields.append(jnp.zeros((ids.shape[0], dim), jnp.float32))
  return jnp.stack(fields, axis=1)  # [B, F, D]


FIELDWIDTH = Layout(fieldwidth_lookup, float32=('proj_',))


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
    arrays: ``field_<f> [vocab_f, k_f]`` (float or quantised), ``columns`` uint8
      ``[F, ceil(D / 8)]``.
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
      out = out.at[:, cols].set(quant.take(table, ids[:, f]))
    fields.append(out)
  return jnp.stack(fields, axis=1)  # [B, F, D]


FIELDCOLS = Layout(fieldcols_lookup)


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
    arrays: ``block_<b> [n_b, w_b]`` (float or quantised), ``proj_<b> [w_b, D]`` (float),
      ``index`` int32 ``[N]``.
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
    rows = quant.take(arrays[f'block_{b}'], local, mode='clip')  # [B, F, w_b]
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


MDE = Layout(mde_lookup, float32=('proj_',))


# ----------------------------------------------------------------------------- codes (MGQE)


def encode_codes(codes: np.ndarray, centroids: np.ndarray,
                 limits: np.ndarray) -> dict[str, np.ndarray]:
  """The ``codes`` layout of a product-quantised (MGQE) table.

  Row ``r`` may use the first ``limits[r]`` of the ``K`` centroids of each subspace; the ``T``
  distinct limits, in increasing order, are the tiers. Stored:

  * ``centroids [S, K, D_s]`` float32;
  * ``code_bits [T]`` uint8: bits of a code of tier ``t``, ``b_t = ceil(log2(limit_t))``;
  * ``codes``: one bit stream of every row's ``S`` codes, ``b_t`` bits each, rows in row order;
  * ``tiers``: a bit stream of every row's tier in ``ceil(log2(T))`` bits (absent when ``T = 1``).

  Bytes: ``4 K D + T + ceil(sum_r S b_{t(r)} / 8) + ceil(N ceil(log2 T) / 8)``, the
  accounting of :func:`pep_jax.methods.mgqe.accounting` plus the ``T`` bytes of ``code_bits``,
  which the lookup needs to find where a row's codes start.

  Args:
    codes: ``[N, S]`` int, ``0 <= codes[r, s] < limits[r]``.
    centroids: ``[S, K, D_s]``.
    limits: ``[N]`` int in ``1 .. K``.

  Raises:
    ValueError: for inconsistent arrays, or streams too long for int32 positions.
  """
  codes = np.asarray(codes, np.int64)
  limits = np.asarray(limits, np.int64)
  centroids = np.ascontiguousarray(centroids, np.float32)
  if codes.ndim != 2 or centroids.ndim != 3 or centroids.shape[0] != codes.shape[1]:
    raise ValueError(f'codes layout: codes {codes.shape} [N, S] do not fit centroids '
                     f'{centroids.shape} [S, K, D_s]')
  rows, subspaces = codes.shape
  if limits.shape != (rows,) or not ((1 <= limits) & (limits <= centroids.shape[1])).all():
    raise ValueError(f'codes layout: limits must be [{rows}] in 1..{centroids.shape[1]}')
  if ((codes < 0) | (codes >= limits[:, None])).any():
    raise ValueError('codes layout: a code is outside its row\'s limit')
  distinct, tier = np.unique(limits, return_inverse=True)
  code_bits = np.array([index_bits(limit) for limit in distinct], np.uint8)  # [T]
  row_bits = code_bits[tier].astype(np.int64)  # [N]: bits of each code of the row
  bits = int(row_bits.sum())  # the lookup's int32 prefix sums reach this, and bytes S bits / 8
  if bits >= 2**31 - 256 or subspaces * bits >= 8 * (2**31 - 8):
    raise ValueError(f'codes layout: {rows} rows of codes are too many for int32 positions')
  arrays = {'centroids': centroids, 'code_bits': code_bits,
            'codes': _pack_bits(codes.ravel(), np.repeat(row_bits, subspaces))}
  if len(distinct) > 1:
    arrays['tiers'] = _pack_bits(tier, np.full(rows, index_bits(len(distinct))))
  return arrays


def codes_starts(arrays: dict) -> dict[str, jax.Array]:
  """With several tiers, ``starts [slots + 1]`` int32: ``starts[g] = sum_{r < g} b_{t(r)}``, the
  code bits of the rows before row ``g`` (``slots >= N``: the tier stream's padding reads as
  tier 0). Nothing with one tier, where row ``g`` starts at ``g b``."""
  if 'tiers' not in arrays:
    return {}
  code_bits = arrays['code_bits'].astype(jnp.int32)  # [T]
  tier_width = index_bits(code_bits.shape[0])
  bits = jnp.unpackbits(arrays['tiers'], bitorder='little')  # [8 L]
  slots = bits.shape[0] // tier_width
  bits = bits[:slots * tier_width].reshape(slots, tier_width).astype(jnp.int32)
  tier = jnp.sum(bits << jnp.arange(tier_width, dtype=jnp.int32), axis=1)  # [slots]
  row_bits = jnp.take(code_bits, tier, mode='clip')  # [slots]
  return {'starts': jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(row_bits)])}


def codes_lookup(arrays: dict, ids: jax.Array, gids: jax.Array, dim: int) -> jax.Array:
  """Product-quantised rows: ``e_g = concat_s centroids[s, code_{g,s}]``.

  The codes of row ``g`` start at bit ``S sum_{r < g} b_{t(r)}`` of ``codes``: ``S g b`` with one
  tier, ``S starts[g]`` with several (``starts`` derived once, :func:`codes_starts`). Each of
  the ``S`` codes is then read from the bytes it touches by clipped gathers.

  Args:
    arrays: ``centroids [S, K, D_s]`` (float or quantised), ``code_bits`` uint8 ``[T]``,
      ``codes`` uint8 and, for ``T > 1``, ``tiers`` uint8 (see :func:`encode_codes`) and the
      derived ``starts``.
    ids: unused.
    gids: int ``[B, F]`` table rows.
    dim: ``D = S D_s``.

  Returns:
    ``[B, F, D]``.
  """
  del ids
  centroids = arrays['centroids']  # [S, K, D_s]
  subspaces, num_centroids, sub_dim = centroids.shape
  code_bits = arrays['code_bits'].astype(jnp.int32)  # [T]
  if 'tiers' in arrays:
    start = jnp.take(arrays['starts'], gids, axis=0)  # [B, F]
    width = jnp.take(arrays['starts'], gids + 1, axis=0) - start  # [B, F]
  else:
    width = jnp.broadcast_to(code_bits[0], gids.shape)  # [B, F]
    start = gids.astype(jnp.int32) * width
  if arrays['codes'].shape[0] == 0:  # every code has 0 bits: centroid 0
    code = jnp.zeros(gids.shape + (subspaces,), jnp.int32)
  else:
    # Bit S start + s width of the stream, as (byte, bit), without forming S start.
    s = jnp.arange(subspaces, dtype=jnp.int32)
    offset = subspaces * (start & 7)[..., None] + s * width[..., None]  # [B, F, S]
    byte = subspaces * (start >> 3)[..., None] + (offset >> 3)
    code = _read_bits(arrays['codes'], byte, offset & 7,
                      jnp.broadcast_to(width[..., None], offset.shape),
                      index_bits(num_centroids)).astype(jnp.int32)  # [B, F, S]
  flat = quant.reshape(centroids, (subspaces * num_centroids, sub_dim))
  chosen = quant.take(flat, jnp.arange(subspaces, dtype=jnp.int32) * num_centroids + code)
  return chosen.reshape(gids.shape + (dim,))  # [B, F, S, D_s] -> [B, F, D]


CODES = Layout(codes_lookup, codes_starts)
