"""Avazu (Kaggle Click-Through Rate Prediction): the raw ``train`` CSV as downloaded.

A header line, then one line per impression with 24 comma-separated columns: ``id``,
``click`` (the label) and 22 categorical fields; ``hour`` (YYMMDDHH) is kept as its raw string.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from pep_jax.data import parsing

NAME = 'avazu'
COLUMNS = ('id', 'click', 'hour', 'C1', 'banner_pos', 'site_id', 'site_domain', 'site_category',
           'app_id', 'app_domain', 'app_category', 'device_id', 'device_ip', 'device_model',
           'device_type', 'device_conn_type', 'C14', 'C15', 'C16', 'C17', 'C18', 'C19', 'C20',
           'C21')
FIELD_NAMES = COLUMNS[2:]
FIELD_KINDS = ('str',) * len(FIELD_NAMES)
HEADER = ','.join(COLUMNS).encode()
FILES = ('train',)
DOWNLOAD = ("Kaggle's 'Click-Through Rate Prediction' competition (Avazu): extract the file "
            "train (40,428,967 rows after a header line) into data.dir; train.gz, "
            "train.csv and train.csv.gz work too")


def raw_paths(directory: str) -> list[str]:
  """``[train]`` (or ``train.gz``, ``train.csv``, ``train.csv.gz``); empty if none exists."""
  path = parsing.first_file(directory, ('train', 'train.gz', 'train.csv', 'train.csv.gz'))
  return [path] if path else []


def convert(table: pa.Table) -> parsing.RowChecks:
  """Keys, labels and problems of a parsed block.

  Args:
    table: 24 binary columns named :data:`COLUMNS`, ``n`` rows.

  Returns:
    keys uint64 ``[22, n]``, labels uint8 ``[n]``, and the rows whose click is not 0/1.
  """
  keys = np.empty((len(FIELD_NAMES), table.num_rows), np.uint64)
  labels, ok = parsing.label_values(table.column('click'))
  for f, name in enumerate(FIELD_NAMES):
    keys[f] = parsing.bytes_keys(table.column(name))
  return parsing.RowChecks(keys, labels, [('click not 0/1', ~ok)])


def header_length(path: str, report: parsing.BadLines) -> int:
  """Bytes taken by the header line (0 if the file starts with data; noted in ``report``).

  Raises:
    ValueError: the first line is neither the header nor a data row.
  """
  with parsing.open_raw(path) as f:
    first = f.readline()
  line = first.rstrip(b'\r\n')
  if line == HEADER:
    return len(first)
  cols = line.split(b',')
  if not first or (len(cols) == len(COLUMNS) and cols[1] in (b'0', b'1')):
    if first:
      report.notes.append('no header line; line 1 read as data')
    return 0
  raise ValueError(f'{path}: line 1 is neither the Avazu header ({HEADER.decode()}) nor a row '
                   f'of {len(COLUMNS)} columns; got {line[:200]!r}')


def read(paths: Sequence[str], bad: list[parsing.BadLines], info: dict, *, workers: int = 1,
         block_bytes: int = 32 << 20) -> Iterator[parsing.Chunk]:
  """Yields the good rows of ``train`` in file order; records malformed lines in ``bad``.

  Args:
    paths: ``[train]``.
    bad: receives one :class:`~pep_jax.data.parsing.BadLines` for the file.
    info: receives ``header_missing`` when the file has no header line.
    workers: parsing threads.
    block_bytes: bytes parsed per block.
  """
  (path,) = paths
  report = parsing.BadLines(path)
  bad.append(report)
  skip = header_length(path, report)
  info['header_missing'] = skip == 0
  yield from parsing.read_delimited(path, column_names=COLUMNS, delimiter=',', convert=convert,
                                    bad=report, block_bytes=block_bytes, workers=workers,
                                    skip_bytes=skip, first_line=2 if skip else 1)


def row_keys(values: Sequence[str | bytes], meta: dict | None = None) -> np.ndarray:
  """The keys of one raw row: the 22 values after ``click`` (``hour`` first).

  Returns:
    uint64 ``[22]``.
  """
  del meta
  if len(values) != len(FIELD_NAMES):
    raise ValueError(f'an Avazu row has {len(FIELD_NAMES)} feature values, got {len(values)}')
  raw = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
  return parsing.bytes_keys(pa.array(raw, pa.binary()))
