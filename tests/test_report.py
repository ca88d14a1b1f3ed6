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


def _row(method, setting, params):
  return {'method': method, 'setting': setting, 'params': params}


def test_band_coverage_by_hand():
  """Bands (0.1, 0.3], (0.03, 0.1], (0, 0.03] of a 1,000-entry table: which models lie in each,
  and for an empty band the method's floor when its smallest model is above the band, else
  that nothing is configured there."""
  comparison = [_row('ue', 'd=16', 1000), _row('ue', 'd=4', 250), _row('ue', 'd=1', 62.5),
                _row('pep', '30%', 300), _row('pep', '3%', 30),
                _row('qr', '30%', 299), _row('qr', '5%', 50)]
  coverage = report.band_coverage(comparison, (0.3, 0.1, 0.03), 1000)
  got = {(c['method'], tuple(c['band'])): (c['settings'], c['why']) for c in coverage}
  assert len(coverage) == 9
  assert got['ue', (0.1, 0.3)] == (['d=4'], None)
  assert got['ue', (0.03, 0.1)] == (['d=1'], None)
  settings, why = got['ue', (0.0, 0.03)]
  assert settings == [] and why.startswith('smallest model 6.2% of the table: one entry per')
  assert got['pep', (0.1, 0.3)] == (['30%'], None)  # 300 <= 0.3 * 1000 (+ half an entry)
  assert got['pep', (0.0, 0.03)] == (['3%'], None)
  # PEP's smallest model is inside the 3% band: an empty 10% band is a matter of config.
  assert got['pep', (0.03, 0.1)][1].endswith('no setting in this band is configured')
  assert got['qr', (0.03, 0.1)] == (['5%'], None)
  assert 'ceil(V/m) + m' in got['qr', (0.0, 0.03)][1]
  lines = report.coverage_lines(coverage)
  assert len(lines) == 3
  assert lines[0].startswith('- UE: no model in 0-3% of the uniform table; smallest model 6.2%')


def test_band_coverage_rejects_bad_bands():
  from pep_jax.config import default_config, validate
  from pep_jax.errors import ConfigError
  for bands in ((0.1, 0.3), (), (0.3, 0.0), (1.5,)):
    c = default_config()
    c.compare.bands = bands
    with pytest.raises(ConfigError, match='compare.bands'):
      validate(c)
