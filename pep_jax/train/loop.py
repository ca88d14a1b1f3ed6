"""Pieces every training stage shares: resumable iteration, evaluation, loss checks."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pep_jax.data import pipeline
from pep_jax.data.base import Split
from pep_jax.train.metrics import evaluate_predictions


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def check_loss(loss: float, stage: str, step: int, checkpoint_dir: str) -> None:
  if not math.isfinite(loss):
    raise NonFiniteLossError(
        f'{stage}: the training loss is {loss} at step {step}. Nothing was saved for this step; '
        f'the last good checkpoint in {checkpoint_dir} is kept. Lower optimizer.learning_rate or '
        'check the data.')


def resumable_batches(split: Split, batch_size: int, *, seed: int, start_step: int,
                      max_epochs: int, prefetch: int = 2) -> Iterator[tuple[int, bool, dict]]:
  """Yields ``(step_after, epoch_end, batch)`` from global step ``start_step`` on.

  ``step_after`` is the step count once the batch is trained on; ``epoch_end`` marks the last
  batch of an epoch. Epoch e's order depends only on ``(seed, e)``, so resuming at any step
  sees the batches an uninterrupted run would have seen.
  """
  per_epoch = pipeline.num_batches(len(split), batch_size)
  step = start_step
  for epoch in range(start_step // per_epoch, max_epochs):
    first = step - epoch * per_epoch
    it = pipeline.batches(split, batch_size, shuffle=True, seed=seed, epoch=epoch, start=first)
    if prefetch and hasattr(pipeline, 'prefetch'):
      it = pipeline.prefetch(it, prefetch)
    for i, batch in enumerate(it, start=first):
      step += 1
      yield step, i == per_epoch - 1, batch


def predict(eval_step, state, constants: dict, split: Split, batch_size: int) -> np.ndarray:
  """Click probabilities for every row of ``split`` (in order), float64 ``[N]``."""
  out = []
  for batch in pipeline.batches(split, batch_size, shuffle=False):
    out.append(np.asarray(eval_step(state, batch, constants))[batch['weights'] > 0])
  return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def evaluate(eval_step, state, constants: dict, split: Split, batch_size: int) -> dict:
  """Global and per-batch-mean AUC and logloss of ``split``."""
  probs = predict(eval_step, state, constants, split, batch_size)
  return evaluate_predictions(np.asarray(split.labels, np.float64), probs)
