"""Vectorised parsing shared by the raw-file readers: blocks of lines, value keys, bad lines.

A raw file is read in blocks of whole lines; each block is parsed by pyarrow's CSV reader with
every column kept as raw bytes, so no byte sequence (non-UTF-8 included) can fail to decode.
Every feature value then becomes a ``uint64`` *key*:

* categorical value (a byte string ``s``):
  ``len(s) <= 7``: the bytes packed little-endian with ``len(s)`` in the top byte (the empty
  string is key 0, the NULL token); ``len(s) == 8`` with last byte in ``[8, 127]`` (every 8-char
  hex hash of Criteo and Avazu): the 8 bytes themselves. These keys are exact and reversible
  (:func:`key_to_bytes`). Any other value: a 64-bit hash of its bytes with the top bit set.
* integer value ``v`` (Criteo I1-I13): the token ``floor(ln(v)^2)`` if ``v > 2`` else ``v - 2``,
  stored as its int64 bits; an empty value is :data:`INT_NULL_KEY`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import gzip
import io
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from pep_jax.errors import InputError

INT_NULL_KEY = np.uint64(1 << 63)  # the NULL token of an integer field (int64 min as bits)
HASH_BIT = np.uint64(1 << 63)  # set on every hashed categorical key
MAX_BAD_EXAMPLES = 10  # line numbers kept for the report
_INT_PATTERN = r'^-?[0-9]{1,18}$'  # integers that fit int64 with room to spare
re_int = re.compile(_INT_PATTERN.encode()).match  # the same test on one bytes value


# ----------------------------------------------------------------------------- keys


def first_file(folder: str, names: Sequence[str]) -> str | None:
  """The path of the first of ``names`` that is a file in ``folder``, or None."""
  for name in names:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  return None


def mix64(z: np.ndarray) -> np.ndarray:
  """The splitmix64 finaliser, a bijection of uint64 (wrapping arithmetic)."""
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


def _low_byte_masks() -> np.ndarray:
  """``masks[k]`` keeps the low ``k`` bytes of a uint64, for k = 0..8."""
  return np.array([(1 << (8 * k)) - 1 for k in range(9)], np.uint64)


_LOW_BYTES = _low_byte_masks()


def _binary_buffers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
  """Offsets ``[n + 1]`` (int64, into ``data``) and data bytes of a binary/string array."""
  if values.null_count:
    values = values.fill_null(b'')
  if pa.types.is_large_binary(values.type) or pa.types.is_large_string(values.type):
    offset_type = np.int64
  else:
    offset_type = np.int32
  _, offsets_buf, data_buf = values.buffers()
  n = len(values)
  offsets = np.frombuffer(offsets_buf, offset_type, n + 1, values.offset * np.dtype(offset_type).itemsize)
  offsets = offsets.astype(np.int64)
  data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
  return offsets, data


def bytes_keys(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
  """The key of every byte string in ``values`` (see the module docstring).

  Args:
    values: a binary or string array ``[n]``; nulls count as empty strings.

  Returns:
    uint64 ``[n]``.
  """
  if isinstance(values, pa.ChunkedArray):
    parts = [bytes_keys(chunk) for chunk in values.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)
  offsets, data = _binary_buffers(values)
  starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
  padded = np.zeros(len(data) + 8, np.uint8)
  padded[:len(data)] = data
  # windows[i] is the little-endian uint64 made of bytes i..i+7: an unaligned, overlapping view.
  windows = np.ndarray((len(data) + 1,), np.dtype('<u8'), padded, 0, (1,))
  first = windows[starts] & _LOW_BYTES[np.minimum(lengths, 8)]  # [n]
  keys = first | (lengths.astype(np.uint64) << np.uint64(56))
  top = first >> np.uint64(56)
  exact8 = (lengths == 8) & (top >= 8) & (top <= 127)
  keys[exact8] = first[exact8]
  hashed = np.flatnonzero((lengths > 8) | ((lengths == 8) & ~exact8))
  if len(hashed):
    keys[hashed] = _hash_strings(windows, starts[hashed], lengths[hashed]) | HASH_BIT
  return keys


def _hash_strings(windows: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """A 64-bit hash of each string, eight bytes at a time.

  Args:
    windows: the unaligned uint64 view of the padded data (see :func:`bytes_keys`).
    starts, lengths: int64 ``[m]``, where each string begins and how long it is.

  Returns:
    uint64 ``[m]``.
  """
  h = np.full(len(starts), 0x9E3779B97F4A7C15, np.uint64)
  num_words = (lengths + 7) // 8
  for w in range(int(num_words.max(initial=0))):
    sel = np.flatnonzero(num_words > w)
    rest = np.minimum(lengths[sel] - 8 * w, 8)
    word = windows[starts[sel] + 8 * w] & _LOW_BYTES[rest]
    h[sel] = mix64(h[sel] ^ word)
  return mix64(h ^ lengths.astype(np.uint64))


def key_to_bytes(key: int) -> bytes | None:
  """The byte string an exact categorical key stands for; None for a hashed key."""
  key = int(key)
  if key >> 63:
    return None
  top = key >> 56
  length = top if top < 8 else 8
  return (key & ((1 << (8 * length)) - 1)).to_bytes(8, 'little')[:length]


@functools.cache
def _token_thresholds() -> np.ndarray:
  """``t[k-1]``: the least integer v > 2 with ``int(math.log(v) ** 2) >= k``, k = 1, 2, ...

  Since that token never decreases in v, ``token(v) = #{k : t[k-1] <= v}`` exactly.
  """
  limit = 10**18
  thresholds = []
  for k in range(1, int(math.log(limit) ** 2) + 1):
    lo, hi = 3, limit
    while lo < hi:
      mid = (lo + hi) // 2
      if int(math.log(mid) ** 2) >= k:
        hi = mid
      else:
        lo = mid + 1
    thresholds.append(lo)
  return np.array(thresholds, np.int64)


def integer_tokens(values: np.ndarray) -> np.ndarray:
  """The Criteo integer rule: ``floor(ln(v)^2)`` if ``v > 2`` else ``v - 2``.

  Equal to Python's ``int(math.log(v) ** 2)`` for every 2 < v < 1e18 (no float rounding of
  its own: the token is a count of precomputed thresholds).

  Args:
    values: int64 ``[n]``, |v| < 1e18.

  Returns:
    int64 ``[n]``.
  """
  values = np.asarray(values, np.int64)
  big = np.searchsorted(_token_thresholds(), values, side='right')  # [n]
  return np.where(values > 2, big, values - 2).astype(np.int64)


def parse_ints(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
  """Decimal integers given as byte strings.

  Args:
    values: binary ``[n]``.

  Returns:
    ``numbers`` int64 ``[n]`` (0 where not ok) and ``ok`` bool ``[n]``: the value is an
    optional minus sign and 1 to 18 digits (an empty value is not ok).
  """
  ok = np.asarray(pc.match_substring_regex(values, _INT_PATTERN).to_numpy(zero_copy_only=False), bool)
  numeric = pc.if_else(pa.array(ok), values, pa.scalar(b'0', pa.binary()))
  numbers = np.asarray(numeric.cast(pa.string()).cast(pa.int64()).to_numpy(zero_copy_only=False))
  return numbers.astype(np.int64), ok


def integer_keys(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
  """Keys of integer fields given as byte strings.

  Args:
    values: binary ``[n]``: decimal integers or empty.

  Returns:
    ``keys`` uint64 ``[n]`` (token bits, :data:`INT_NULL_KEY` for empty) and ``ok`` bool ``[n]``
    (False where the value is not an integer; its key is then meaningless).
  """
  empty = np.asarray(pc.equal(pc.binary_length(values), 0).to_numpy(zero_copy_only=False), bool)
  numbers, ok = parse_ints(values)
  keys = integer_tokens(numbers).view(np.uint64)
  keys[empty] = INT_NULL_KEY
  return keys, ok | empty


def label_values(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
  """Labels given as the byte strings ``0``/``1``.

  Returns:
    ``labels`` uint8 ``[n]`` and ``ok`` bool ``[n]`` (False where the value is neither).
  """
  one = np.asarray(pc.equal(values, pa.scalar(b'1', pa.binary())).to_numpy(zero_copy_only=False), bool)
  zero = np.asarray(pc.equal(values, pa.scalar(b'0', pa.binary())).to_numpy(zero_copy_only=False), bool)
  return one.astype(np.uint8), one | zero


# ----------------------------------------------------------------------------- blocks of lines


def open_raw(path: str) -> io.BufferedIOBase:
  """Opens a raw file for binary reading, decompressing ``.gz``."""
  if path.endswith('.gz'):
    return gzip.open(path, 'rb')
  return open(path, 'rb')


def first_line(path: str) -> bytes:
  """Line 1 of a raw file with its line end (``b''`` for an empty file)."""
  with open_raw(path) as f:
    return f.readline()


def read_blocks(path: str, block_bytes: int, *, skip: int = 0) -> Iterator[bytes]:
  """Splits a file into blocks of whole lines of about ``block_bytes`` bytes.

  Args:
    path: the raw file (``.gz`` allowed).
    block_bytes: target block size.
    skip: bytes to drop at the start (a header line).

  Yields:
    Blocks that end with a newline, except possibly the last (a truncated last line).
  """
  with open_raw(path) as f:
    f.read(skip)
    tail = b''
    while True:
      data = f.read(block_bytes)
      if not data:
        break
      data = tail + data
      cut = data.rfind(b'\n') + 1
      if cut == 0:
        tail = data
        continue
      tail = data[cut:]
      yield data[:cut]
    if tail:
      yield tail


def _read_table(block: bytes, column_names: Sequence[str], delimiter: str) -> pa.Table:
  """pyarrow's CSV parser on whole lines: binary columns, no quoting, empty lines kept."""
  return pa_csv.read_csv(
      io.BytesIO(block),
      read_options=pa_csv.ReadOptions(column_names=list(column_names), use_threads=False,
                                      block_size=max(len(block) + 1, 1 << 20)),
      parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=False, double_quote=False,
                                        escape_char=False, ignore_empty_lines=False),
      convert_options=pa_csv.ConvertOptions(
          column_types={name: pa.binary() for name in column_names},
          strings_can_be_null=False, quoted_strings_can_be_null=False))


