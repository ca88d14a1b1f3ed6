"""Property-based tests of the value keys, the integer rule and the line parser."""

import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pyarrow as pa

from conftest import int_token
from pep_jax.data import criteo, parsing

values = st.binary(max_size=24)
field = st.binary(max_size=12).filter(lambda b: not any(c in b for c in b'\t\n\r'))


@given(st.lists(values, max_size=40))
def test_keys_identify_values(items):
  keys = parsing.bytes_keys(pa.array(items, pa.binary()))
  for a, ka in zip(items, keys):
    assert (ka == 0) == (a == b'')
    raw = parsing.key_to_bytes(ka)
    assert raw is None or raw == a  # exact keys decode to the value itself
    for b, kb in zip(items, keys):
      assert (a == b) == (ka == kb)


@given(st.lists(values, min_size=1, max_size=20), st.integers(0, 19))
def test_keys_do_not_depend_on_slicing(items, start):
  array = pa.array(items, pa.binary())
  start = min(start, len(items))
  np.testing.assert_array_equal(parsing.bytes_keys(array.slice(start)),
                                parsing.bytes_keys(array)[start:])


@given(st.lists(st.integers(-10**17, 10**17), max_size=50))
def test_integer_rule_equals_math_log(vs):
  expected = [int(math.log(v) ** 2) if v > 2 else v - 2 for v in vs]
  assert parsing.integer_tokens(np.array(vs, np.int64)).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b'0', b'1', b'x']),
                          st.lists(field, min_size=13, max_size=13),
                          st.lists(field, min_size=26, max_size=26)), min_size=1, max_size=8))
def test_criteo_reader_on_arbitrary_fields(rows):
  lines = [b'\t'.join([label, *ints, *cats]) for label, ints, cats in rows]
  block = b'\n'.join(lines) + b'\n'
  table, kept, dropped = parsing.parse_block(block, criteo.COLUMNS, '\t')
  assert len(dropped) == 0 and table.num_rows == len(rows)
  checks = criteo.convert(table)
  bad = np.zeros(len(rows), bool)
  for _, mask in checks.problems:
    bad |= mask
  for r, (label, ints, cats) in enumerate(rows):
    ints_ok = all(v == b'' or parsing.re_int(v) for v in ints)
    assert bad[r] == (label == b'x' or not ints_ok)
    if not bad[r]:
      assert checks.labels[r] == int(label)
      for f, v in enumerate(ints):
        key = checks.keys[f, r]
        token = int_token(v)
        assert key == (parsing.INT_NULL_KEY if token == 'NULL' else np.int64(token).view(np.uint64))
      expected = parsing.bytes_keys(pa.array(cats, pa.binary()))
      np.testing.assert_array_equal(checks.keys[13:, r], expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(field, min_size=1, max_size=5), min_size=1, max_size=10))
def test_wrong_column_counts_are_dropped_with_their_lines(rows):
  block = b''.join(b'\t'.join(r) + b'\n' for r in rows)
  table, kept, dropped = parsing.parse_block(block, ('a', 'b', 'c'), '\t')
  want = [i for i, r in enumerate(rows) if len(r) == 3 or r == [b'']]
  assert kept.tolist() == want
  assert dropped.tolist() == [i for i in range(len(rows)) if i not in want]
  assert table.column('a').to_pylist() == [rows[i][0] if len(rows[i]) == 3 else b'' for i in want]
