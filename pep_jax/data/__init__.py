"""Datasets: the embedded synthetic benchmark and the real CTR datasets.

``load_dataset(config.data)`` is the one entry point the training code uses.
"""

from pep_jax.data.base import CTRDataset, Split


def load_dataset(data_config) -> CTRDataset:
  """Builds or loads the dataset named by ``data_config.name``."""
  name = data_config.name
  if name == 'synthetic':
    from pep_jax.data import synthetic
    return synthetic.load(data_config)
  if name in ('criteo', 'avazu', 'movielens'):
    from pep_jax.data import real
    return real.load(data_config)
  raise ValueError(
      f"config key data.name: unknown dataset {name!r}; expected one of "
      "'synthetic', 'criteo', 'avazu', 'movielens'")


__all__ = ['CTRDataset', 'Split', 'load_dataset']
