"""Prune and retrain give the same numbers on 1, 2, 4 and 8 devices (fake CPU devices)."""

import numpy as np
import pytest

from multidevice import run_on_devices

RUN = '''
import os, tempfile
from pep_jax.data import load_dataset
from pep_jax.workdir import find_tickets, load_ticket_mask
from pep_jax import experiment
from pep_jax.train.setup import build_stage

config = tiny_config()
config.methods = ('pep',)
data = load_dataset(config.data)
out = {}
for n in (1, 2, 4, 8):
  on_first_devices(n)
  workdir = tempfile.mkdtemp()
  rows = [r for r in experiment.run(config, workdir) if r['method'] == 'pep']
  with open(os.path.join(workdir, 'prune', 'result.json')) as f:
    prune = json.load(f)
  for key in ('seconds', 'warmup_seconds'):  # wall-clock times differ between runs
    del prune[key]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    metrics = [json.loads(line) for line in f]
  stage = build_stage(config, data, 'masked')
  shape = stage.abstract_state().params['embedding']['table']
  target = jax.ShapeDtypeStruct(shape.shape, bool, sharding=stage.row_sharding)
  masks = {}
  for t in find_tickets(workdir):
    mask = load_ticket_mask(workdir, t, target)
    assert mask.sharding.is_equivalent_to(stage.row_sharding, 2)
    masks[t['budget']] = np.asarray(mask).astype(int).tolist()
  out[n] = {
      'devices': len(stage.mesh.devices.flat),
      'prune': prune,
      'tickets': [{k: t[k] for k in ('budget', 'nonzeros', 'step', 'field_mean_size')}
                  for t in find_tickets(workdir)],
      'masks': masks,
      'losses': [(m['stage'], m['step'], m['loss']) for m in metrics if 'loss' in m],
      'retrain': [{k: r[k] for k in ('budget', 'nonzeros', 'test_auc', 'test_logloss',
                                      'valid_auc', 'best_epoch')} for r in rows],
  }
result(out)
'''


@pytest.fixture(scope='module')
def runs():
  return run_on_devices(8, RUN, timeout=240)


def test_every_device_count_ran_on_its_mesh(runs):
  assert {n: r['devices'] for n, r in runs.items()} == {'1': 1, '2': 2, '4': 4, '8': 8}


@pytest.mark.parametrize('n', ['2', '4', '8'])
def test_same_prune_and_tickets(runs, n):
  one, many = runs['1'], runs[n]
  assert many['prune'] == one['prune']
  assert many['tickets'] == one['tickets']
  assert one['tickets'], 'the test config must reach a budget'
  for budget, mask in one['masks'].items():
    np.testing.assert_array_equal(many['masks'][budget], mask)


@pytest.mark.parametrize('n', ['2', '4', '8'])
def test_same_losses(runs, n):
  one, many = runs['1']['losses'], runs[n]['losses']
  assert [m[:2] for m in many] == [m[:2] for m in one]
  np.testing.assert_allclose([m[2] for m in many], [m[2] for m in one], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('n', ['2', '4', '8'])
def test_same_retrained_tickets(runs, n):
  one, many = runs['1']['retrain'], runs[n]['retrain']
  assert len(one) == len(many) > 0
  for a, b in zip(one, many):
    assert (a['budget'], a['nonzeros'], a['best_epoch']) == (b['budget'], b['nonzeros'],
                                                           b['best_epoch'])
    for key in ('test_auc', 'test_logloss', 'valid_auc'):
      np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6)
