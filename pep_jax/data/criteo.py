"""Criteo (Kaggle Display Advertising Challenge): the raw ``train.txt`` as downloaded.

One line per impression, tab-separated, no header, 40 columns: the 0/1 label, 13 integer
fields I1-I13 and 26 categorical fields C1-C26 (8-character hex hashes); any value but the
label may be empty. Integer value v becomes the token ``floor(ln(v)^2)`` if v > 2 else
``v - 2`` (I2 has negative values); an empty value is a NULL token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from pep_jax.data import parsing

NAME = 'criteo'
INT_FIELDS = tuple(f'I{i}' for i in range(1, 14))
CAT_FIELDS = tuple(f'C{i}' for i in range(1, 27))
FIELD_NAMES = INT_FIELDS + CAT_FIELDS
FIELD_KINDS = ('int',) * len(INT_FIELDS) + ('str',) * len(CAT_FIELDS)
COLUMNS = ('label',) + FIELD_NAMES
FILES = ('train.txt',)
DOWNLOAD = (
    "Criteo's Kaggle 'Display Advertising Challenge' data (also published by Criteo as "
    "'Criteo dac', dac.tar.gz): extract train.txt (45,840,617 lines) into data.dir; "
    "train.txt.gz works too")


def raw_paths(directory: str) -> list[str]:
  """The raw file in ``directory``: ``[train.txt]`` or ``[train.txt.gz]``; empty if neither exists."""
  path = parsing.first_file(directory, ('train.txt', 'train.txt.gz'))
  return [path] if path else []


def convert(table: pa.Table) -> parsing.RowChecks:
  """Keys, labels and problems of a parsed block of ``train.txt``.

  Args:
    table: 40 binary columns named :data:`COLUMNS`, ``n`` rows.

  Returns:
    keys uint64 ``[39, n]``, labels uint8 ``[n]`` and the rows with a bad label or a
    non-integer value in I1-I13.
  """
  keys = np.empty((len(FIELD_NAMES), table.num_rows), np.uint64)
  labels, label_ok = parsing.label_values(table.column('label'))
  problems = [('label not 0/1', ~label_ok)]
  for f, name in enumerate(INT_FIELDS):
    keys[f], ok = parsing.integer_keys(table.column(name))
    problems.append((f'non-integer {name}', ~ok))
  for f, name in enumerate(CAT_FIELDS, start=len(INT_FIELDS)):
    keys[f] = parsing.bytes_keys(table.column(name))
  return parsing.RowChecks(keys, labels, problems)


def read(paths: Sequence[str], bad: list[parsing.BadLines], info: dict, *, workers: int = 1,
         block_bytes: int = 32 << 20) -> Iterator[parsing.Chunk]:
  """Yields the good rows of ``train.txt`` in file order; records malformed lines in ``bad``.

  Args:
    paths: ``[train.txt]``.
    bad: receives one :class:`~pep_jax.data.parsing.BadLines` for the file.
    info: facts for ``meta.json`` (none for Criteo).
    workers: parsing threads.
    block_bytes: bytes parsed per block.
  """
  del info
  (path,) = paths
  report = parsing.BadLines(path)
  bad.append(report)
  with parsing.open_raw(path) as f:
    first = f.readline()
  if first and first.split(b'\t', 1)[0].strip() not in (b'0', b'1'):
    report.notes.append('line 1 does not start with a 0/1 label: a header line? '
                        'train.txt has none; it is skipped as malformed')
  yield from parsing.read_delimited(path, column_names=COLUMNS, delimiter='\t', convert=convert,
                                    bad=report, block_bytes=block_bytes, workers=workers)


def row_keys(values: Sequence[str | bytes], meta: dict | None = None) -> np.ndarray:
  """The keys of one raw row without its label: 13 integers then 26 categorical values.

  Args:
    values: 39 strings as in ``train.txt`` (empty for missing).
    meta: the cache's ``meta.json`` (unused; every reader takes it).

  Returns:
    uint64 ``[39]``.
  """
  del meta
  if len(values) != len(FIELD_NAMES):
    raise ValueError(f'a Criteo row has {len(FIELD_NAMES)} feature values, got {len(values)}')
  raw = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
  ints = pa.array(raw[:len(INT_FIELDS)], pa.binary())
  int_keys, ok = parsing.integer_keys(ints)
  if not ok.all():
    bad = [INT_FIELDS[i] for i in np.flatnonzero(~ok)]
    raise ValueError(f'non-integer value in Criteo field(s) {bad}')
  cat_keys = parsing.bytes_keys(pa.array(raw[len(INT_FIELDS):], pa.binary()))
  return np.concatenate([int_keys, cat_keys])
