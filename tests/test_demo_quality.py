"""The demo's claims: the README's figures (docs/results/demo.json) are what the demo gives
(~2.5 min), and they hold against the planted truth of the synthetic data.

* The demo's summary matches the recorded one within tolerances a regression exceeds, and every
  comparison of the README comes out as recorded: the same verdict (separable or not) and a
  difference within 0.002 of the recorded one.
* The prune stage zeroes the noise fields far more than the informative ones.
* The retrained ticket at 20% of the parameters is separably above the uniform d=16 model.
* No student beats the teacher that generated the labels.
"""

import json
import os

import numpy as np
import pytest

from configs import demo
from pep_jax import experiment


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('demo'))
  rows = experiment.run(demo.get_config(), workdir)
  return workdir, rows


def kept_fractions(ticket, config):
  """Fraction of table entries kept in noise fields and in informative fields."""
  vocab = np.asarray(config.data.synthetic.vocab_sizes)
  noise = np.asarray(config.data.synthetic.intrinsic_dims) == 0
  kept = vocab * np.asarray(ticket['field_mean_size'])
  dim = config.embedding.dim
  return kept[noise].sum() / (vocab[noise].sum() * dim), \
      kept[~noise].sum() / (vocab[~noise].sum() * dim)


def test_noise_fields_are_pruned_far_more(demo_run):
  workdir, _ = demo_run
  config = demo.get_config()
  tickets = []
  for name in os.listdir(os.path.join(workdir, 'tickets')):
    with open(os.path.join(workdir, 'tickets', name, 'ticket.json')) as f:
      tickets.append(json.load(f))
  ticket = min(tickets, key=lambda t: abs(t['sparsity'] - 0.8))
  noise, informative = kept_fractions(ticket, config)
  assert noise < 0.5 * informative, (noise, informative)


def test_twenty_percent_ticket_matches_the_uniform_model(demo_run):
  _, rows = demo_run
  ue = next(r for r in rows if r['method'] == 'ue' and r['dim'] == 16)
  pep = min((r for r in rows if r['method'] == 'pep'), key=lambda r: abs(r['sparsity'] - 0.8))
  assert 0.78 <= pep['sparsity'] <= 0.82
  assert pep['test_auc'] >= ue['test_auc'] - 0.002, (pep, ue)


RECORDED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs',
                        'results', 'demo.json')


def test_the_demo_gives_the_readme_figures(demo_run):
  workdir, rows = demo_run
  with open(RECORDED) as f:
    recorded = json.load(f)
  want = {(r['method'], r['setting']): r for r in recorded['rows']}
  got = {(r['method'], r['setting']): r for r in rows}
  assert got.keys() == want.keys()
  for key, row in got.items():
    assert row['test_auc'] == pytest.approx(want[key]['test_auc'], abs=2e-3), key
    if want[key].get('params'):
      assert row['params'] == pytest.approx(want[key]['params'], rel=0.01), key
  with open(os.path.join(workdir, 'significance.json')) as f:
    comparisons = json.load(f)['comparisons']
  assert len(comparisons) == len(recorded['significance']['comparisons'])
  for c, r in zip(comparisons, recorded['significance']['comparisons']):
    assert (c['a']['setting'], c['b']['setting']) == (r['a']['setting'], r['b']['setting'])
    assert c['separable'] == r['separable'], (c['a'], c['b'])
    assert c['difference'] == pytest.approx(r['difference'], abs=2e-3), (c['a'], c['b'])


def test_twenty_percent_ticket_is_separably_above_uniform(demo_run):
  workdir, _ = demo_run
  with open(os.path.join(workdir, 'significance.json')) as f:
    comparisons = json.load(f)['comparisons']
  (c,) = [c for c in comparisons if c['a']['method'] == 'pep' and c['b']['setting'] == 'd=16'
          and c['band'][0] <= 0.2 < c['band'][1]]
  assert c['separable'] and c['bootstrap_ci95'][0] > 0, c


def test_teacher_is_the_ceiling(demo_run):
  _, rows = demo_run
  teacher = next(r for r in rows if r['method'] == 'teacher')
  for row in rows:
    if row['method'] != 'teacher':
      assert row['test_auc'] < teacher['test_auc']
