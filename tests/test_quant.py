"""Quantised arrays against a numpy reference written out group by group: rounding, saturation,
rows of zeros and of equal values, the packing order (the even entry in the low nibble at 4
bits), and reads of gathered rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pep_jax.layers import compact, quant


def reference(x: np.ndarray, bits: int, group: int, symmetric: bool):
  """``(codes [size] unpacked, scale [G], offset [G] or None, x' [size])``, one group at a time:
  the equations of :mod:`pep_jax.layers.quant` with the scale rounded to float32 first."""
  x = np.asarray(x, np.float32)
  width = x.shape[-1] if x.ndim > 1 else 1
  rows = x.reshape(-1, width)
  per = min(max(1, group // width), max(len(rows), 1))
  codes, scales, offsets, values = [], [], [], []
  for lo in range(0, len(rows), per):
    block = rows[lo:lo + per].ravel().astype(np.float64)
    if symmetric:
      top = 2 ** (bits - 1) - 1
      scale = np.float32(np.abs(block).max() / top)
      q = np.zeros_like(block) if scale == 0 else np.clip(np.rint(block / float(scale)), -top, top)
      code = q + top + 1
      value = scale * (code.astype(np.float32) - np.float32(top + 1))
    else:
      top = 2 ** bits - 1
      offset = np.float32(block.min())
      scale = np.float32((block.max() - block.min()) / top)
      q = (np.zeros_like(block) if scale == 0
           else np.clip(np.rint((block - float(offset)) / float(scale)), 0, top))
      code = q
      value = offset + scale * code.astype(np.float32)
      offsets.append(offset)
    codes.append(code.astype(np.uint8))
    scales.append(scale)
    values.append(value.astype(np.float32))
  return (np.concatenate(codes), np.array(scales, np.float32),
          np.array(offsets, np.float32) if not symmetric else None,
          np.concatenate(values).reshape(x.shape))


def unpacked(q: quant.Quantized) -> np.ndarray:
  """The codes, one per entry: the little-endian bytes of the words, split in nibbles at 4
  bits (written out here, not through quant.unpack)."""
  data = np.asarray(q.codes, '<u4').view(np.uint8)
  if q.spec.bits == 4:
    data = np.stack([data & 15, data >> 4], axis=1).ravel()
  return data[:q.spec.size]


SCHEMES = [quant.Scheme(bits, group, symmetric) for bits in (8, 4) for symmetric in (True, False)
           for group in (1, 6, 64, 10 ** 6)]
SHAPES = [(53,), (11, 6), (9, 5), (3, 4, 2)]


@pytest.mark.parametrize('scheme', SCHEMES, ids=str)
@pytest.mark.parametrize('shape', SHAPES, ids=str)
def test_quantize_matches_the_reference(shape, scheme):
  rng = np.random.default_rng(len(shape))
  x = rng.standard_normal(shape).astype(np.float32)
  x.reshape(-1)[:6] = 0  # a run of zeros
  q = quant.quantize(x, scheme)
  quant.check(q)
  codes, scale, offset, values = reference(x, scheme.bits, scheme.group, scheme.symmetric)
  np.testing.assert_array_equal(unpacked(q), codes)
  np.testing.assert_array_equal(q.scale, scale)
  if scheme.symmetric:
    assert q.offset is None
  else:
    np.testing.assert_array_equal(q.offset, offset)
  np.testing.assert_array_equal(quant.dequantize(q), values)
  per_word = 32 // scheme.bits
  assert q.nbytes == 4 * -(-x.size // per_word) + (4 if scheme.symmetric else 8) * len(scale)
  assert q.codes.dtype == np.uint32 and q.codes.shape == (-(-x.size // per_word),)
  step = scale[np.arange(x.size) // (q.spec.rows * q.spec.width)].reshape(shape)
  assert (np.abs(quant.dequantize(q) - x) <= step / 2 * (1 + 1e-6)).all()  # half a step


def test_rounding_is_half_to_even():
  x = np.array([127, 0.5, 1.5, 2.5, -2.5, -0.5, 63.5, -127], np.float32)  # scale exactly 1
  q = quant.quantize(x, quant.Scheme(8, 64))
  assert float(q.scale[0]) == 1.0
  assert (unpacked(q).astype(int) - 128).tolist() == [127, 0, 2, 2, -2, 0, 64, -127]


def test_the_extremes_take_the_extreme_codes_and_never_pass_them():
  rng = np.random.default_rng(0)
  for bits in (8, 4):
    top = 2 ** (bits - 1) - 1
    # Many groups whose float32 scale rounds below max |x| / top: x / scale exceeds top there.
    x = (rng.standard_normal((4000, 8)) * 10.0 ** rng.integers(-30, 30, (4000, 1))).astype(
        np.float32)
    q = quant.quantize(x, quant.Scheme(bits, 8))
    over = np.abs(x).max(axis=1) / q.scale.astype(np.float64) > top
    assert over.any()  # the clip is exercised
    codes = unpacked(q).reshape(x.shape).astype(int) - (top + 1)
    assert codes.min() >= -top and codes.max() <= top
    largest = np.abs(x).argmax(axis=1)
    assert (np.abs(codes[np.arange(len(x)), largest]) == top).all()
    affine = quant.quantize(x, quant.Scheme(bits, 8, symmetric=False))
    codes = unpacked(affine).reshape(x.shape)
    assert (codes[np.arange(len(x)), x.argmax(axis=1)] == 2 ** bits - 1).all()
    assert (codes[np.arange(len(x)), x.argmin(axis=1)] == 0).all()
  huge = np.array([[3.4e38, -3.4e38, 1.0]], np.float32)  # max - min overflows float32
  back = quant.dequantize(quant.quantize(huge, quant.Scheme(8, 3)))
  np.testing.assert_allclose(back, [[3.4e38, -3.4e38, 0]], rtol=1e-6)
  with pytest.raises(ValueError, match='within float32'):
    quant.quantize(huge, quant.Scheme(8, 3, symmetric=False))
  back = quant.dequantize(quant.quantize(np.abs(huge), quant.Scheme(8, 3, symmetric=False)))
  np.testing.assert_allclose(back, [[3.4e38, 3.4e38, 1]], rtol=1e-6)  # the offset is exact
  with pytest.raises(ValueError, match='non-finite'):
    quant.quantize(np.array([1, np.nan], np.float32), quant.Scheme(8, 3))


@pytest.mark.parametrize('bits', [8, 4])
@pytest.mark.parametrize('symmetric', [True, False])
def test_a_row_of_zeros_and_a_row_of_equal_values(bits, symmetric):
  x = np.array([[0, 0, 0], [-0.3, -0.3, -0.3], [1, 2, 3]], np.float32)
  q = quant.quantize(x, quant.Scheme(bits, 1, symmetric))  # one scale per row
  back = quant.dequantize(q)
  assert q.scale[0] == 0 and (back[0] == 0).all()  # zeros read back exactly zero
  if symmetric:  # every entry is the largest: the top code, scale |c| / top
    assert q.scale[1] == np.float32(0.3 / (2 ** (bits - 1) - 1))
    np.testing.assert_allclose(back[1], x[1], rtol=1e-6)
  else:  # no spread: scale 0, the offset is the value
    assert q.scale[1] == 0
    np.testing.assert_array_equal(back[1], x[1])
  assert (back[0] == 0).all()


def test_codes_pack_into_words_the_even_entry_in_the_low_nibble():
  assert quant.pack(np.array([1, 2, 3]), 4).tolist() == [0x321]
  assert quant.pack(np.arange(1, 10), 4).tolist() == [0x87654321, 0x9]
  assert quant.pack(np.array([1, 2, 3, 4, 5]), 8).tolist() == [0x04030201, 0x05]
  assert quant.unpack(quant.pack(np.arange(11), 4), 4, 11).tolist() == list(range(11))
  # Symmetric, scale 1: codes q + 8 = 15, 1, 8, 9; on disk (little-endian) bytes 0x1F, 0x98.
  q = quant.quantize(np.array([7, -7, 0, 1], np.float32), quant.Scheme(4, 4))
  assert q.codes.tolist() == [0x981F]
  assert np.asarray(q.codes, '<u4').tobytes()[:2] == bytes([0x1F, 0x98])
  odd = quant.quantize(np.array([[7, 0, -7]], np.float32), quant.Scheme(4, 3))
  assert odd.codes.tolist() == [0x18F]  # the unused high nibbles are zero


@pytest.mark.parametrize('scheme', SCHEMES, ids=str)
@pytest.mark.parametrize('shape', SHAPES, ids=str)
def test_take_reads_the_dequantised_rows(shape, scheme):
  rng = np.random.default_rng(7)
  x = rng.standard_normal(shape).astype(np.float32)
  q = quant.quantize(x, scheme)
  table = quant.dequantize(q)
  if len(shape) == 3:  # MGQE's centroids are read as [S K, D_s]
    q, table = quant.reshape(q, (shape[0] * shape[1], shape[2])), table.reshape(-1, shape[2])
  index = rng.integers(0, table.shape[0], size=(4, 5))
  got = np.asarray(jax.jit(quant.take)(q, jnp.asarray(index)))
  assert got.dtype == np.float32 and got.shape == table[index].shape
  if scheme.symmetric:
    np.testing.assert_array_equal(got, table[index])
  else:  # o + s u may be one fused multiply-add: within a rounding of the entry
    np.testing.assert_allclose(got, table[index], rtol=0, atol=2e-7 * np.abs(x).max())


@pytest.mark.parametrize('scheme', SCHEMES, ids=str)
def test_take_runs_reads_consecutive_entries(scheme):
  rng = np.random.default_rng(3)
  x = rng.standard_normal(300).astype(np.float32)
  q = quant.quantize(x, scheme)
  start = rng.integers(0, 300 - 8, size=(6, 5))
  step = np.sort(rng.integers(0, 8, size=(6, 5, 8)), axis=-1)
  got = np.asarray(jax.jit(quant.take_runs)(q, jnp.asarray(start), jnp.asarray(step)))
  want = quant.dequantize(q)[start[..., None] + step]
  np.testing.assert_allclose(got, want, rtol=0, atol=0 if scheme.symmetric else 2e-7 * 4)
  np.testing.assert_array_equal(np.asarray(quant.take_runs(x, jnp.asarray(start),
                                                           jnp.asarray(step))),
                                x[start[..., None] + step])


def test_only_tables_are_quantised():
  arrays = {'field_0': np.ones((4, 2), np.float32), 'proj_0': np.ones((2, 8), np.float32),
            'index': np.arange(4, dtype=np.int32), 'columns': np.zeros((1, 1), np.uint8)}
  out = compact.quantize_arrays(compact.FIELDWIDTH, arrays, quant.Scheme(8, 64))
  assert isinstance(out['field_0'], quant.Quantized)
  assert out['proj_0'] is arrays['proj_0'] and out['index'] is arrays['index']
  assert out['columns'] is arrays['columns']


def test_a_spec_survives_json_and_check_refuses_mismatched_leaves():
  q = quant.quantize(np.ones((5, 3), np.float32), quant.Scheme(4, 6, symmetric=False))
  assert quant.Spec.from_json(q.spec.to_json()) == q.spec
  with pytest.raises(ValueError, match='codes'):
    quant.check(quant.Quantized(q.codes[:-1], q.scale, q.offset, q.spec))
  with pytest.raises(ValueError, match='offset'):
    quant.check(quant.Quantized(q.codes, q.scale, None, q.spec))
  with pytest.raises(ValueError, match='not a quantised array spec'):
    quant.Spec.from_json({'bits': 3, 'shape': [5, 3], 'rows': 2, 'symmetric': True})
