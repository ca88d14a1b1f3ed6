"""AUC and logloss against scikit-learn, ties included; the per-batch mean."""

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from pep_jax.metrics import auc, evaluate_predictions, logloss


@pytest.mark.parametrize('seed', range(5))
def test_auc_matches_sklearn_with_ties(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 500)
  scores = np.round(rng.normal(size=500) + labels * 0.5, 1)  # many ties
  assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_edge_cases():
  assert auc([0, 1], [0.3, 0.3]) == 0.5
  assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
  assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
  assert np.isnan(auc([1, 1], [0.1, 0.2]))


def test_logloss_matches_sklearn():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 300)
  probs = rng.uniform(0.01, 0.99, 300)
  assert logloss(labels, probs) == pytest.approx(log_loss(labels, probs), rel=1e-9)


def test_batch_mean_is_the_mean_of_batch_aucs():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 2500).astype(float)
  probs = rng.uniform(size=2500)
  out = evaluate_predictions(labels, probs, batch_size=1000)
  batches = [(labels[i:i + 1000], probs[i:i + 1000]) for i in range(0, 2500, 1000)]
  assert out['auc_batch_mean'] == pytest.approx(np.mean([roc_auc_score(y, p) for y, p in batches]))
  assert out['logloss_batch_mean'] == pytest.approx(np.mean([log_loss(y, p, labels=[0, 1])
                                                             for y, p in batches]))
  assert out['auc'] == pytest.approx(roc_auc_score(labels, probs))


def test_spearman_against_a_brute_force_rank_correlation():
  from pep_jax.metrics import spearman
  rng = np.random.default_rng(3)
  for _ in range(20):
    n = int(rng.integers(3, 30))
    x = rng.integers(0, 5, n).astype(float)  # many ties
    y = x + rng.normal(size=n)
    # Brute force: each value's rank is 1 + (#smaller) + (#equal - 1) / 2.
    def ranks(v):
      return np.array([1 + np.sum(v < a) + (np.sum(v == a) - 1) / 2 for a in v])
    rx, ry = ranks(x), ranks(y)
    expected = np.corrcoef(rx, ry)[0, 1] if rx.std() > 0 and ry.std() > 0 else np.nan
    np.testing.assert_allclose(spearman(x, y), expected, rtol=1e-12, atol=1e-12)
  assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
