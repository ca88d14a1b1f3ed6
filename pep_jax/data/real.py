"""Criteo, Avazu and MovieLens-1M: from the raw files to a memory-mapped :class:`CTRDataset`.

``load(config.data)`` finds the raw files in ``data.dir``, builds the columnar cache on first
use (see :mod:`pep_jax.data.cache`) and returns the splits memory-mapped. ``prepare`` builds
the cache ahead of time; ``row_encoder`` turns raw rows into indices with the cached vocabulary.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from pep_jax.data import cache, parsing, registry
from pep_jax.data.base import CTRDataset
from pep_jax.data.split import check_fractions
from pep_jax.errors import ConfigError, MissingError


def settings(data_config) -> cache.Settings:
  """The cache settings a data config asks for (validated)."""
  if data_config.count_on not in ('all', 'train'):
    raise ConfigError(f'config key data.count_on: {data_config.count_on!r}, '
                     "expected 'all' or 'train'")
  if data_config.source not in ('raw', 'tfds'):
    raise ConfigError(f"config key data.source: {data_config.source!r}, expected 'raw' or 'tfds'")
  split = check_fractions(data_config.split)
  if data_config.min_count < 1:
    raise ConfigError(f'config key data.min_count: {data_config.min_count} must be >= 1')
  return cache.Settings(dataset=data_config.name, source=data_config.source,
                        min_count=int(data_config.min_count), count_on=data_config.count_on,
                        split=split, split_seed=int(data_config.split_seed))


def _workers(data_config) -> int:
  """Threads for building: ``data.workers``, or every CPU when 0."""
  return int(data_config.workers) or parsing.default_workers()


def cache_folder(data_config) -> str:
  """``<data.cache_dir or data.dir/cache>/<dataset>-<settings hash>``."""
  root = data_config.cache_dir or os.path.join(data_config.dir, 'cache')
  return os.path.join(root, settings(data_config).folder_name())


def missing_files_message(data_config) -> str:
  """What to download and where to put it."""
  module = registry.raw_dataset(data_config.name)
  where = data_config.dir or '<data.dir is empty>'
  files = ', '.join(os.path.join(where, f) for f in module.FILES)
  return (f'data.name={data_config.name!r}: expected {files} (plain or .gz), not found. '
          f'Download: {module.DOWNLOAD}. Then set --config.data.dir to that folder. '
          f'configs/demo.py runs on the embedded synthetic data without any download.')


def source(data_config) -> cache.Source:
  """The reader of the configured dataset; MissingError if its raw files are missing."""
  module = registry.raw_dataset(data_config.name)
  workers = _workers(data_config)
  if data_config.source == 'tfds':
    from pep_jax.data import tfds_builders
    return tfds_builders.source(data_config)
  paths = module.raw_paths(data_config.dir) if data_config.dir else []
  if not paths:
    raise MissingError(missing_files_message(data_config))
  return cache.Source(
      name=module.NAME, field_names=module.FIELD_NAMES, field_kinds=module.FIELD_KINDS,
      inputs=tuple(paths), read=lambda bad, info: module.read(paths, bad, info, workers=workers))


def prepare(data_config, *, force: bool = False) -> str:
  """Builds the cache of ``data_config`` unless a valid one exists; returns its folder."""
  folder = cache_folder(data_config)
  src = source(data_config)
  reason = 'rebuild asked' if force else cache.stale_reason(
      folder, settings(data_config), src.inputs, verify_checksums=data_config.verify_cache)
  if reason is None:
    return folder
  logging.info('building the %s cache in %s (%s)', data_config.name, folder, reason)
  print(f'Building the {data_config.name} cache in {folder} ({reason}) ...', flush=True)
  meta = cache.build(src, settings(data_config), folder,
                     max_bad_fraction=data_config.max_bad_fraction, workers=_workers(data_config))
  print(cache.summary(meta), flush=True)
  return folder


def load(data_config) -> CTRDataset:
  """The configured real dataset, memory-mapped from its cache (built if needed)."""
  return cache.load(prepare(data_config))


def row_encoder(data_config) -> Callable[[Sequence[str | bytes]], np.ndarray]:
  """A function from one raw row (feature values, no label) to its int32 indices ``[F]``.

  The row is given as the raw file has it: Criteo 13 integers and 26 hex values; Avazu the
  22 columns after ``click``; MovieLens (timestamp, gender, age, occupation, zip code,
  title, genres). Unknown values map to the out-of-vocabulary index 0.
  """
  folder = prepare(data_config)
  module = registry.raw_dataset(data_config.name)
  vocab = cache.Vocabulary.load(folder)
  with open(os.path.join(folder, 'meta.json')) as f:
    meta = json.load(f)

  def encode_row(values: Sequence[str | bytes]) -> np.ndarray:
    return vocab.encode(module.row_keys(values, meta))

  return encode_row
