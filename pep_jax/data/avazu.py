"""Avazu (Kaggle Click-Through Rate Prediction): the raw ``train`` CSV as downloaded.

A header line, then one line per impression with 24 comma-separated columns: ``id``,
``click`` (the label) and 22 categorical fields; ``hour`` (YYMMDDHH) is kept as its raw string.

:func:`encode` is the one function that turns lines (with or without ``click`` and the header)
into keys: the cache build and ``pep_jax.predict`` both read through it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from pep_jax.data import parsing
from pep_jax.errors import InputError

NAME = 'avazu'
COLUMNS = ('id', 'click', 'hour', 'C1', 'banner_pos', 'site_id', 'site_domain', 'site_category',
           'app_id', 'app_domain', 'app_category', 'device_id', 'device_ip', 'device_model',
           'device_type', 'device_conn_type', 'C14', 'C15', 'C16', 'C17', 'C18', 'C19', 'C20',
           'C21')
FIELD_NAMES = COLUMNS[2:]
FIELD_KINDS = ('str',) * len(FIELD_NAMES)
UNLABELLED_COLUMNS = tuple(c for c in COLUMNS if c != 'click')  # rows to score
HEADER = ','.join(COLUMNS).encode()
DELIMITER = ','
FILES = ('train',)
DOWNLOAD = ("Kaggle's 'Click-Through Rate Prediction' competition (Avazu): extract the file "
            "train (40,428,967 rows after a header line) into data.dir; train.gz, "
            "train.csv and train.csv.gz work too")


def raw_paths(directory: str) -> list[str]:
  """``[train]`` (or ``train.gz``, ``train.csv``, ``train.csv.gz``); empty if none exists."""
  path = parsing.first_file(directory, ('train', 'train.gz', 'train.csv', 'train.csv.gz'))
  return [path] if path else []


def convert(table: pa.Table) -> parsing.RowChecks:
  """Keys, labels and problems of a parsed block of Avazu lines: where values become keys.

  Args:
    table: binary columns named :data:`COLUMNS` (or without ``click``, or only the
      :data:`FIELD_NAMES`), ``n`` rows; ``id`` is not a feature.

  Returns:
    keys uint64 ``[22, n]``, labels uint8 ``[n]`` (0 without ``click``), and the rows whose
    click is not 0/1.
  """
  keys = np.empty((len(FIELD_NAMES), table.num_rows), np.uint64)
  problems = []
  if 'click' in table.column_names:
    labels, ok = parsing.label_values(table.column('click'))
    problems.append(('click not 0/1', ~ok))
  else:
    labels = np.zeros(table.num_rows, np.uint8)
  for f, name in enumerate(FIELD_NAMES):
    keys[f] = parsing.bytes_keys(table.column(name))
  return parsing.RowChecks(keys, labels, problems)


def layout(path: str, report: parsing.BadLines, labelled: bool | None = True
           ) -> tuple[tuple[str, ...], int]:
  """The columns of an Avazu file's lines and the bytes of its header line (0 if none).

  Args:
    path: the file.
    report: gets a note when the file has no header line.
    labelled: True: the lines have ``click``; False: they do not; None: as the header says,
      or, without a header, ``click`` is there when line 1 has 24 columns.

  Returns:
    :data:`COLUMNS` or :data:`UNLABELLED_COLUMNS`, and the header's length in bytes.

  Raises:
    InputError: line 1 is a header with other columns, or (``labelled=True``) neither the
      header nor a row of 24 columns with a 0/1 click.
  """
  first = parsing.first_line(path)
  line = first.rstrip(b'\r\n')
  cols = line.split(DELIMITER.encode())
  accepted = {True: [COLUMNS], False: [UNLABELLED_COLUMNS],
              None: [COLUMNS, UNLABELLED_COLUMNS]}[labelled]
  if cols[0] == b'id':  # a header line
    names = tuple(c.decode('latin-1') for c in cols)
    if names in accepted:
      return names, len(first)
  elif not first:
    return accepted[0], 0
  elif labelled is not True or (len(cols) == len(COLUMNS) and cols[1] in (b'0', b'1')):
    if labelled is None:  # no header to go by: line 1's column count decides
      labelled = len(cols) == len(COLUMNS)
    report.notes.append('no header line; line 1 read as data')
    return (COLUMNS if labelled else UNLABELLED_COLUMNS), 0
  headers = ' or '.join(','.join(columns) for columns in accepted)
  raise InputError(f'{path}: line 1 is neither the Avazu header ({headers}) nor a row of '
                   f'{len(accepted[0])} columns; got {line[:200]!r}')


def encode(path: str, bad: list[parsing.BadLines], info: dict, *, labelled: bool | None = True,
           meta: dict | None = None, workers: int = 1, block_bytes: int = 32 << 20
           ) -> Iterator[parsing.Chunk]:
  """The keys of the rows of an Avazu file, in file order: its one raw-row encoder.

  The cache build reads ``train`` through it; ``pep_jax.predict`` reads rows to score through
  it. Malformed lines are left out and recorded in ``bad`` with their line numbers.

  Args:
    path: CSV lines as in ``train`` (plain or ``.gz``), with or without ``click``, with or
      without the header line.
    bad: receives one :class:`~pep_jax.data.parsing.BadLines` for the file.
    info: receives ``header_missing`` (True when the file has no header line).
    labelled: whether lines have ``click`` (see :func:`layout`; None: from line 1).
    meta: the cache's ``meta.json`` when encoding rows for a built cache (unused: Avazu keys
      depend on the raw values alone).
    workers: parsing threads.
    block_bytes: bytes parsed per block.

  Yields:
    The good lines block by block: keys uint64 ``[22, n]`` (field-major, as the cache writes
    them), labels uint8 ``[n]`` (0 without ``click``).

  Raises:
    InputError: line 1 is neither an accepted header nor a row (see :func:`layout`).
  """
  del meta
  report = parsing.BadLines(path)
  bad.append(report)
  columns, skip = layout(path, report, labelled)
  info['header_missing'] = skip == 0
  yield from parsing.read_delimited(path, column_names=columns, delimiter=DELIMITER,
                                    convert=convert, bad=report, block_bytes=block_bytes,
                                    workers=workers, skip_bytes=skip, first_line=2 if skip else 1)


def read(paths: Sequence[str], bad: list[parsing.BadLines], info: dict, *, workers: int = 1,
         block_bytes: int = 32 << 20) -> Iterator[parsing.Chunk]:
  """Yields the good rows of ``train`` in file order (:func:`encode`, ``click`` required).

  Args:
    paths: ``[train]``.
    bad: receives one :class:`~pep_jax.data.parsing.BadLines` for the file.
    info: receives ``header_missing`` when the file has no header line.
    workers: parsing threads.
    block_bytes: bytes parsed per block.
  """
  (path,) = paths
  yield from encode(path, bad, info, workers=workers, block_bytes=block_bytes)


def row_keys(values: Sequence[str | bytes], meta: dict | None = None) -> np.ndarray:
  """The keys of one raw row (by :func:`convert`, as in a file).

  Args:
    values: the 22 values after ``click`` (``hour`` first), strings as in ``train``.
    meta: the cache's ``meta.json`` (unused; every dataset's ``row_keys`` takes it).

  Returns:
    uint64 ``[22]``.

  Raises:
    InputError: not 22 values.
  """
  del meta
  return parsing.one_row_keys(convert, FIELD_NAMES, values, dataset='Avazu')
