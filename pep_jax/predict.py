"""Score a file of rows with an exported artifact; one probability per input row.

    python -m pep_jax.predict --artifact=artifacts/demo_b53441 --input=rows.csv --output=p.txt

Inputs, by ``--format`` (``auto``: ``.npy`` files are ids, and so is every file of a model
trained on synthetic data; other files are raw rows of the artifact's dataset):

* ``ids``: per-field indices as the model sees them, a ``.npy`` array ``[N, F]`` or a CSV file
  of ``F`` integers per line.
* ``raw``: rows in the dataset's own format, with or without the label column: Criteo
  ``train.txt`` lines (tab-separated, 40 or 39 columns), Avazu CSV (24 columns with ``click``,
  23 without; with or without the header line), or MovieLens ratings
  (``UserID::MovieID::Rating::Timestamp``, or without the rating) with ``users.dat`` and
  ``movies.dat`` in the same folder. They are read by the dataset's ``encode``, the function
  the cache build reads the training files with, so a row gets the keys it had in training;
  values the vocabulary does not know map to their field's out-of-vocabulary index.

A malformed row is never scored: the file is refused with the count, reasons and first line
numbers, and nothing is written.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
from absl import flags

from pep_jax import cli, serving
from pep_jax.data import cache, parsing, registry
from pep_jax.errors import InputError, MissingError

FORMATS = ('auto', 'ids', 'raw')


def _refuse(report: parsing.BadLines) -> None:
  if report.count:
    raise InputError(f'{report.summary()}. Malformed rows are not scored; fix or remove them')


def _read(path: str, columns, delimiter: str, convert, *, skip_bytes: int = 0,
          first_line: int = 1) -> np.ndarray:
  """Keys ``[n, F]`` of every row of a delimited file; refuses a file with a bad row."""
  report = parsing.BadLines(path)
  chunks = list(parsing.read_delimited(path, column_names=columns, delimiter=delimiter,
                                       convert=convert, bad=report, skip_bytes=skip_bytes,
                                       first_line=first_line))
  _refuse(report)
  return _stack(path, chunks)


def _stack(path: str, chunks: list[parsing.Chunk]) -> np.ndarray:
  """The keys ``[n, F]`` of the chunks of a whole file; refuses a file without rows."""
  if sum(len(c.labels) for c in chunks) == 0:
    raise InputError(f'{path}: no rows to score')
  return np.concatenate([c.keys for c in chunks], axis=1).T  # [n, F]


def raw_keys(path: str, dataset: str, meta: dict) -> np.ndarray:
  """Keys ``[n, F]`` of every row of a raw file, by its dataset's encoder.

  Args:
    path: rows in the dataset's own format, with or without the label column.
    dataset: the dataset's name (the artifact's ``manifest.json``).
    meta: the ``meta.json`` of the cache the model was trained on.

  Returns:
    uint64 ``[n, F]``, in the file's row order.

  Raises:
    InputError: the file has a malformed row (count, reasons, first line numbers) or no row.
    MissingError: a file the rows are read with is missing (MovieLens: ``users.dat``).
  """
  bad: list[parsing.BadLines] = []
  chunks = list(registry.raw_dataset(dataset).encode(path, bad, {}, labelled=None, meta=meta))
  for report in bad:
    _refuse(report)
  return _stack(path, chunks)


def ids_from_csv(path: str, field_dims: np.ndarray) -> np.ndarray:
  """Per-field ids ``[n, F]`` from a CSV file of ``F`` integers per line."""
  names = [f'f{i}' for i in range(len(field_dims))]

  def convert(table: pa.Table) -> parsing.RowChecks:
    keys = np.empty((len(names), table.num_rows), np.uint64)
    problems = []
    for f, name in enumerate(names):
      values, ok = parsing.parse_ints(table.column(name))
      keys[f] = values.view(np.uint64)
      problems.append((f'field {f} is not an integer', ~ok))
      problems.append((f'field {f} outside 0..{field_dims[f] - 1}',
                       ok & ((values < 0) | (values >= field_dims[f]))))
    return parsing.RowChecks(keys, np.zeros(table.num_rows, np.uint8), problems)

  return _read(path, names, ',', convert).view(np.int64)


def ids_from_npy(path: str, field_dims: np.ndarray) -> np.ndarray:
  """Per-field ids ``[n, F]`` from a ``.npy`` array, checked against ``field_dims``."""
  try:
    ids = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise InputError(f'{path}: not a readable .npy array ({e})') from e
  if ids.ndim != 2 or ids.shape[1] != len(field_dims) or not np.issubdtype(ids.dtype, np.integer):
    raise InputError(f'{path}: expected integer ids of shape [rows, {len(field_dims)}], got '
                     f'{ids.dtype} {ids.shape}')
  bad = np.flatnonzero(((ids < 0) | (ids >= field_dims[None, :])).any(axis=1))
  if len(bad):
    raise InputError(f'{path}: {len(bad)} rows have ids outside 0..field_dims-1, first rows '
                     f'(0-based) {bad[:10].tolist()}; field_dims {field_dims.tolist()}')
  return ids


def encode_file(path: str, scorer: serving.Scorer, fmt: str = 'auto') -> np.ndarray:
  """The per-field ids ``[n, F]`` of every row of ``path``.

  Raises:
    InputError: the file, a row or a flag cannot be used (the message names it and the lines).
    MissingError: the file, or a file it is read with, is missing.
  """
  check_input(path)
  if fmt not in FORMATS:
    raise InputError(f'--format={fmt}: expected one of {FORMATS}')
  dataset = scorer.manifest['dataset']
  if fmt == 'auto':
    fmt = 'ids' if path.endswith('.npy') or scorer.vocab_dir is None else 'raw'
  if fmt == 'ids':
    read = ids_from_npy if path.endswith('.npy') else ids_from_csv
    return read(path, scorer.field_dims)
  if scorer.vocab_dir is None:
    raise InputError(f'--format=raw: the artifact was trained on {dataset} data, which has no '
                     'raw format; give ids (CSV or .npy)')
  with open(os.path.join(scorer.vocab_dir, 'meta.json')) as f:
    meta = json.load(f)
  return cache.Vocabulary.load(scorer.vocab_dir).encode(raw_keys(path, dataset, meta))


def check_input(path: str) -> None:
  """Raises a one-line error unless ``path`` is a file."""
  if os.path.isdir(path):
    raise InputError(f'--input={path} is a folder; give a file of rows')
  if not os.path.isfile(path):
    raise MissingError(f'--input={path} not found')


def predict_file(artifact: str, path: str, output: str | None = None, fmt: str = 'auto'
                 ) -> np.ndarray:
  """Scores every row of ``path`` with ``artifact``; writes one probability per line.

  Args:
    artifact: folder written by :mod:`pep_jax.export`.
    path: the rows (see the module docstring).
    output: file to write (atomically); None writes nothing.
    fmt: 'auto', 'ids' or 'raw'.

  Returns:
    float64 ``[n]``, in the input's row order.
  """
  check_input(path)
  if output:  # before any work: a bad --output loses nothing
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
      raise MissingError(f'--output={output}: the folder {folder} does not exist')
    if os.path.isdir(output):
      raise InputError(f'--output={output} is a folder; give a file name')
  scorer = serving.load(artifact)
  probs = scorer(encode_file(path, scorer, fmt))
  if output:
    tmp = f'{output}.tmp-{os.getpid()}'
    np.savetxt(tmp, probs, fmt='%.8f')
    os.replace(tmp, output)
  return probs


def define_flags() -> None:
  """The flags of ``python -m pep_jax.predict`` (defined only when run as a command)."""
  flags.DEFINE_string('artifact', None, 'folder written by python -m pep_jax.export')
  flags.DEFINE_string('input', None, 'rows to score')
  flags.DEFINE_string('output', None, 'file for the probabilities (default: standard output)')
  flags.DEFINE_enum('format', 'auto', FORMATS, 'ids, raw rows of the dataset, or auto')
  flags.mark_flags_as_required(['artifact', 'input'])


def main(argv):
  cli.exit_if_argv(argv)
  args = flags.FLAGS
  probs = cli.exit_on_user_error(predict_file, args.artifact, args.input, args.output,
                                 args.format)
  if args.output:
    print(f'{len(probs):,} probabilities written to {args.output}')
  else:
    print('\n'.join(f'{p:.8f}' for p in probs))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
