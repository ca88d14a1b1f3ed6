"""Scoring a stage's state on a split: click probabilities, then AUC and logloss."""

from __future__ import annotations

import numpy as np

from pep_jax.data import pipeline
from pep_jax.data.base import Split
from pep_jax.metrics import evaluate_predictions
from pep_jax.sharding.batches import global_slab, process_rows
from pep_jax.train import batches as batches_lib
from pep_jax.train import steps as steps_lib


def predict(stage, state, constants: dict, split: Split,
            batch_size: int | None = None) -> np.ndarray:
  """Click probabilities for every row of ``split`` (in order), float64 ``[N]``.

  Runs ``stage``'s eval block over slabs of ``batch_size``-row batches
  (``train.eval_batch_size`` by default), as many rows per call as a training block; with a
  mesh, each batch is split over the devices and every process reads only its own rows.
  """
  batch_size = batch_size or stage.config.train.eval_batch_size
  per_block = max(1, stage.per_dispatch * stage.config.train.batch_size // batch_size)
  sharding = stage.batch_sharding
  lo, hi = process_rows(sharding, batch_size)
  slab_sh = steps_lib.slab_sharding(sharding)
  n = len(split)
  out = []
  for b0 in range(0, pipeline.num_batches(n, batch_size), per_block):
    starts = range(b0 * batch_size, min(n, (b0 + per_block) * batch_size), batch_size)
    batches = [pipeline.make_batch(split, np.arange(s, min(n, s + batch_size))[lo:hi], hi - lo)
               for s in starts]
    slab = global_slab(batches_lib.stack(batches, per_block), slab_sh, batch_size)
    probs = np.asarray(stage.steps.eval_block(state, slab, constants, len(batches)))
    out.extend(p[:min(batch_size, n - s)] for p, s in zip(probs, starts))
  return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def evaluate(stage, state, constants: dict, split: Split, batch_size: int | None = None) -> dict:
  """Global and per-batch-mean AUC and logloss of ``split``."""
  probs = predict(stage, state, constants, split, batch_size)
  return evaluate_predictions(np.asarray(split.labels, np.float64), probs)