def parse_block(block: bytes, column_names: Sequence[str], delimiter: str
                ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
  """Parses one block of whole lines into a table of raw byte columns.

  Lines with the wrong number of columns are left out. Quotes have no meaning, and an empty
  line is a row of empty values (so it fails the label check of its reader).

  Args:
    block: whole lines.
    column_names: the expected columns.
    delimiter: one character.

  Returns:
    The table (one binary column per name, one row per well-formed line, in line order),
    ``rows`` int64 ``[num_rows]``: each row's 0-based line number in the block, and
    ``dropped`` int64 ``[k]``: the lines left out for their column count.
  """
  if not block:
    return _empty_table(column_names), np.zeros(0, np.int64), np.zeros(0, np.int64)
  try:
    table = _read_table(block, column_names, delimiter)
    return table, np.arange(table.num_rows, dtype=np.int64), np.zeros(0, np.int64)
  except pa.ArrowInvalid:  # some line has the wrong column count: drop those lines first
    pass
  starts, ends, columns = line_columns(block, delimiter)
  ok = (columns == len(column_names)) | (ends == starts)
  buf = np.frombuffer(block, np.uint8)
  keep_byte = np.repeat(ok, np.diff(np.append(starts, len(buf))))
  clean = buf[keep_byte].tobytes()
  table = _read_table(clean, column_names, delimiter) if clean else _empty_table(column_names)
  return table, np.flatnonzero(ok), np.flatnonzero(~ok)


def _empty_table(column_names: Sequence[str]) -> pa.Table:
  return pa.table({name: pa.array([], pa.binary()) for name in column_names})


def line_columns(block: bytes, delimiter: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Where each line of a block starts and ends, and its number of columns.

  Line ends are ``\\n``, ``\\r\\n`` and a lone ``\\r``, as pyarrow counts them.

  Returns:
    ``starts``, ``ends`` (the terminator's position, or the block length for a last line
    without one) and ``columns``, int64 ``[lines]``.
  """
  buf = np.frombuffer(block, np.uint8)
  nl = buf == ord('\n')
  lone_cr = (buf == ord('\r')) & ~np.append(nl[1:], False)
  ends = np.flatnonzero(nl | lone_cr)
  if len(ends) == 0 or ends[-1] != len(buf) - 1:
    ends = np.append(ends, len(buf))
  starts = np.append(0, ends[:-1] + 1)
  delims = np.flatnonzero(buf == ord(delimiter))
  columns = np.searchsorted(delims, ends) - np.searchsorted(delims, starts) + 1
  return starts, ends, columns


# ----------------------------------------------------------------------------- bad lines


@dataclasses.dataclass
class BadLines:
  """Malformed lines of one file: how many, why, and the first few line numbers (1-based)."""

  path: str
  count: int = 0
  total_lines: int = 0
  reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: list = dataclasses.field(default_factory=list)  # [(line, reason)]
  notes: list = dataclasses.field(default_factory=list)  # remarks on the file as a whole

  def add(self, reason: str, lines: Iterable[int] = (), count: int | None = None) -> None:
    """Records ``count`` bad lines for ``reason`` (``lines``: their numbers, if known)."""
    lines = list(lines)
    n = len(lines) if count is None else count
    if n == 0:
      return
    self.count += n
    self.reasons[reason] += n
    for line in lines[:max(0, MAX_BAD_EXAMPLES - len(self.examples))]:
      self.examples.append((int(line), reason))

  def need_examples(self) -> bool:
    return len(self.examples) < MAX_BAD_EXAMPLES

  def summary(self) -> str:
    notes = ''.join(f'; {note}' for note in self.notes)
    if not self.count:
      return f'{self.path}: {self.total_lines} lines, none malformed{notes}'
    examples = sorted(self.examples)[:MAX_BAD_EXAMPLES]
    first = ', '.join(f'{line} ({reason})' for line, reason in examples)
    why = ', '.join(f'{n} {reason}' for reason, n in self.reasons.most_common())
    return (f'{self.path}: {self.total_lines} lines, skipped {self.count} malformed ({why}); '
            f'first: {first}{notes}')

  def check(self, max_fraction: float) -> None:
    """Raises InputError when the file had no lines or more than ``max_fraction`` bad ones."""
    total_lines = self.total_lines
    if total_lines == 0:
      raise InputError(f'{self.path}: the file has no lines')
    if self.count > max_fraction * total_lines:
      raise InputError(
          f'{self.summary()}. That is {self.count} of {total_lines} lines, more than '
          f'data.max_bad_fraction={max_fraction}; is this the right file?')

  def to_json(self) -> dict:
    return {'file': os.path.basename(self.path), 'lines': self.total_lines,
            'bad': self.count, 'reasons': dict(self.reasons),
            'first_bad_lines': [line for line, _ in sorted(self.examples)], 'notes': self.notes}


# ----------------------------------------------------------------------------- parallel map


def ordered_map(fn: Callable, items: Iterable, *, workers: int, ahead: int | None = None) -> Iterator:
  """``map(fn, items)`` on a thread pool, in order, with at most ``ahead`` items in flight.

  numpy and pyarrow release the GIL in their kernels, so threads use several cores.
  """
  if workers <= 1:
    yield from map(fn, items)
    return
  ahead = ahead or workers + 1
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= ahead:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def default_workers() -> int:
  """Threads for parsing: the CPUs this process may use."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:
    return max(1, os.cpu_count() or 1)


# ----------------------------------------------------------------------------- delimited files


@dataclasses.dataclass(frozen=True)
class Chunk:
  """Consecutive good rows of a raw file.

  Attributes:
    keys: uint64 ``[F, n]``: the key of every field value (field-major).
    labels: uint8 ``[n]``.
  """

  keys: np.ndarray
  labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class RowChecks:
  """What a table converter returns: keys and labels of all rows, and which rows are bad.

  Attributes:
    keys: uint64 ``[F, n]``.
    labels: uint8 ``[n]``.
    problems: ``(reason, bad)`` pairs, ``bad`` bool ``[n]``; a row's reason is its first problem.
  """

  keys: np.ndarray
  labels: np.ndarray
  problems: list


def read_delimited(path: str, *, column_names: Sequence[str], delimiter: str,
                   convert: Callable[[pa.Table], RowChecks], bad: BadLines,
                   block_bytes: int = 32 << 20, workers: int = 1, skip_bytes: int = 0,
                   first_line: int = 1) -> Iterator[Chunk]:
  """Reads a delimited file block by block, in parallel, and yields its good rows in order.

  Malformed lines (wrong column count, or rejected by ``convert``) are left out and recorded
  in ``bad`` with their 1-based line numbers; ``bad.total_lines`` counts every line read.

  Args:
    path: the raw file (``.gz`` allowed).
    column_names: the expected columns.
    delimiter: one character.
    convert: turns a parsed table into keys, labels and per-row problems.
    bad: where malformed lines are recorded.
    block_bytes: bytes per block.
    workers: parsing threads.
    skip_bytes: bytes to skip at the start (a header line).
    first_line: the line number of the first line after ``skip_bytes``.
  """

  def work(block: bytes):
    table, rows, dropped = parse_block(block, column_names, delimiter)
    checks = convert(table)
    is_bad = np.zeros(table.num_rows, bool)
    reasons = {}
    why = np.full(table.num_rows, -1, np.int64)
    for r, (reason, mask) in enumerate(checks.problems):
      new = mask & ~is_bad
      if new.any():
        reasons[reason] = int(new.sum())
        why[new] = r
      is_bad |= mask
    examples = [(int(line), 'wrong number of columns') for line in dropped[:MAX_BAD_EXAMPLES]]
    examples += [(int(rows[r]), checks.problems[why[r]][0])
                 for r in np.flatnonzero(is_bad)[:MAX_BAD_EXAMPLES]]
    good = ~is_bad
    chunk = Chunk(np.ascontiguousarray(checks.keys[:, good]), checks.labels[good])
    return chunk, table.num_rows + len(dropped), len(dropped), reasons, sorted(examples)

  line0 = first_line
  for chunk, num_lines, skipped, reasons, examples in ordered_map(
      work, read_blocks(path, block_bytes, skip=skip_bytes), workers=workers):
    if skipped:
      bad.add('wrong number of columns', count=skipped)
    for reason, n in reasons.items():
      bad.add(reason, count=n)
    for line, reason in examples:
      if bad.need_examples():
        bad.examples.append((line0 + line, reason))
    bad.total_lines += num_lines
    line0 += num_lines
    yield chunk


# ----------------------------------------------------------------------------- one row


def one_row_keys(convert: Callable[[pa.Table], RowChecks], field_names: Sequence[str],
                 values: Sequence[str | bytes], *, dataset: str) -> np.ndarray:
  """The keys of one raw row (feature values only), by the converter of its dataset's files.

  Args:
    convert: the dataset's table converter; it gets a one-row table without the label column.
    field_names: the feature columns, in order.
    values: one raw value per feature column (``str`` values are UTF-8 encoded).
    dataset: the dataset's name, for messages.

  Returns:
    uint64 ``[F]``.

  Raises:
    InputError: the row has the wrong number of values, or a value its converter rejects.
  """
  if len(values) != len(field_names):
    raise InputError(f'a {dataset} row has {len(field_names)} feature values, got {len(values)}')
  raw = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
  table = pa.table({name: pa.array([v], pa.binary()) for name, v in zip(field_names, raw)})
  checks = convert(table)
  reasons = [reason for reason, bad in checks.problems if bad[0]]
  if reasons:
    raise InputError(f'a {dataset} row: {", ".join(reasons)}')
  return checks.keys[:, 0]
