"""Evaluation metrics: global AUC and logloss, and the paper's mean over batches.

The public PEP code reports the mean of per-batch (1024 rows) AUCs and loglosses; a global AUC
over the whole split is the figure to compare across papers. Both are reported.

This module depends on numpy alone, so every layer (data, training, experiments, serving) may
import it.
"""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve (Mann-Whitney U), ties counted as one half.

  Args:
    labels: ``[N]`` 0/1.
    scores: ``[N]`` any monotone score (logits or probabilities).

  Returns:
    The AUC, or NaN when only one class is present.
  """
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, np.float64)
  n_pos = int(labels.sum())
  n_neg = len(labels) - n_pos
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  ranks = average_ranks(scores)
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
  """Mean binary cross-entropy of probabilities clipped to ``[eps, 1 - eps]``."""
  labels = np.asarray(labels, np.float64)
  p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
  return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


def evaluate_predictions(labels: np.ndarray, probs: np.ndarray, batch_size: int = 1024) -> dict:
  """Global AUC/logloss plus their mean over consecutive batches (the paper's figure).

  Batches holding one class only have no AUC and are left out of the AUC mean.
  """
  batch_aucs, batch_losses = [], []
  for start in range(0, len(labels), batch_size):
    y, p = labels[start:start + batch_size], probs[start:start + batch_size]
    batch_losses.append(logloss(y, p))
    a = auc(y, p)
    if not np.isnan(a):
      batch_aucs.append(a)
  return {
      'auc': auc(labels, probs),
      'logloss': logloss(labels, probs),
      'auc_batch_mean': float(np.mean(batch_aucs)) if batch_aucs else float('nan'),
      'logloss_batch_mean': float(np.mean(batch_losses)),
  }


def average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks of ``values [N]``; tied values share the mean of their ranks."""
  values = np.asarray(values, np.float64)
  order = np.argsort(values, kind='mergesort')
  sorted_values = values[order]
  starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
  ends = np.r_[starts[1:], len(values)]
  ranks = np.empty(len(values))
  ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
  return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman's rank correlation (Pearson's r of the average ranks); NaN if either is constant."""
  rx, ry = average_ranks(x), average_ranks(y)
  rx, ry = rx - rx.mean(), ry - ry.mean()
  denom = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
  return float(np.sum(rx * ry) / denom) if denom > 0 else float('nan')
