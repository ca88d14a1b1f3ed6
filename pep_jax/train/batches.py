"""The batches a stage trains on, from any step on: one at a time or in blocks of ``K``.

Epoch ``e``'s order depends only on ``(seed, e)`` (:func:`pipeline.batch_rows`), so a run
resumed at any step sees the batches an uninterrupted run would have seen, in the same order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from pep_jax.data import pipeline
from pep_jax.data.base import Split
from pep_jax.sharding.batches import global_batch, global_slab, process_rows
from pep_jax.train import steps as steps_lib


def _process_batches(split: Split, batch_size: int, rows: tuple[int, int], *, seed: int,
                     epoch: int, start: int) -> Iterator[dict]:
  """The rows ``lo:hi`` of every global batch of one epoch, as ``pipeline.batches`` orders it."""
  lo, hi = rows
  if (lo, hi) == (0, batch_size):
    yield from pipeline.batches(split, batch_size, shuffle=True, seed=seed, epoch=epoch,
                                start=start)
    return
  for rows_b in pipeline.batch_rows(len(split), batch_size, shuffle=True, seed=seed,
                                   epoch=epoch, start=start):
    yield pipeline.make_batch(split, rows_b[lo:hi], hi - lo)


def resumable_batches(split: Split, batch_size: int, *, seed: int, start_step: int,
                      max_epochs: int, prefetch: int = 2,
                      sharding=None) -> Iterator[tuple[int, bool, dict]]:
  """Yields ``(step_after, epoch_end, batch)`` from global step ``start_step`` on.

  ``step_after`` is the step count once the batch is trained on; ``epoch_end`` marks the last
  batch of an epoch. Epoch e's order depends only on ``(seed, e)``, so resuming at any step
  sees the batches an uninterrupted run would have seen.

  With ``sharding`` (the mesh's batch sharding) batches are global ``jax.Array`` split over
  the devices; each process reads only the rows its own devices hold.
  """
  per_epoch = pipeline.num_batches(len(split), batch_size)
  rows = (0, batch_size) if sharding is None else process_rows(sharding, batch_size)
  step = start_step
  for epoch in range(start_step // per_epoch, max_epochs):
    first = step - epoch * per_epoch
    it = _process_batches(split, batch_size, rows, seed=seed, epoch=epoch, start=first)
    if sharding is not None:
      it = (global_batch(b, sharding, batch_size) for b in it)
    if prefetch:
      it = pipeline.prefetch(it, prefetch)
    for i, batch in enumerate(it, start=first):
      step += 1
      yield step, i == per_epoch - 1, batch


@dataclasses.dataclass
class Block:
  """A slab of up to ``K`` consecutive batches of one epoch, placed for the block step.

  Blocks are aligned within each epoch (batches ``0..K-1``, ``K..2K-1``, ...), so a run
  resumed at any step groups the remaining batches as an uninterrupted run does. The last
  block of an epoch may hold fewer than ``K`` real batches; its other slots are zeros and are
  never run.
  """

  first: int  # global step count before the slab's slot 0
  start: int  # first slot to run (after a resume inside the block)
  count: int  # real batches in the slab
  epoch_end: bool  # the slab's last real batch is the last batch of an epoch
  slab: dict  # [K, B, ...] arrays (jax.Array on the mesh, or numpy without a sharding)
  distinct: int | None = None  # most distinct table rows a batch of the slab looks up


def stack(batches: list[dict], size: int) -> dict:
  """``size`` slots: the batches, then zero batches; every key stacked on a leading axis."""
  out = {}
  for key, value in batches[0].items():
    slab = np.zeros((size,) + value.shape, value.dtype)
    for i, b in enumerate(batches):
      slab[i] = b[key]
    out[key] = slab
  return out


def most_distinct_rows(batches: list[dict], row_offsets: np.ndarray) -> int:
  """The most distinct table rows one of ``batches`` looks up (``row_offsets``: each field's
  first row, :func:`pep_jax.layers.embedding.field_offsets`)."""
  return max(len(np.unique(np.asarray(b['ids']) + row_offsets)) for b in batches)


def resumable_blocks(split: Split, batch_size: int, per_block: int, *, seed: int,
                     start_step: int, max_epochs: int, sharding=None, batch_map=None,
                     row_offsets: np.ndarray | None = None,
                     prefetch: int = 2) -> Iterator[Block]:
  """The training batches from global step ``start_step`` on, ``per_block`` batches a slab.

  Epoch ``e``'s order depends only on ``(seed, e)`` (:func:`pipeline.batch_rows`), so the
  batches are those of a one-step loop, in the same order. Slabs are assembled and placed
  ``prefetch`` ahead in a background thread.

  Args:
    batch_map: ``(step, batch) -> dict`` of extra arrays with ``batch_size`` rows (e.g.
      validation rows) added to the batch trained on at step ``step`` (the count after it).
    sharding: the mesh's batch sharding; each process reads only the rows its devices hold.
    row_offsets: each field's first table row; given, every block records the most distinct
      table rows one of its batches looks up (``Block.distinct``).
  """
  per_epoch = pipeline.num_batches(len(split), batch_size)
  # No block spans two epochs, so a slab never needs more slots than an epoch has batches
  # (the grouping is the same; a shorter slab is less to build and to place every block).
  per_block = min(per_block, per_epoch)
  lo, hi = (0, batch_size) if sharding is None else process_rows(sharding, batch_size)
  slab_sh = None if sharding is None else steps_lib.slab_sharding(sharding)

  def produce():
    for epoch in range(start_step // per_epoch, max_epochs):
      first = max(0, start_step - epoch * per_epoch) // per_block * per_block
      epoch_rows = pipeline.batch_rows(len(split), batch_size, shuffle=True, seed=seed,
                                       epoch=epoch, start=first)
      for b0 in range(first, per_epoch, per_block):
        count = min(per_block, per_epoch - b0)
        base = epoch * per_epoch + b0
        batches = []
        for j, rows in zip(range(count), epoch_rows):
          batch = pipeline.make_batch(split, rows[lo:hi], hi - lo)
          if batch_map is not None:
            extra = batch_map(base + j + 1, batch)
            batch.update({k: np.asarray(v)[lo:hi] for k, v in extra.items()})
          batches.append(batch)
        distinct = None if row_offsets is None else most_distinct_rows(batches, row_offsets)
        slab = stack(batches, per_block)
        if slab_sh is not None:
          slab = global_slab(slab, slab_sh, batch_size)
        yield Block(base, max(0, start_step - base), count, b0 + count == per_epoch, slab,
                    distinct)

  yield from pipeline.prefetch(produce(), prefetch) if prefetch else produce()
