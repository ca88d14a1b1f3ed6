"""The random train/valid/test split, deterministic from a seed."""

from __future__ import annotations

import numpy as np


def split_rows(num_rows: int, fractions, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Row indices of the train, valid and test splits (each sorted, int64).

  Args:
    num_rows: rows in the dataset.
    fractions: three fractions summing to 1 (config key ``data.split``).
    seed: split seed (config key ``data.split_seed``).
  """
  fractions = np.asarray(fractions, np.float64)
  if fractions.shape != (3,) or np.any(fractions < 0) or abs(fractions.sum() - 1) > 1e-6:
    raise ValueError(f'config key data.split must be three fractions summing to 1, got '
                     f'{tuple(fractions)}')
  order = np.random.default_rng(seed).permutation(num_rows)
  n_train = int(round(fractions[0] * num_rows))
  n_valid = int(round(fractions[1] * num_rows))
  parts = np.split(order, [n_train, n_train + n_valid])
  return tuple(np.sort(p) for p in parts)
