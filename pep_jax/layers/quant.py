"""Quantised arrays: 8 or 4 bits per entry, a float32 scale (and offset) per group of rows, and
the read that dequantises only the rows it gathers.

An array of shape ``[R_0, ..., C]`` is read as rows of its last axis, ``R = size / C`` of them
(``C = 1`` for a 1-D array: every entry is a row). Consecutive rows, ``m`` at a time, share one
group: group ``g`` holds rows ``g m .. g m + m - 1``, ``G = ceil(R / m)`` groups. ``m`` comes from
the scheme's ``group`` (entries per scale) as ``max(1, group // C)``, so a group is always whole
rows: ``group <= C`` gives one scale per row, ``group >= size`` one per array (``m = R``).

With ``b`` bits, entry ``x`` of group ``g`` is stored as the code ``u`` in ``0 .. 2^b - 1``:

* symmetric: ``s_g = max_g |x| / (2^(b-1) - 1)``, ``u = clip(round(x / s_g), -(2^(b-1) - 1),
  2^(b-1) - 1) + 2^(b-1)`` and ``x' = s_g (u - 2^(b-1))``; zero stays exactly zero, a row of
  zeros has ``s_g = 0`` and reads back zeros.
* affine: ``o_g = min_g x``, ``s_g = (max_g x - o_g) / (2^b - 1)``, ``u = clip(round((x - o_g) /
  s_g), 0, 2^b - 1)`` and ``x' = o_g + s_g u``; a group of equal values has ``s_g = 0`` and reads
  back exactly ``o_g``.

``round`` is round half to even. The codes of the whole array are stored flat, in C order,
packed ``P = 32 / b`` to a uint32 word (4 at 8 bits, 8 at 4 bits): entry ``e`` is bits
``b (e mod P) .. b (e mod P) + b - 1`` of word ``e // P``, the unused high bits of the last word
zero. In the little-endian bytes of the file that is one byte per entry at 8 bits, and at
4 bits two per byte with **the even entry in the low nibble** (bits 0-3) and the odd one in the
high nibble (bits 4-7), the little order of the bit streams of :mod:`pep_jax.layers.compact`.
Words rather than bytes so that a row's codes are gathered as a few whole words, as a float32
row's entries are. Bytes: ``4 ceil(size / P) + 4 G`` (``+ 4 G`` more for affine offsets).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

BITS = (8, 4)


class Scheme(NamedTuple):
  """How an array is quantised.

  Attributes:
    bits: 8 or 4 bits per entry.
    group: entries per scale, rounded down to whole rows of the last axis (at least one row).
    symmetric: scale only (zero stays zero), or scale and offset (affine).
  """

  bits: int
  group: int
  symmetric: bool = True


class Spec(NamedTuple):
  """The static facts of one quantised array (what a lookup must know at trace time).

  Attributes:
    bits: bits per entry, 8 or 4.
    shape: the logical shape ``[R_0, ..., C]``.
    rows: last-axis rows per group, ``m``.
    symmetric: without offsets.
  """

  bits: int
  shape: tuple[int, ...]
  rows: int
  symmetric: bool

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def width(self) -> int:
    """``C``, the entries of a row."""
    return self.shape[-1] if len(self.shape) > 1 else 1

  @property
  def groups(self) -> int:
    """``G = ceil(R / m)``."""
    return -(-(self.size // max(self.width, 1)) // self.rows) if self.width else 0

  @property
  def per_word(self) -> int:
    """``P``, the codes of a uint32 word."""
    return 32 // self.bits

  @property
  def words(self) -> int:
    """``ceil(size / P)``, the stored uint32 words."""
    return -(-self.size // self.per_word)

  def to_json(self) -> dict:
    return {'bits': self.bits, 'shape': list(self.shape), 'rows': self.rows,
            'symmetric': self.symmetric}

  @classmethod
  def from_json(cls, facts: Any) -> Spec:
    """The spec a manifest records; ``ValueError`` for anything else."""
    if not (isinstance(facts, dict) and facts.get('bits') in BITS
            and isinstance(facts.get('shape'), list)
            and all(isinstance(n, int) and n >= 0 for n in facts['shape'])
            and isinstance(facts.get('rows'), int) and facts['rows'] >= 1
            and isinstance(facts.get('symmetric'), bool)):
      raise ValueError(f'not a quantised array spec: {facts!r}')
    return cls(facts['bits'], tuple(facts['shape']), facts['rows'], facts['symmetric'])


@dataclasses.dataclass(frozen=True)
class Quantized:
  """A quantised array: flat codes, a scale (and offset) per group, and its :class:`Spec`.

  A pytree whose leaves are ``codes`` uint32 ``[ceil(size / P)]``, ``scale`` float32 ``[G]``
  and, affine only, ``offset`` float32 ``[G]`` (numpy when encoded, jax when looked up); the
  spec is static. ``shape`` and ``ndim`` are the logical ones, so a lookup reads the sizes of a
  quantised array as of a float one.
  """

  codes: Any
  scale: Any
  offset: Any
  spec: Spec

  @property
  def shape(self) -> tuple[int, ...]:
    return self.spec.shape

  @property
  def ndim(self) -> int:
    return len(self.spec.shape)

  @property
  def nbytes(self) -> int:
    return int(sum(np.asarray(a).nbytes for a in self.leaves().values()))

  def leaves(self) -> dict[str, Any]:
    """``{'codes', 'scale'[, 'offset']}``: the arrays an artifact stores for it."""
    out = {'codes': self.codes, 'scale': self.scale}
    if self.offset is not None:
      out['offset'] = self.offset
    return out

  @classmethod
  def from_leaves(cls, leaves: dict, spec: Spec) -> Quantized:
    return cls(leaves['codes'], leaves['scale'], leaves.get('offset'), spec)


jax.tree_util.register_dataclass(Quantized, data_fields=['codes', 'scale', 'offset'],
                                 meta_fields=['spec'])


# The forms an export offers (``--quantize``; None stores float32), chosen by the test AUC drop
# and the bytes of the demo's models (docs/serving.md): at 8 bits every grouping loses less AUC
# than the run's noise, so a scale per 256 entries costs little; at 4 bits the drop grows with
# the group, and an offset per group of 64 lost the least.
SCHEMES: dict[str, Scheme | None] = {'none': None,
                                     'int8': Scheme(8, 256, symmetric=True),
                                     'int4': Scheme(4, 64, symmetric=False)}


def check(q: Quantized) -> None:
  """Raises ``ValueError`` when the leaves do not have the shapes and dtypes of ``q.spec``."""
  spec = q.spec
  expected = {'codes': ((spec.words,), np.uint32), 'scale': ((spec.groups,), np.float32)}
  if not spec.symmetric:
    expected['offset'] = ((spec.groups,), np.float32)
  leaves = q.leaves()
  if set(leaves) != set(expected):
    raise ValueError(f'holds {sorted(leaves)}, a {spec.bits}-bit '
                     f'{"symmetric" if spec.symmetric else "affine"} array holds '
                     f'{sorted(expected)}')
  for name, (shape, dtype) in expected.items():
    leaf = leaves[name]
    if tuple(leaf.shape) != shape or np.dtype(leaf.dtype) != dtype:
      raise ValueError(f'{name} is {np.dtype(leaf.dtype).name} {tuple(leaf.shape)}, its spec '
                       f'{spec.to_json()} needs {np.dtype(dtype).name} {shape}')


def zeros(spec: Spec) -> dict[str, jax.Array]:
  """Zero leaves of the shapes ``spec`` needs (a module's initial parameters)."""
  leaves = {'codes': jnp.zeros(spec.words, jnp.uint32),
            'scale': jnp.zeros(spec.groups, jnp.float32)}
  if not spec.symmetric:
    leaves['offset'] = jnp.zeros(spec.groups, jnp.float32)
  return leaves


def nbytes(value) -> int:
  """Bytes of a float or quantised array."""
  return value.nbytes if isinstance(value, Quantized) else int(np.asarray(value).nbytes)


# ----------------------------------------------------------------------------- numpy: encode


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
  """``[n]`` codes of ``bits`` bits -> uint32 ``[ceil(n / P)]``, entry ``e`` at bits
  ``bits (e mod P)`` of word ``e // P``."""
  per_word = 32 // bits
  codes = np.asarray(codes, np.uint32).ravel()
  codes = np.concatenate([codes, np.zeros(-len(codes) % per_word, np.uint32)])
  shifts = (bits * np.arange(per_word)).astype(np.uint32)
  return np.bitwise_or.reduce(codes.reshape(-1, per_word) << shifts, axis=1).astype(np.uint32)


def unpack(words: np.ndarray, bits: int, size: int) -> np.ndarray:
  """The inverse of :func:`pack`: uint8 ``[size]``."""
  shifts = (bits * np.arange(32 // bits)).astype(np.uint32)
  codes = (np.asarray(words, np.uint32)[:, None] >> shifts) & np.uint32(2 ** bits - 1)
  return codes.ravel()[:size].astype(np.uint8)


def quantize(x: np.ndarray, scheme: Scheme) -> Quantized:
  """``x`` (float) quantised by ``scheme``; see the module docstring for the equations.

  The statistics, divisions and rounding are computed in float64 from the float32 entries, with
  the scale rounded to float32 first, so ``x'`` is what the stored scale gives.

  Raises:
    ValueError: for non-finite entries, other bits, or (affine) a group whose ``max - min``
      exceeds float32.
  """
  if scheme.bits not in BITS:
    raise ValueError(f'{scheme.bits} bits: quantised arrays have {BITS} bits per entry')
  x = np.asarray(x, np.float32)
  shape = tuple(int(n) for n in x.shape) or (1,)
  flat = x.astype(np.float64).ravel()
  if not np.isfinite(flat).all():
    raise ValueError('cannot quantise an array with non-finite entries')
  width = shape[-1] if len(shape) > 1 else 1
  rows = min(max(1, int(scheme.group) // max(width, 1)), max(flat.size // max(width, 1), 1))
  spec = Spec(scheme.bits, shape, rows, bool(scheme.symmetric))
  per_group = rows * width
  starts = np.arange(0, flat.size, max(per_group, 1))  # [G]
  group = np.arange(flat.size) // max(per_group, 1)  # [size]
  if flat.size:
    hi, lo = np.maximum.reduceat(flat, starts), np.minimum.reduceat(flat, starts)
  else:
    hi = lo = np.zeros(0)
  if scheme.symmetric:
    top = 2 ** (scheme.bits - 1) - 1
    scale = (np.maximum(hi, -lo) / top).astype(np.float32)  # [G]
    s = scale.astype(np.float64)[group]
    q = np.where(s > 0, np.rint(flat / np.where(s > 0, s, 1)), 0)
    codes = np.clip(q, -top, top) + (top + 1)
    offset = None
  else:
    top = 2 ** scheme.bits - 1
    if len(hi) and (hi - lo).max() > np.finfo(np.float32).max:
      raise ValueError('affine quantisation needs max - min of every group within float32')
    scale = ((hi - lo) / top).astype(np.float32)
    offset = lo.astype(np.float32)
    s = scale.astype(np.float64)[group]
    q = np.where(s > 0, np.rint((flat - offset.astype(np.float64)[group]) / np.where(s > 0, s, 1)),
                 0)
    codes = np.clip(q, 0, top)
  return Quantized(pack(codes, scheme.bits), scale, offset, spec)


def dequantize(q: Quantized) -> np.ndarray:
  """The whole array ``x'`` (numpy, float32): what a read of every row returns."""
  spec = q.spec
  codes = unpack(q.codes, spec.bits, spec.size)
  group = np.arange(spec.size) // max(spec.rows * spec.width, 1)
  scale = np.asarray(q.scale, np.float32)[group]
  if spec.symmetric:
    out = scale * (codes.astype(np.float32) - np.float32(2 ** (spec.bits - 1)))
  else:
    out = np.asarray(q.offset, np.float32)[group] + scale * codes.astype(np.float32)
  return out.astype(np.float32).reshape(spec.shape)


# ----------------------------------------------------------------------------- jax: read


def reshape(x, shape: tuple[int, ...]):
  """``x`` viewed as ``shape`` (C order, the last axis unchanged): free for either kind."""
  if not isinstance(x, Quantized):
    return jnp.reshape(x, shape)
  shape = tuple(int(n) for n in shape)
  same_rows = shape[-1] == x.shape[-1] if len(shape) > 1 and x.ndim > 1 else len(shape) == x.ndim
  if math.prod(shape) != x.spec.size or not same_rows:
    raise ValueError(f'cannot view a quantised {x.shape} as {shape}: the last axis must stay')
  return dataclasses.replace(x, spec=x.spec._replace(shape=shape))


def take(x, index: jax.Array, mode: str | None = None) -> jax.Array:
  """``x[index]`` along axis 0, float32: ``index.shape + x.shape[1:]``.

  A float array is read by ``jnp.take`` (``mode`` as there). A :class:`Quantized` one gathers
  the codes of the indexed rows only and the scales (and offsets) of their groups, and
  dequantises them; an index out of bounds reads a clamped one (``mode='clip'``). Each indexed
  axis-0 row holds ``W = prod(shape[1:])`` entries, ``W / C`` rows of the last axis, whose group
  is ``(i W / C + j) // m``. When ``W`` is a multiple of ``P`` a row's codes are ``W / P`` whole
  words, one contiguous gather; otherwise (a 1-D array, an odd width) entry ``e`` is read from
  word ``e // P``.

  Args:
    x: ``[R_0, ...]`` float, or :class:`Quantized`.
    index: int ``[...]``.
    mode: for a float array, ``jnp.take``'s.

  Returns:
    float32 ``[..., *x.shape[1:]]``.
  """
  if not isinstance(x, Quantized):
    return jnp.take(x, index, axis=0, mode=mode)
  spec = x.spec
  tail = spec.shape[1:]
  entries = math.prod(tail)  # W
  per_row = entries // max(spec.width, 1)  # W / C last-axis rows in an axis-0 row
  index = index.astype(jnp.int32)
  if tail and entries % spec.per_word == 0:  # whole words per row
    words = _gather(x.codes.reshape(spec.shape[0], entries // spec.per_word), index)
    codes = _unpack(words[..., None], spec.bits, jnp.arange(spec.per_word, dtype=jnp.uint32))
  else:
    entry = index[..., None] * entries + jnp.arange(entries, dtype=jnp.int32) if tail else index
    codes = _read(x.codes, entry, spec.bits)
  if tail:  # [..., W / C, C]: the rows of the last axis, each in one group
    group = _group(index[..., None] * per_row + jnp.arange(per_row, dtype=jnp.int32), spec.rows)
    group, codes = group[..., None], codes.reshape(index.shape + (per_row, spec.width))
  else:  # a 1-D array: every entry is a row
    group = _group(index, spec.rows)
  codes = codes.astype(jnp.float32)
  if spec.symmetric:
    out = _gather(x.scale, group) * (codes - jnp.float32(2 ** (spec.bits - 1)))
  else:
    out = _gather(x.offset, group) + _gather(x.scale, group) * codes
  return out.reshape(index.shape + tail)


def take_runs(x, start: jax.Array, step: jax.Array, mode: str | None = None) -> jax.Array:
  """``x[start[..., None] + step]`` of a 1-D ``x``, float32 ``[..., K]``: each row of ``step``
  (``0 <= step < K``) reads a run of at most ``K`` consecutive entries from ``start`` (a pruned
  row's values).

  The same as :func:`take` of the positions, but when a group holds at least ``K`` entries a
  run touches at most two groups, ``start // m`` and the next: their scales are gathered once
  per run, not once per entry, and each entry selects its own. A position out of bounds reads a
  clamped one for a quantised ``x``; a float one is read by ``jnp.take`` (``mode`` as there).

  Args:
    x: ``[n]`` float, or :class:`Quantized` 1-D.
    start: int ``[...]``.
    step: int ``[..., K]``, ``0 <= step < K``.
    mode: for a float array, ``jnp.take``'s.

  Returns:
    float32 ``[..., K]``.
  """
  pos = start[..., None] + step  # [..., K]
  if not isinstance(x, Quantized) or x.ndim != 1 or x.spec.rows < step.shape[-1]:
    return take(x, pos, mode)
  spec = x.spec
  codes = _read(x.codes, pos.astype(jnp.int32), spec.bits)
  first = _group(start.astype(jnp.int32), spec.rows)  # [...]
  pair = first[..., None] + jnp.arange(2, dtype=jnp.int32)  # [..., 2]
  second = pos >= ((first + 1) * spec.rows)[..., None]  # [..., K]: in the run's second group
  scale = _gather(x.scale, pair)  # [..., 2]
  out = jnp.where(second, scale[..., 1:], scale[..., :1])
  if spec.symmetric:
    return out * (codes.astype(jnp.float32) - jnp.float32(2 ** (spec.bits - 1)))
  offset = _gather(x.offset, pair)
  return jnp.where(second, offset[..., 1:], offset[..., :1]) + out * codes.astype(jnp.float32)


def _unpack(words: jax.Array, bits: int, slot: jax.Array) -> jax.Array:
  """Code ``slot`` of each uint32 word: ``words >> bits slot & (2^b - 1)`` (broadcast), then
  the word and slot axes merged: ``[..., n, P] -> [..., n P]``."""
  codes = (words >> (jnp.uint32(bits) * slot)) & jnp.uint32(2 ** bits - 1)
  return codes.reshape(codes.shape[:-2] + (-1,))


def _read(words: jax.Array, entry: jax.Array, bits: int) -> jax.Array:
  """Codes of the flat entries ``entry >= 0`` (int32, any shape), one word gathered each (``P``
  is a power of two: a shift and a mask locate the entry)."""
  log_per_word = (32 // bits).bit_length() - 1
  slot = (entry & ((1 << log_per_word) - 1)).astype(jnp.uint32)
  return (_gather(words, entry >> log_per_word) >> (jnp.uint32(bits) * slot)) & jnp.uint32(
      2 ** bits - 1)


def _group(row: jax.Array, rows: int) -> jax.Array:
  """``row // rows`` for ``row >= 0``: a shift when ``rows`` is a power of two (``//`` on signed
  integers rounds towards minus infinity, which costs a few more operations per entry)."""
  if rows & (rows - 1) == 0:
    return row >> (rows.bit_length() - 1)
  return jax.lax.div(row, jnp.int32(rows))


def _gather(array: jax.Array, index: jax.Array) -> jax.Array:
  """``array[index]`` along axis 0, an index out of bounds clamped to them (XLA's gather clamps
  its indices itself: no extra operation)."""
  return jnp.take(array, index, axis=0, mode='clip')
