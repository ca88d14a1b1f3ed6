"""The random train/valid/test split, deterministic from a seed.

Two ways, one per kind of source:

* :func:`split_rows` permutes all rows (exact 80/10/10 sizes) when the whole dataset is in
  memory, as the synthetic data is;
* :func:`split_assignment` assigns each row by a hash of its row number (sizes 80/10/10 up to
  sampling noise) when rows stream from raw files too large to permute, as the real datasets'
  cache build does. The result does not depend on how the file is cut into blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pep_jax.data import parsing
from pep_jax.errors import ConfigError


def check_fractions(fractions) -> tuple[float, float, float]:
  """``data.split`` as three floats; raises ``ConfigError`` naming the key unless they are three
  non-negative fractions summing to 1."""
  out = tuple(float(x) for x in fractions)
  if len(out) != 3 or min(out) < 0 or abs(sum(out) - 1) > 1e-6:
    raise ConfigError(f'config key data.split must be three fractions summing to 1, got {out}')
  return out


def split_rows(num_rows: int, fractions, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Row indices of the train, valid and test splits (each sorted, int64).

  Args:
    num_rows: rows in the dataset.
    fractions: three fractions summing to 1 (config key ``data.split``).
    seed: split seed (config key ``data.split_seed``).
  """
  fractions = check_fractions(fractions)
  order = np.random.default_rng(seed).permutation(num_rows)
  n_train = int(round(fractions[0] * num_rows))
  n_valid = int(round(fractions[1] * num_rows))
  parts = np.split(order, [n_train, n_train + n_valid])
  return tuple(np.sort(p) for p in parts)


def split_assignment(first_row: int, num_rows: int, seed: int,
                     fractions: Sequence[float]) -> np.ndarray:
  """The split of rows ``first_row .. first_row + num_rows - 1``, independent of block sizes.

  Row r draws ``u = (splitmix64(r + splitmix64(seed)) >> 11) / 2^53`` and goes to train if
  ``u < f0``, valid if ``u < f0 + f1``, else test.

  Returns:
    uint8 ``[num_rows]``: 0 train, 1 valid, 2 test.
  """
  salt = parsing.mix64(np.array([seed], np.uint64))[0]
  rows = np.arange(first_row, first_row + num_rows, dtype=np.uint64) + salt
  u = (parsing.mix64(rows) >> np.uint64(11)).astype(np.float64) * 2.0**-53
  f0, f1 = float(fractions[0]), float(fractions[1])
  return np.where(u < f0, 0, np.where(u < f0 + f1, 1, 2)).astype(np.uint8)
