"""The columnar cache of a real dataset: built once, then memory-mapped.

Building takes two passes over the rows a reader yields (:class:`~pep_jax.data.parsing.Chunk`):

1. Each row gets its split from a counter-based hash of ``(split_seed, row number)``; every
   field's value keys go to a temporary column file. Then, per field, the keys are counted
   (over all rows, or the training rows with ``count_on='train'``) and the values seen at least
   ``min_count`` times get indices ``1..K`` by decreasing count (ties: increasing key); index 0
   is the field's out-of-vocabulary (OOV) slot, so ``field_dims[f] = K + 1``.
2. The key columns are read back in row blocks, turned into int32 indices and appended to
   one ``[N, F]`` array per split (rows in file order).

Layout of a cache folder::

  train_ids.npy valid_ids.npy test_ids.npy   int32 [N_split, F]
  train_labels.npy ...                       uint8 [N_split]
  split.npy                                  uint8 [N]: 0 train, 1 valid, 2 test, per kept row
  vocab_keys.npy vocab_counts.npy           per field (concatenated): keys in index order,
                                             rows per index
  meta.json                                  field names/dims, row counts, bad lines, settings
  manifest.json                              settings, raw-file signatures, array checksums

The folder is written under a temporary name and renamed when complete; a folder whose
manifest does not match the settings, the raw files or its arrays' checksums is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from pep_jax.data import parsing
from pep_jax.data.base import CTRDataset, Split
from pep_jax.data.split import split_assignment
from pep_jax.errors import InputError

FORMAT_VERSION = 1
SPLITS = ('train', 'valid', 'test')
_ROWS_PER_BLOCK = 1 << 20  # rows per block of the encoding pass


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything the cache content depends on besides the raw bytes."""

  dataset: str
  source: str  # 'raw' or 'tfds'
  min_count: int
  count_on: str  # 'all' | 'train'
  split: tuple[float, float, float]
  split_seed: int

  def folder_name(self) -> str:
    """``<dataset>-<hash>``: one folder per dataset and settings."""
    blob = json.dumps([FORMAT_VERSION, dataclasses.asdict(self)], sort_keys=True).encode()
    return f'{self.dataset}-{hashlib.sha256(blob).hexdigest()[:12]}'

  def to_json(self) -> dict:
    return {'format_version': FORMAT_VERSION, **dataclasses.asdict(self),
            'split': list(self.split)}


@dataclasses.dataclass(frozen=True)
class Source:
  """A dataset as the cache builder sees it.

  Attributes:
    name: dataset name.
    field_names: one per field.
    field_kinds: 'int' (Criteo integer rule tokens) or 'str' (byte-string keys) per field.
    inputs: files whose size and mtime identify the raw data (or other identifying strings).
    read: ``read(bad_lines, info) -> iterator of Chunk``; appends one BadLines per file read
      to the list ``bad_lines`` and may put facts for ``meta.json`` into the dict ``info``.
  """

  name: str
  field_names: tuple[str, ...]
  field_kinds: tuple[str, ...]
  inputs: tuple[str, ...]
  read: Callable[[list, dict], Iterator[parsing.Chunk]]


# ----------------------------------------------------------------------------- split


