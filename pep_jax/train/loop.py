"""Pieces every training stage shares: resumable iteration, evaluation, loss checks."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pep_jax.data import pipeline
from pep_jax.data.base import Split
from pep_jax.sharding.batches import global_batch, process_rows
from pep_jax.metrics import evaluate_predictions


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def check_loss(loss: float, stage: str, step: int, checkpoint_dir: str) -> None:
  if not math.isfinite(loss):
    raise NonFiniteLossError(
        f'{stage}: the training loss is {loss} at step {step}. Nothing was saved for this step; '
        f'the last good checkpoint in {checkpoint_dir} is kept. Lower optimizer.learning_rate or '
        'check the data.')


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


def predict(eval_step, state, constants: dict, split: Split, batch_size: int,
            sharding=None) -> np.ndarray:
  """Click probabilities for every row of ``split`` (in order), float64 ``[N]``.

  With ``sharding``, each batch is split over the devices (every process reads the batch and
  hands over its own rows); ``eval_step`` returns the probabilities replicated.
  """
  lo, hi = (0, batch_size) if sharding is None else process_rows(sharding, batch_size)
  out = []
  for batch in pipeline.batches(split, batch_size, shuffle=False):
    placed = batch
    if sharding is not None:
      placed = global_batch({k: v[lo:hi] for k, v in batch.items()}, sharding, batch_size)
    out.append(np.asarray(eval_step(state, placed, constants))[batch['weights'] > 0])
  return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def evaluate(eval_step, state, constants: dict, split: Split, batch_size: int,
             sharding=None) -> dict:
  """Global and per-batch-mean AUC and logloss of ``split``."""
  probs = predict(eval_step, state, constants, split, batch_size, sharding)
  return evaluate_predictions(np.asarray(split.labels, np.float64), probs)
