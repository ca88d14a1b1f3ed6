"""The summary's derived columns against hand computations."""

import types

import numpy as np
import pytest

from pep_jax import report


def ranks(values):
  """Average ranks (1-based), ties sharing the mean of their positions, by a loop."""
  values = list(values)
  out = []
  for v in values:
    below = sum(1 for w in values if w < v)
    equal = sum(1 for w in values if w == v)
    out.append(below + (equal + 1) / 2)
  return out


def pearson(a, b):
  a, b = np.asarray(a, float), np.asarray(b, float)
  a, b = a - a.mean(), b - b.mean()
  return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_importance_columns_by_hand():
  data = types.SimpleNamespace(field_dims=np.array([10, 20, 5, 40]),
                               info={'intrinsic_dims': [0, 3, 3, 1]})
  widths = [2.0, 6.5, 6.5, 1.0]  # a tie among the widths, a tie among the truths
  got = report.importance(widths, data)
  assert got['width_spearman'] == pytest.approx(pearson(ranks(widths), ranks([0, 3, 3, 1])))
  entries = [2.0 * 10, 6.5 * 20, 6.5 * 5, 1.0 * 40]  # per-field table entries
  assert got['noise_share'] == pytest.approx(entries[0] / sum(entries))


def test_importance_without_a_planted_truth_or_widths():
  data = types.SimpleNamespace(field_dims=np.array([3, 4]), info={})
  assert report.importance([1.0, 2.0], data) == {'width_spearman': None, 'noise_share': None}
  data.info['intrinsic_dims'] = [0, 1]
  assert report.importance(None, data) == {'width_spearman': None, 'noise_share': None}
  # equal widths have no rank correlation: None, not nan
  assert report.importance([4.0, 4.0], data)['width_spearman'] is None