# ----------------------------------------------------------------------------- vocabulary


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Per field, the kept value keys in index order: ``keys[f][i - 1]`` has index ``i``.

  Attributes:
    field_names, field_kinds: as in :class:`Source`.
    keys: per field, uint64 ``[field_dims[f] - 1]``.
    counts: per field, int64 ``[field_dims[f]]``: rows per index (index 0: all rare values).
  """

  field_names: tuple[str, ...]
  field_kinds: tuple[str, ...]
  keys: tuple[np.ndarray, ...]
  counts: tuple[np.ndarray, ...]

  @property
  def field_dims(self) -> np.ndarray:
    return np.array([len(k) + 1 for k in self.keys], np.int64)

  def lookup(self, field: int, keys: np.ndarray) -> np.ndarray:
    """Indices of ``keys`` (uint64 ``[n]``) in field ``field``; 0 (OOV) for unknown keys.

    Returns:
      int32 ``[n]``.
    """
    table = self._sorted(field)
    sorted_keys, index_of = table
    if len(sorted_keys) == 0:
      return np.zeros(len(keys), np.int32)
    if len(sorted_keys) > 65536 and len(keys) > 4096:
      # Sorted queries walk the table front to back: several times faster than random probes.
      order = np.argsort(keys, kind='stable')
      pos_sorted = np.searchsorted(sorted_keys, keys[order])
      pos = np.empty_like(pos_sorted)
      pos[order] = pos_sorted
    else:
      pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == keys, index_of[pos], 0).astype(np.int32)

  def _sorted(self, field: int) -> tuple[np.ndarray, np.ndarray]:
    cache = self.__dict__.setdefault('_tables', {})
    if field not in cache:
      order = np.argsort(self.keys[field], kind='stable')
      cache[field] = (self.keys[field][order], (order + 1).astype(np.int32))
    return cache[field]

  def encode(self, keys: np.ndarray) -> np.ndarray:
    """uint64 keys ``[F]`` or ``[n, F]`` -> int32 indices of the same shape."""
    keys = np.asarray(keys, np.uint64)
    flat = keys.reshape(-1, len(self.keys))
    out = np.stack([self.lookup(f, flat[:, f]) for f in range(len(self.keys))], axis=1)
    return out.reshape(keys.shape)

  def value(self, field: int, index: int) -> str:
    """A readable form of the value behind ``index`` of ``field``."""
    if index == 0:
      return '<OOV>'
    key = self.keys[field][index - 1]
    if self.field_kinds[field] == 'int':
      return 'NULL' if key == parsing.INT_NULL_KEY else str(int(key.view(np.int64)))
    raw = parsing.key_to_bytes(key)
    if raw is None:
      return f'<hash {int(key):016x}>'
    return 'NULL' if raw == b'' else raw.decode('utf-8', 'backslashreplace')

  def save(self, folder: str) -> None:
    """Writes ``vocab_keys.npy`` and ``vocab_counts.npy`` (all fields, concatenated)."""
    np.save(os.path.join(folder, 'vocab_keys.npy'), np.concatenate(self.keys).astype(np.uint64))
    np.save(os.path.join(folder, 'vocab_counts.npy'), np.concatenate(self.counts).astype(np.int64))

  @classmethod
  def load(cls, folder: str) -> Vocabulary:
    """The vocabulary of a cache folder (names, kinds and sizes from its ``meta.json``)."""
    with open(os.path.join(folder, 'meta.json')) as f:
      meta = json.load(f)
    dims = np.array(meta['field_dims'], np.int64)
    keys = np.load(os.path.join(folder, 'vocab_keys.npy'))
    counts = np.load(os.path.join(folder, 'vocab_counts.npy'))
    return cls(tuple(meta['field_names']), tuple(meta['field_kinds']),
               tuple(np.split(keys, np.cumsum(dims - 1)[:-1])),
               tuple(np.split(counts, np.cumsum(dims)[:-1])))


def field_vocabulary(keys: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
  """Kept keys of one field and the count of each index.

  Args:
    keys: uint64 ``[n]``: the field's value keys over the counted rows.
    min_count: values seen fewer times share index 0.

  Returns:
    ``kept`` uint64 ``[K]`` in index order (count descending, then key ascending) and
    ``counts`` int64 ``[K + 1]`` (``counts[0]``: rows of rare values).
  """
  values, counts = np.unique(keys, return_counts=True)
  keep = counts >= max(min_count, 1)
  order = np.lexsort((values[keep], -counts[keep]))
  kept = values[keep][order]
  index_counts = np.concatenate([[counts[~keep].sum()], counts[keep][order]]).astype(np.int64)
  return kept, index_counts


# ----------------------------------------------------------------------------- files


def _crc32_file(path: str) -> int:
  crc = 0
  with open(path, 'rb') as f:
    while block := f.read(64 << 20):
      crc = zlib.crc32(block, crc)
  return crc


def _file_facts(path: str) -> dict:
  return {'bytes': os.path.getsize(path), 'crc32': _crc32_file(path)}


def input_signature(inputs: Sequence[str]) -> list[dict]:
  """Size and mtime of each raw input file (other strings are kept as they are)."""
  out = []
  for item in inputs:
    if os.path.isfile(item):
      st = os.stat(item)
      out.append({'path': os.path.abspath(item), 'bytes': st.st_size, 'mtime_ns': st.st_mtime_ns})
    else:
      out.append({'id': item})
  return out


class _NpyWriter:
  """Appends row blocks to an ``.npy`` file of known shape, without memory-mapping it."""

  def __init__(self, path: str, shape: tuple[int, ...], dtype):
    self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
    self.file = open(path, 'wb')
    np.lib.format.write_array_header_1_0(
        self.file, {'descr': np.lib.format.dtype_to_descr(self.dtype), 'fortran_order': False,
                    'shape': shape})
    self.rows = 0

  def write(self, block: np.ndarray) -> None:
    self.file.write(np.ascontiguousarray(block, self.dtype).tobytes())
    self.rows += len(block)

  def close(self) -> None:
    self.file.close()
    if self.rows != self.shape[0]:
      raise RuntimeError(f'{self.path}: wrote {self.rows} rows, expected {self.shape[0]}')


# ----------------------------------------------------------------------------- build


def build(source: Source, settings: Settings, folder: str, *, max_bad_fraction: float,
          workers: int = 1) -> dict:
  """Builds the cache of ``source`` into ``folder`` (replacing it), atomically.

  Returns:
    The content of ``meta.json``.
  """
  start = time.perf_counter()
  parent = os.path.dirname(os.path.abspath(folder))
  os.makedirs(parent, exist_ok=True)
  tmp = f'{folder}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    meta = _build_into(source, settings, tmp, max_bad_fraction=max_bad_fraction, workers=workers)
    meta['build_seconds'] = round(time.perf_counter() - start, 2)
    with open(os.path.join(tmp, 'meta.json'), 'w') as f:
      json.dump(meta, f, indent=1)
    arrays = sorted(n for n in os.listdir(tmp) if n.endswith('.npy') or n == 'meta.json')
    manifest = {'settings': settings.to_json(), 'inputs': input_signature(source.inputs),
                'files': {n: _file_facts(os.path.join(tmp, n)) for n in arrays}}
    with open(os.path.join(tmp, 'manifest.json'), 'w') as f:
      json.dump(manifest, f, indent=1)
    if os.path.exists(folder):
      old = f'{folder}.old-{os.getpid()}'
      os.rename(folder, old)
      shutil.rmtree(old)
    os.rename(tmp, folder)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  logging.info('built %s in %.1f s', folder, meta['build_seconds'])
  return meta


def _build_into(source: Source, settings: Settings, tmp: str, *, max_bad_fraction: float,
                workers: int) -> dict:
  """The two passes (see the module docstring); writes everything but the manifest."""
  num_fields = len(source.field_names)
  col_paths = [os.path.join(tmp, f'keys_{f}.tmp') for f in range(num_fields)]
  bad_lines: list[parsing.BadLines] = []
  info: dict = {}
  labels_path, split_path = os.path.join(tmp, 'labels.tmp'), os.path.join(tmp, 'split.tmp')

  # Pass 1: keys to column files, split per row.
  start = time.perf_counter()
  num_rows = 0
  split_counts = np.zeros(3, np.int64)
  label_sum = 0
  cols = [open(p, 'wb') for p in col_paths]
  try:
    with open(labels_path, 'wb') as labels_file, open(split_path, 'wb') as split_file:
      for chunk in source.read(bad_lines, info):
        n = len(chunk.labels)
        split = split_assignment(num_rows, n, settings.split_seed, settings.split)
        for f in range(num_fields):
          cols[f].write(chunk.keys[f].tobytes())
        labels_file.write(chunk.labels.tobytes())
        split_file.write(split.tobytes())
        split_counts += np.bincount(split, minlength=3)
        label_sum += int(chunk.labels.sum())
        num_rows += n
  finally:
    for c in cols:
      c.close()
  for report in bad_lines:
    logging.info('%s', report.summary())
    report.check(max_bad_fraction)
  if num_rows == 0:
    raise InputError(f'{", ".join(r.path for r in bad_lines)}: no usable rows')
  pass1_seconds = round(time.perf_counter() - start, 2)

  # Vocabulary per field, from the counted rows.
  split_all = np.fromfile(split_path, np.uint8)
  counted = split_all == 0 if settings.count_on == 'train' else None

  def count_field(f: int):
    keys = np.fromfile(col_paths[f], np.uint64)
    return field_vocabulary(keys if counted is None else keys[counted], settings.min_count)

  fields = list(parsing.ordered_map(count_field, range(num_fields), workers=workers))
  vocab = Vocabulary(source.field_names, source.field_kinds,
                     tuple(k for k, _ in fields), tuple(c for _, c in fields))
  vocab.save(tmp)
  np.save(os.path.join(tmp, 'split.npy'), split_all)
  del split_all  # the vocabulary is built; free the split column before pass 2

  # Pass 2: encode row blocks, append to the split files.
  writers = {}
  for s, name in enumerate(SPLITS):
    writers[name] = (_NpyWriter(os.path.join(tmp, f'{name}_ids.npy'),
                                (int(split_counts[s]), num_fields), np.int32),
                     _NpyWriter(os.path.join(tmp, f'{name}_labels.npy'),
                                (int(split_counts[s]),), np.uint8))

  def encode_block(first: int):
    n = min(_ROWS_PER_BLOCK, num_rows - first)
    ids = np.empty((n, num_fields), np.int32)
    for f in range(num_fields):
      keys = np.fromfile(col_paths[f], np.uint64, count=n, offset=first * 8)
      ids[:, f] = vocab.lookup(f, keys)
    split = np.fromfile(split_path, np.uint8, count=n, offset=first)
    labels = np.fromfile(labels_path, np.uint8, count=n, offset=first)
    return ids, labels, split

  for ids, labels, split in parsing.ordered_map(
      encode_block, range(0, num_rows, _ROWS_PER_BLOCK), workers=workers):
    for s, name in enumerate(SPLITS):
      rows = split == s
      writers[name][0].write(ids[rows])
      writers[name][1].write(labels[rows])
  for ids_writer, labels_writer in writers.values():
    ids_writer.close()
    labels_writer.close()
  for p in col_paths + [labels_path, split_path]:
    os.remove(p)

  field_dims = [int(d) for d in vocab.field_dims]
  meta = {
      'dataset': source.name,
      'field_names': list(source.field_names),
      'field_kinds': list(source.field_kinds),
      'field_dims': field_dims,
      'num_features': int(sum(field_dims)),
      'num_rows': int(num_rows),
      'split_rows': {name: int(split_counts[s]) for s, name in enumerate(SPLITS)},
      'positive_rate': label_sum / num_rows,
      'num_bad_lines': int(sum(r.count for r in bad_lines)),
      'bad_lines': [r.to_json() for r in bad_lines],
      'min_count': settings.min_count,
      'count_on': settings.count_on,
      'split': list(settings.split),
      'split_seed': settings.split_seed,
      'source': settings.source,
      'reader': info,
      'pass1_seconds': pass1_seconds,
  }
  return meta


# ----------------------------------------------------------------------------- check and load


def stale_reason(folder: str, settings: Settings, inputs: Sequence[str], *,
                 verify_checksums: bool = True) -> str | None:
  """Why the cache in ``folder`` cannot be used (None if it can).

  Checks that the manifest exists and matches ``settings`` and the raw inputs' sizes and
  mtimes, and that every listed file has its size (and, with ``verify_checksums``, its CRC32).
  """
  manifest_path = os.path.join(folder, 'manifest.json')
  if not os.path.exists(manifest_path):
    return 'no cache' if not os.path.exists(folder) else 'no manifest (incomplete build)'
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    return f'unreadable manifest: {e}'
  if manifest.get('settings') != settings.to_json():
    return 'settings changed'
  if manifest.get('inputs') != input_signature(inputs):
    return 'raw files changed (size or modification time)'
  for name, facts in manifest.get('files', {}).items():
    path = os.path.join(folder, name)
    if not os.path.exists(path):
      return f'{name} missing'
    if os.path.getsize(path) != facts['bytes']:
      return f'{name} has the wrong size'
    if verify_checksums and _crc32_file(path) != facts['crc32']:
      return f'{name} fails its checksum'
  return None


def load(folder: str) -> CTRDataset:
  """The dataset of a cache folder, each split's arrays memory-mapped."""
  with open(os.path.join(folder, 'meta.json')) as f:
    meta = json.load(f)
  splits = {
      name: Split(np.load(os.path.join(folder, f'{name}_ids.npy'), mmap_mode='r'),
                  np.load(os.path.join(folder, f'{name}_labels.npy'), mmap_mode='r'))
      for name in SPLITS
  }
  info = {k: meta[k] for k in ('num_rows', 'split_rows', 'num_bad_lines', 'min_count', 'count_on',
                               'positive_rate', 'source')}
  info['cache_dir'] = folder
  return CTRDataset(name=meta['dataset'], field_names=tuple(meta['field_names']),
                    field_dims=np.array(meta['field_dims'], np.int64), info=info, **splits)


def summary(meta: dict) -> str:
  """A few lines about a built cache, for the log."""
  lines = [
      f"{meta['dataset']}: {meta['num_rows']:,} rows "
      f"(train {meta['split_rows']['train']:,}, valid {meta['split_rows']['valid']:,}, "
      f"test {meta['split_rows']['test']:,}), {len(meta['field_dims'])} fields, "
      f"{meta['num_features']:,} features (min_count={meta['min_count']}, "
      f"counted on {meta['count_on']} rows), {meta['num_bad_lines']} bad lines",
      'field_dims: ' + ' '.join(f'{n}={d}' for n, d in zip(meta['field_names'], meta['field_dims'])),
  ]
  for report in meta['bad_lines']:
    if report['bad'] or report['notes']:
      lines.append(f"{report['file']}: {report['bad']} of {report['lines']} lines bad "
                   f"{report['reasons']}, first at lines {report['first_bad_lines']} "
                   + ' '.join(report['notes']))
  if 'build_seconds' in meta:
    lines.append(f"built in {meta['build_seconds']} s")
  return '\n'.join(lines)
