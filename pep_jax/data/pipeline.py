"""Batches from a :class:`~pep_jax.data.base.Split`: deterministic, fixed-shape, resumable.

Every batch has the same shape, so a jitted step compiles once: the last partial batch is
padded and carries ``weights == 0`` on its padding rows. The order of an epoch depends only on
``(seed, epoch)``, so a run resumed at batch k of epoch e sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pep_jax.data.base import Split

Batch = dict[str, np.ndarray]


def num_batches(num_rows: int, batch_size: int) -> int:
  """Batches per epoch; the last, partial one is kept (padded)."""
  return -(-num_rows // batch_size)


def epoch_order(num_rows: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """The row order of one epoch: a permutation from ``(seed, epoch)``, or ``arange``."""
  if not shuffle:
    return np.arange(num_rows, dtype=np.int64)
  return np.random.default_rng([seed, epoch]).permutation(num_rows)


def make_batch(split: Split, rows: np.ndarray, batch_size: int) -> Batch:
  """Gathers ``rows`` of ``split`` into one batch padded to ``batch_size`` rows.

  Returns:
    ``ids`` int32 ``[B, F]``, ``labels`` float32 ``[B]``, ``weights`` float32 ``[B]``
    (1 for real rows, 0 for padding).
  """
  n = len(rows)
  ids = np.zeros((batch_size, split.ids.shape[1]), np.int32)
  labels = np.zeros((batch_size,), np.float32)
  weights = np.zeros((batch_size,), np.float32)
  if n:
    # Sorted rows read a memory-mapped file front to back; the batch order is irrelevant.
    rows = np.sort(rows)
    ids[:n] = split.ids[rows]
    labels[:n] = split.labels[rows]
    weights[:n] = 1.0
  return {'ids': ids, 'labels': labels, 'weights': weights}


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
) -> Iterator[Batch]:
  """Yields the batches of one epoch, from batch index ``start`` on.

  Args:
    split: the rows to read.
    batch_size: rows per batch; the last batch is padded to it.
    shuffle: permute rows with a generator seeded by ``(seed, epoch)``.
    seed: data seed.
    epoch: epoch number (changes the permutation).
    start: first batch to yield (for resuming inside an epoch).
  """
  order = epoch_order(len(split), seed=seed, epoch=epoch, shuffle=shuffle)
  for b in range(start, num_batches(len(split), batch_size)):
    yield make_batch(split, order[b * batch_size:(b + 1) * batch_size], batch_size)
