"""Criteo (Kaggle Display Advertising Challenge): the raw ``train.txt`` as downloaded.

One line per impression, tab-separated, no header, 40 columns: the 0/1 label, 13 integer
fields I1-I13 and 26 categorical fields C1-C26 (8-character hex hashes); any value but the
label may be empty. Integer value v becomes the token ``floor(ln(v)^2)`` if v > 2 else
``v - 2`` (I2 has negative values); an empty value is a NULL token.

:func:`encode` is the one function that turns lines (with or without the label) into keys:
the cache build and ``pep_jax.predict`` both read through it.
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
DELIMITER = '\t'
DOWNLOAD = (
    "Criteo's Kaggle 'Display Advertising Challenge' data (also published by Criteo as "
    "'Criteo dac', dac.tar.gz): extract train.txt (45,840,617 lines) into data.dir; "
    "train.txt.gz works too")


def raw_paths(directory: str) -> list[str]:
  """The raw file in ``directory``: ``[train.txt]`` or ``[train.txt.gz]``; empty if neither exists."""
  path = parsing.first_file(directory, ('train.txt', 'train.txt.gz'))
  return [path] if path else []


def convert(table: pa.Table) -> parsing.RowChecks:
  """Keys, labels and problems of a parsed block of Criteo lines: where values become keys.

  Args:
    table: binary columns named :data:`COLUMNS` (or :data:`FIELD_NAMES`, lines without the
      label), ``n`` rows.

  Returns:
    keys uint64 ``[39, n]``, labels uint8 ``[n]`` (0 without a label column) and the rows with
    a bad label or a non-integer value in I1-I13.
  """
  keys = np.empty((len(FIELD_NAMES), table.num_rows), np.uint64)
  problems = []
  if 'label' in table.column_names:
    labels, label_ok = parsing.label_values(table.column('label'))
    problems.append(('label not 0/1', ~label_ok))
  else:
    labels = np.zeros(table.num_rows, np.uint8)
  for f, name in enumerate(INT_FIELDS):
    keys[f], ok = parsing.integer_keys(table.column(name))
    problems.append((f'non-integer {name}', ~ok))
  for f, name in enumerate(CAT_FIELDS, start=len(INT_FIELDS)):
    keys[f] = parsing.bytes_keys(table.column(name))
  return parsing.RowChecks(keys, labels, problems)


def layout(path: str, report: parsing.BadLines, labelled: bool | None = True
           ) -> tuple[tuple[str, ...], int]:
  """The columns of a Criteo file's lines, and the bytes before its first row (always 0).

  Args:
    path: the file.
    report: gets a note when line 1 of a labelled file does not start with a label.
    labelled: True: every line starts with the label; False: no line has it; None: the lines
      have the label when line 1 has 40 columns.

  Returns:
    :data:`COLUMNS` or :data:`FIELD_NAMES`, and 0 (a Criteo file has no header line).
  """
  first = parsing.first_line(path)
  if labelled is None:
    labelled = first.count(DELIMITER.encode()) + 1 == len(COLUMNS)
  if labelled and first and first.split(b'\t', 1)[0].strip() not in (b'0', b'1'):
    report.notes.append('line 1 does not start with a 0/1 label: a header line? '
                        'train.txt has none; it is skipped as malformed')
  return (COLUMNS if labelled else FIELD_NAMES), 0


def encode(path: str, bad: list[parsing.BadLines], info: dict, *, labelled: bool | None = True,
           meta: dict | None = None, workers: int = 1, block_bytes: int = 32 << 20
           ) -> Iterator[parsing.Chunk]:
  """The keys of the rows of a Criteo file, in file order: its one raw-row encoder.

  The cache build reads ``train.txt`` through it; ``pep_jax.predict`` reads rows to score
  through it. Malformed lines are left out and recorded in ``bad`` with their line numbers.

  Args:
    path: lines as in ``train.txt`` (plain or ``.gz``), with or without the label column.
    bad: receives one :class:`~pep_jax.data.parsing.BadLines` for the file.
    info: facts for ``meta.json`` (none for Criteo).
    labelled: whether lines start with the label (see :func:`layout`; None: from line 1).
    meta: the cache's ``meta.json`` when encoding rows for a built cache (unused: Criteo keys
      depend on the raw values alone).
    workers: parsing threads.
    block_bytes: bytes parsed per block.

  Yields:
    The good lines block by block: keys uint64 ``[39, n]`` (field-major, as the cache writes
    them), labels uint8 ``[n]`` (0 without the label column).
  """
  del info, meta
  report = parsing.BadLines(path)
  bad.append(report)
  columns, _ = layout(path, report, labelled)
  yield from parsing.read_delimited(path, column_names=columns, delimiter=DELIMITER,
                                    convert=convert, bad=report, block_bytes=block_bytes,
                                    workers=workers)


def read(paths: Sequence[str], bad: list[parsing.BadLines], info: dict, *, workers: int = 1,
         block_bytes: int = 32 << 20) -> Iterator[parsing.Chunk]:
  """Yields the good rows of ``train.txt`` in file order (:func:`encode`, labels required).

  Args:
    paths: ``[train.txt]``.
    bad: receives one :class:`~pep_jax.data.parsing.BadLines` for the file.
    info: facts for ``meta.json`` (none for Criteo).
    workers: parsing threads.
    block_bytes: bytes parsed per block.
  """
  (path,) = paths
  yield from encode(path, bad, info, workers=workers, block_bytes=block_bytes)


def row_keys(values: Sequence[str | bytes], meta: dict | None = None) -> np.ndarray:
  """The keys of one raw row without its label (by :func:`convert`, as in a file).

  Args:
    values: 13 integers then 26 categorical values, strings as in ``train.txt`` (empty for
      missing).
    meta: the cache's ``meta.json`` (unused; every dataset's ``row_keys`` takes it).

  Returns:
    uint64 ``[39]``.

  Raises:
    InputError: not 39 values, or a non-integer value in I1-I13.
  """
  del meta
  return parsing.one_row_keys(convert, FIELD_NAMES, values, dataset='Criteo')
