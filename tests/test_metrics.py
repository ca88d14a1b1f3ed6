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


def test_t_quantile_against_scipy():
  from scipy import stats
  from pep_jax.metrics import t_two_sided
  for df in list(range(1, 41)) + [57, 120, 1000]:
    for level in (0.9, 0.95, 0.99):
      expected = stats.t.ppf(0.5 + level / 2, df)
      assert t_two_sided(level, df) == pytest.approx(expected, rel=1e-9), (df, level)


def test_seed_interval_against_a_direct_computation():
  from scipy import stats
  from pep_jax.metrics import t_interval
  values = np.array([0.7012, 0.7098, 0.6987, 0.7044])
  out = t_interval(values)
  mean = values.sum() / 4
  std = np.sqrt(((values - mean) ** 2).sum() / 3)
  half = stats.t.ppf(0.975, 3) * std / 2
  assert out['mean'] == pytest.approx(mean, abs=1e-15)
  assert out['std'] == pytest.approx(std, rel=1e-12)
  np.testing.assert_allclose(out['ci'], (mean - half, mean + half), rtol=1e-12)
  assert t_interval([0.7]) == {'mean': 0.7, 'std': None, 'ci': None}


def bootstrap_fixture():
  """Labels and two seeds' scores of two models, with ties, on 400 rows."""
  rng = np.random.default_rng(7)
  labels = rng.integers(0, 2, 400)
  a = np.round(rng.normal(size=(2, 400)) + 0.8 * labels, 1)
  b = np.round(rng.normal(size=(2, 400)) + 0.6 * labels, 1)
  return labels, a, b


def test_bootstrap_aucs_are_the_aucs_of_the_resampled_rows():
  from pep_jax.metrics import bootstrap_aucs
  labels, a, b = bootstrap_fixture()
  scores = np.concatenate([a, b])
  out = bootstrap_aucs(labels, scores, resamples=60, seed=3)
  rng = np.random.default_rng(3)  # the same draws, one resample at a time
  for r in range(60):
    rows = rng.integers(0, len(labels), len(labels))
    for m in range(4):
      assert out[m, r] == pytest.approx(roc_auc_score(labels[rows], scores[m, rows]), abs=1e-12)
  np.testing.assert_array_equal(bootstrap_aucs(labels, a[0], 60, 3), out[0])


def test_paired_bootstrap_against_a_loop_over_the_same_resamples():
  from pep_jax.metrics import paired_bootstrap_auc
  labels, a, b = bootstrap_fixture()
  out = paired_bootstrap_auc(labels, a, b, resamples=200, seed=11)
  rng = np.random.default_rng(11)
  draws = []
  for _ in range(200):
    rows = rng.integers(0, len(labels), len(labels))
    draws.append(np.mean([roc_auc_score(labels[rows], a[s, rows]) -
                          roc_auc_score(labels[rows], b[s, rows]) for s in range(2)]))
  assert out['mean'] == pytest.approx(np.mean(draws), abs=1e-12)
  np.testing.assert_allclose(out['ci'], np.percentile(draws, [2.5, 97.5]), atol=1e-12)
  observed = np.mean([roc_auc_score(labels, a[s]) - roc_auc_score(labels, b[s]) for s in range(2)])
  assert out['difference'] == pytest.approx(observed, abs=1e-12)
  one = paired_bootstrap_auc(labels, a[0], b[0], resamples=200, seed=11)
  assert one['difference'] == pytest.approx(roc_auc_score(labels, a[0]) -
                                            roc_auc_score(labels, b[0]), abs=1e-12)
  same = paired_bootstrap_auc(labels, a, a, resamples=50)
  assert same['ci'] == (0.0, 0.0)  # paired: a model against itself never differs
