"""The datasets, by the name config key ``data.name`` gives: the one list of them.

Each dataset is a module with ``NAME`` and ``FILES``. The synthetic benchmark has no files: it
is generated in memory by its ``load(data_config)``. Every other dataset is read from its raw
files into the columnar cache (:mod:`pep_jax.data.real`) through the same entry points:
``FIELD_NAMES``, ``FIELD_KINDS``, ``DOWNLOAD``, ``raw_paths(folder)``, ``read`` (the training
files), ``encode`` (its one raw-row encoder, which ``pep_jax.predict`` uses too) and
``row_keys`` (one row). Code that needs a dataset asks :func:`dataset` or :func:`raw_dataset`
and never tests a name.
"""

from __future__ import annotations

import types

from pep_jax.data import avazu, criteo, movielens, synthetic
from pep_jax.errors import ConfigError

DATASETS = {module.NAME: module for module in (synthetic, criteo, avazu, movielens)}


def _names(raw_only: bool = False) -> str:
  return ', '.join(repr(name) for name, module in DATASETS.items()
                   if module.FILES or not raw_only)


def dataset(name: str) -> types.ModuleType:
  """The module of the dataset called ``name``.

  Raises:
    ConfigError: no dataset has that name (the message names ``data.name`` and the known ones).
  """
  if name not in DATASETS:
    raise ConfigError(f'config key data.name: unknown dataset {name!r}; expected one of '
                      f'{_names()}')
  return DATASETS[name]


def raw_dataset(name: str) -> types.ModuleType:
  """The module of the dataset called ``name``, one read from raw files.

  Raises:
    ConfigError: no dataset has that name, or it has no raw files (the synthetic one).
  """
  module = dataset(name)
  if not module.FILES:
    raise ConfigError(f'config key data.name: {name!r} is generated in memory and has no raw '
                      f'files; the datasets read from raw files are {_names(raw_only=True)}')
  return module
