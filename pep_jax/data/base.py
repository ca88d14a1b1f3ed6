"""The in-memory form every dataset takes before training.

A dataset is three splits of per-field *local* feature indices plus labels. The embedding
layer adds each field's offset, so loaders never deal with a global index space.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: ``ids[i, f]`` is row i's index inside field f, ``labels[i]`` its 0/1 click.

  Attributes:
    ids: int32 array ``[N, F]``; ``0 <= ids[:, f] < field_dims[f]``. May be a ``np.memmap``.
    labels: array ``[N]`` of 0/1 (any integer or float dtype; batches are float32).
  """

  ids: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    if self.ids.ndim != 2:
      raise ValueError(f'Split.ids must be [rows, fields], got shape {self.ids.shape}')
    if self.labels.shape != (self.ids.shape[0],):
      raise ValueError(
          f'Split.labels must be [{self.ids.shape[0]}], got shape {self.labels.shape}')

  def __len__(self) -> int:
    return int(self.ids.shape[0])


@dataclasses.dataclass(frozen=True)
class CTRDataset:
  """A CTR dataset ready for training.

  Attributes:
    name: short name ('synthetic', 'criteo', 'avazu', 'movielens').
    field_names: one name per field, in column order of ``Split.ids``.
    field_dims: int64 array ``[F]``: the number of indices of each field (OOV/NULL included).
    train, valid, test: the splits.
    info: extra facts worth reporting (e.g. ``teacher_test_auc`` for synthetic data,
      ``num_bad_lines`` for raw files). JSON-serialisable values only.
  """

  name: str
  field_names: tuple[str, ...]
  field_dims: np.ndarray
  train: Split
  valid: Split
  test: Split
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    dims = np.asarray(self.field_dims)
    if dims.ndim != 1 or len(dims) != len(self.field_names):
      raise ValueError('field_dims and field_names must have one entry per field')
    for name, split in (('train', self.train), ('valid', self.valid), ('test', self.test)):
      if split.ids.shape[1] != len(dims):
        raise ValueError(f'{name} split has {split.ids.shape[1]} fields, expected {len(dims)}')

  @property
  def num_fields(self) -> int:
    return len(self.field_names)

  @property
  def num_features(self) -> int:
    return int(np.sum(self.field_dims))
