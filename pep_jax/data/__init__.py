"""Datasets: the embedded synthetic benchmark and the real CTR datasets.

``load_dataset(config.data)`` is the one entry point the training code uses; the datasets are
listed once, in :mod:`pep_jax.data.registry`.
"""

from pep_jax.data import real, registry
from pep_jax.data.base import CTRDataset, Split
from pep_jax.data.registry import DATASETS


def load_dataset(data_config) -> CTRDataset:
  """Builds or loads the dataset named by ``data_config.name``.

  Raises:
    ConfigError: ``data.name`` names no dataset (or another ``data`` key is wrong).
    MissingError: the raw files of a real dataset are not in ``data.dir``.
  """
  module = registry.dataset(data_config.name)
  if not module.FILES:  # generated in memory
    return module.load(data_config)
  return real.load(data_config)


__all__ = ['CTRDataset', 'DATASETS', 'Split', 'load_dataset']
