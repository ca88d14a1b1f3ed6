"""The demo's claims, checked against the planted truth of the synthetic data (~2.5 min).

* The prune stage zeroes the noise fields far more than the informative ones.
* The retrained ticket at 20% of the parameters reaches the uniform d=16 model's test AUC
  (within 0.002) or better.
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


def test_teacher_is_the_ceiling(demo_run):
  _, rows = demo_run
  teacher = next(r for r in rows if r['method'] == 'teacher')
  for row in rows:
    if row['method'] != 'teacher':
      assert row['test_auc'] < teacher['test_auc']
