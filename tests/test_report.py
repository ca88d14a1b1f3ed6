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
  and for an empty band the method's floor when the band lies below it, PEP's reason above its
  floor, else that nothing is configured there."""
  comparison = [_row('ue', 'd=16', 1000), _row('ue', 'd=4', 250), _row('ue', 'd=1', 62.5),
                _row('pep', '30%', 300), _row('pep', '3%', 30),
                _row('qr', '30%', 299), _row('qr', '5%', 50), _row('magnitude', '30%', 300)]
  floors = {'ue': (1 / 16, 'one entry per feature'), 'pep': (0.0, 'budget not reached'),
            'qr': (0.044, 'about 2 sqrt(V)')}
  coverage = report.band_coverage(comparison, (0.3, 0.1, 0.03), 1000, floors)
  got = {(c['method'], tuple(c['band'])): (c['settings'], c['why']) for c in coverage}
  assert len(coverage) == 12
  assert got['ue', (0.1, 0.3)] == (['d=4'], None)
  assert got['ue', (0.03, 0.1)] == (['d=1'], None)
  assert got['ue', (0.0, 0.03)] == (
      [], 'it cannot store less than 6.2% of the table here: one entry per feature')
  assert got['pep', (0.1, 0.3)] == (['30%'], None)  # 300 <= 0.3 * 1000 (+ half an entry)
  assert got['pep', (0.0, 0.03)] == (['3%'], None)
  assert got['pep', (0.03, 0.1)] == ([], 'budget not reached')
  assert got['qr', (0.03, 0.1)] == (['5%'], None)
  assert got['qr', (0.0, 0.03)][1].endswith('4.4% of the table here: about 2 sqrt(V)')
  # Above its floor (none here) a band without a model is one no setting asked for.
  assert got['magnitude', (0.03, 0.1)] == ([], 'no setting in this band is configured')
  lines = report.coverage_lines(coverage)
  assert len(lines) == 5
  assert lines[0] == ('- UE: no model in 0-3% of the uniform table: it cannot store less than '
                      '6.2% of the table here: one entry per feature.')


def test_method_floors_by_hand():
  from configs import compare
  from pep_jax import methods as methods_lib
  config = compare.get_config()  # d=16, MDE d=16 in 32 blocks, MGQE 16 centroids at least
  dims = [6, 60, 600, 6000]
  floors = methods_lib.floors(config, dims)
  rows = 6666
  assert floors['ue'][0] == 1 / 16
  assert floors['dartsemb'][0] == (rows + 4 * 16) / (rows * 16)
  assert floors['mgqe'][0] == (rows + 16 * 16) / (rows * 16)
  first = -(-rows // 32)  # 209 features in the first block at width 16, the rest at 1
  assert floors['mde'][0] == (first * 16 + rows - first + 31 * 16) / (rows * 16)
  qr_least = min(sum(v if v <= m else -(-v // m) + m for v in dims) for m in range(1, 6001))
  assert floors['qr'][0] == qr_least / rows
  assert floors['pep'][0] == 0.0
  assert 'sseds' not in floors and 'magnitude' not in floors and 'random' not in floors


def test_band_coverage_rejects_bad_bands():
  from pep_jax.config import default_config, validate
  from pep_jax.errors import ConfigError
  for bands in ((0.1, 0.3), (), (0.3, 0.0), (1.5,)):
    c = default_config()
    c.compare.bands = bands
    with pytest.raises(ConfigError, match='compare.bands'):
      validate(c)
