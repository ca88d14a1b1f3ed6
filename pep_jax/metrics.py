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


# ------------------------------------------------------------------------------ intervals


def t_two_sided(level: float, df: int) -> float:
  """The Student-t quantile ``t`` with ``P(|T| <= t) = level`` for ``df`` degrees of freedom.

  Solves ``A(t | df) = level`` by bisection on ``theta = arctan(t / sqrt(df))``, with the
  closed forms of Abramowitz and Stegun 26.7.3-4 for integer ``df``:

      df = 1:     A = 2 theta / pi
      df odd:     A = 2 / pi * (theta + sin(theta) * sum_{k=0}^{(df-3)/2} c_k cos(theta)^(2k+1)),
                  c_0 = 1, c_k = c_{k-1} * 2k / (2k + 1)
      df even:    A = sin(theta) * sum_{k=0}^{(df-2)/2} e_k cos(theta)^(2k),
                  e_0 = 1, e_k = e_{k-1} * (2k - 1) / (2k)

  Args:
    level: the two-sided coverage, in ``(0, 1)`` (0.95 for a 95% interval).
    df: degrees of freedom, a positive integer.

  Returns:
    ``t`` (12.706 for ``df = 1``, 4.303 for 2, 1.960 as ``df`` grows).
  """
  df = int(df)
  if df < 1 or not 0 < level < 1:
    raise ValueError(f'need df >= 1 and 0 < level < 1, got df={df}, level={level}')

  def coverage(theta: float) -> float:
    c, s = np.cos(theta), np.sin(theta)
    if df % 2:
      term, total = c, 0.0
      for k in range(1, (df - 1) // 2 + 1):
        total += term
        term *= c * c * 2 * k / (2 * k + 1)
      return 2 / np.pi * (theta + s * total)
    term, total = 1.0, 0.0
    for k in range(1, df // 2 + 1):
      total += term
      term *= c * c * (2 * k - 1) / (2 * k)
    return s * total

  lo, hi = 0.0, np.pi / 2
  for _ in range(80):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if coverage(mid) < level else (lo, mid)
  return float(np.sqrt(df) * np.tan(0.5 * (lo + hi)))


def t_interval(values, level: float = 0.95) -> dict:
  """The mean of independent draws ``values [n]`` (one per seed) with its Student-t interval.

      mean +- t_{n-1} * s / sqrt(n),    s = sqrt(sum_i (x_i - mean)^2 / (n - 1))

  Returns:
    ``{'mean', 'std', 'ci'}``: ``std`` is ``s``, ``ci`` the pair ``(low, high)``; with one value
    ``std`` and ``ci`` are None (one draw says nothing of the spread).
  """
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError('t_interval needs at least one value')
  mean = float(x.mean())
  if x.size == 1:
    return {'mean': mean, 'std': None, 'ci': None}
  std = float(x.std(ddof=1))
  half = t_two_sided(level, x.size - 1) * std / np.sqrt(x.size)
  return {'mean': mean, 'std': std, 'ci': (mean - half, mean + half)}


def bootstrap_aucs(labels: np.ndarray, scores: np.ndarray, resamples: int = 1000,
                   seed: int = 0) -> np.ndarray:
  """The AUC of every model on every bootstrap resample of the rows, paired across models.

  Resample ``b`` draws ``N`` row indices with replacement, ``idx_b = rng.integers(0, N, N)``
  with ``rng = np.random.default_rng(seed)``, resample after resample: every model, and every
  call with the same ``N`` and ``seed``, is scored on the same resamples, so differences of
  rows of the result are paired. A resample is counted as weights, ``c_bi`` the times row ``i``
  was drawn, and the AUC of weighted rows is computed for all resamples at once:

      AUC_b = sum_{i pos, j neg} c_bi c_bj ([s_i > s_j] + [s_i = s_j] / 2) / (P_b Q_b),

  ``P_b``, ``Q_b`` the weights of the positives and negatives: the AUC of the resampled rows,
  ties counted as one half, as :func:`auc` counts them.

  Args:
    labels: ``[N]`` 0/1.
    scores: ``[M, N]`` one row per model (``[N]``: one model).
    resamples: ``B``.
    seed: the resampling seed.

  Returns:
    ``[M, B]`` float64 (``[B]`` for one model given as ``[N]``); NaN for a resample with one
    class only.
  """
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, np.float64)
  single = scores.ndim == 1
  scores = np.atleast_2d(scores)  # [M, N]
  n = labels.shape[0]
  sorted_models = []
  for s in scores:
    order = np.argsort(s, kind='mergesort')
    ordered = s[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # tie groups
    sorted_models.append((order, starts, labels[order].astype(np.float64)))
  rng = np.random.default_rng(seed)
  chunk = max(1, (1 << 22) // max(n, 1))  # resamples at a time: ~4M weights
  out = np.empty((len(scores), resamples))
  for b0 in range(0, resamples, chunk):
    b = min(chunk, resamples - b0)
    idx = rng.integers(0, n, size=(b, n))  # [b, N]
    flat = (idx + n * np.arange(b)[:, None]).ravel()
    counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
    for m, (order, starts, y) in enumerate(sorted_models):
      w = counts[:, order]  # [b, N] in ascending score order
      pos = np.add.reduceat(w * y, starts, axis=1)  # [b, G] weight of each tie group
      neg = np.add.reduceat(w * (1.0 - y), starts, axis=1)
      below = np.cumsum(neg, axis=1) - neg  # negatives scored strictly lower
      wins = np.sum(pos * (below + 0.5 * neg), axis=1)
      with np.errstate(invalid='ignore', divide='ignore'):
        out[m, b0:b0 + b] = wins / (pos.sum(axis=1) * neg.sum(axis=1))
  return out[0] if single else out


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
  """The central ``level`` interval of bootstrap ``draws [B]``: their ``(1 - level) / 2`` and
  ``(1 + level) / 2`` quantiles (linear interpolation)."""
  lo, hi = np.percentile(np.asarray(draws, np.float64),
                         [50 * (1 - level), 50 * (1 + level)])
  return float(lo), float(hi)


def paired_bootstrap_auc(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                         resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
  """Paired bootstrap of the AUC difference of two models scored on the same test rows.

  Each of ``B`` resamples of the rows (:func:`bootstrap_aucs`: with replacement, seeded, the
  same rows for both models) gives ``d_b = AUC_b(a) - AUC_b(b)``; with several seeds (rows of
  ``scores_a`` and ``scores_b``, seed ``s`` of a paired with seed ``s`` of b) ``d_b`` is the
  mean over seeds of each seed's difference on the same resampled rows. The interval is the
  percentile interval of the ``d_b``: what the finite test set leaves uncertain, not what
  training with other seeds would change.

  Args:
    labels: ``[N]`` 0/1.
    scores_a, scores_b: ``[N]``, or ``[S, N]`` one row per seed.

  Returns:
    ``{'difference', 'mean', 'ci'}``: the difference on the test rows as they are (mean over
    seeds), the mean of the ``d_b``, and their ``level`` percentile interval ``(low, high)``.
  """
  a, b = np.atleast_2d(scores_a), np.atleast_2d(scores_b)
  if a.shape != b.shape:
    raise ValueError(f'scores of shapes {a.shape} and {b.shape} are not paired')
  aucs = bootstrap_aucs(labels, np.concatenate([a, b]), resamples, seed)  # [2S, B]
  draws = np.mean(aucs[:len(a)] - aucs[len(a):], axis=0)  # [B]
  observed = np.mean([auc(labels, x) - auc(labels, y) for x, y in zip(a, b)])
  return {'difference': float(observed), 'mean': float(np.mean(draws)),
          'ci': percentile_interval(draws, level)}
