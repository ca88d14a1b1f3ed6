"""SSEDS: saliency against finite differences, the budgeted selection, and a run end to end."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from pep_jax.data import load_dataset, pipeline
from pep_jax.methods import sseds
from pep_jax.methods.base import Context
from pep_jax import experiment
from pep_jax import workdir as wd
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.setup import build_stage
from pep_jax.train.steps import weighted_bce


def tiny(**sseds_overrides):
  c = demo.get_config('tiny')
  c.methods = ('sseds',)
  c.sseds.budgets = (0.5, 0.2)
  for key, value in sseds_overrides.items():
    c.sseds[key] = value
  return c


@pytest.fixture(scope='module')
def data():
  return load_dataset(tiny().data)


def first_batch(config, data):
  return next(iter(pipeline.batches(data.train, config.train.batch_size, shuffle=True,
                                    seed=config.seed, epoch=0)))


@pytest.mark.parametrize('granularity', ['field', 'feature'])
def test_saliency_equals_finite_differences_of_the_loss(data, granularity):
  config = tiny(granularity=granularity, score_batches=1)
  ctx = Context(config, data, '', None)
  stage = sseds.probe_stage(ctx)
  state = stage.initial_state()
  scores = sseds.saliency(ctx, stage, state)  # |dL/d alpha| on the first training batch
  batch = first_batch(config, data)
  rows = data.num_fields if granularity == 'field' else stage.embedding.table_rows

  @jax.jit
  def batch_loss(alpha):
    variables = {'params': state.params, 'batch_stats': state.batch_stats,
                 'probe': {'embedding': {'alpha': alpha}}}
    logits = stage.model.apply(variables, batch['ids'], batch['weights'], train=False)
    return weighted_bce(logits, batch['labels'], batch['weights'])

  def loss(alpha):
    return float(batch_loss(alpha))

  ones = np.ones((rows, config.embedding.dim), np.float32)
  rng = np.random.default_rng(0)
  slots = [tuple(s) for s in np.argwhere(scores > np.quantile(scores, 0.8))]
  slots = [slots[i] for i in rng.choice(len(slots), size=8, replace=False)]
  eps = 0.05
  for n, j in slots:
    up, down = ones.copy(), ones.copy()
    up[n, j] += eps
    down[n, j] -= eps
    fd = (loss(jnp.asarray(up)) - loss(jnp.asarray(down))) / (2 * eps)
    assert abs(fd) == pytest.approx(scores[n, j], rel=0.03, abs=2e-5), (n, j)


def test_feature_saliency_is_the_table_times_its_gradient(data):
  """dL/d alpha_rj = sum over lookups of e_rj * dL/de_rj = V_rj * dL/dV_rj."""
  config = tiny(granularity='feature', score_batches=1)
  ctx = Context(config, data, '', None)
  probe = sseds.probe_stage(ctx)
  state = probe.initial_state()
  scores = sseds.saliency(ctx, probe, state)
  plain = build_stage(config, data, 'plain')
  batch = first_batch(config, data)

  def loss(params):
    logits = plain.model.apply({'params': params, 'batch_stats': state.batch_stats},
                               batch['ids'], batch['weights'], train=False)
    return weighted_bce(logits, batch['labels'], batch['weights'])

  grads = jax.grad(loss)(state.params)['embedding']['table']
  table = state.params['embedding']['table']
  expected = np.abs(np.asarray(table * grads))[:data.num_features]
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-9)


def test_selection_is_the_best_prefix_that_fits():
  scores = np.array([[0.9, 0.1, 0.5],
                     [0.8, 0.7, 0.05]])
  costs = np.array([10, 1])
  # Ranking: (0,0) 10, (1,0) 1, (1,1) 1, (0,2) 10, (0,1) 10, (1,2) 1.
  np.testing.assert_array_equal(sseds.select(scores, costs, 12),
                                [[True, False, False], [True, True, False]])
  # (0,2) does not fit 21 - 12 = 9 more: a strict prefix stops there, skipping cheaper slots.
  np.testing.assert_array_equal(sseds.select(scores, costs, 21),
                                [[True, False, False], [True, True, False]])
  np.testing.assert_array_equal(sseds.select(scores, costs, 22),
                                [[True, False, True], [True, True, False]])
  # A row may end with nothing; min_width keeps its best slot first.
  np.testing.assert_array_equal(sseds.select(scores, costs, 2), np.zeros((2, 3), bool))
  np.testing.assert_array_equal(sseds.select(scores, costs, 12, min_width=1),
                                [[True, False, False], [True, True, False]])
  with pytest.raises(ValueError, match='sseds.min_width'):
    sseds.select(scores, costs, 5, min_width=1)


def test_selection_properties_on_random_scores():
  rng = np.random.default_rng(1)
  for _ in range(50):
    n, d = rng.integers(1, 6), rng.integers(1, 6)
    scores = rng.random((n, d))
    costs = rng.integers(1, 20, n)
    budget = int(rng.integers(1, int(costs.sum() * d) + 1))
    keep = sseds.select(scores, costs, budget)
    spent = (keep * costs[:, None]).sum()
    assert spent <= budget
    order = np.argsort(-scores.ravel(), kind='stable')
    kept_in_order = keep.ravel()[order]
    count = int(kept_in_order.sum())
    assert kept_in_order[:count].all()  # a prefix of the ranking
    if count < n * d:  # the next slot would not fit
      assert spent + np.repeat(costs, d)[order[count]] > budget


# Three fields of vocabularies 10, 2 and 1, width 3. Saliency per stored parameter
# (score / vocabulary):
#   field 0: .09 .06 .02     field 1: .25 .20 .05     field 2: .30 .04 .01
RANKED_SCORES = np.array([[0.9, 0.6, 0.2],
                          [0.5, 0.4, 0.1],
                          [0.3, 0.04, 0.01]])
RANKED_COSTS = np.array([10, 2, 1])


@pytest.mark.parametrize('rank, fill, expected', [
    # By saliency: (0,0) 10, (0,1) 10, (1,0) 2, (1,1) 2, (2,0) 1, (0,2) 10, (1,2) 2, ...
    # (0,1) would bring the cost to 20 > 14: the prefix ends after (0,0), 10 spent.
    ('saliency', 'prefix', [(0, 0)]),
    # Greedy skips (0,1), takes (1,0) and (1,1) (14 spent); nothing else fits the 0 left.
    ('saliency', 'greedy', [(0, 0), (1, 0), (1, 1)]),
    # Per parameter: (2,0) 1, (1,0) 2, (1,1) 2, (0,0) 10, (0,1) 10, (1,2) 2, (2,1) 1, (0,2) 10,
    # (2,2) 1. (0,0) would bring 5 to 15 > 14: the prefix ends after (1,1), 5 spent.
    ('saliency_per_param', 'prefix', [(2, 0), (1, 0), (1, 1)]),
    # Greedy skips (0,0) and (0,1), then takes (1,2) 7, (2,1) 8, skips (0,2), takes (2,2) 9.
    ('saliency_per_param', 'greedy', [(2, 0), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)]),
])
def test_rank_and_fill_by_hand(rank, fill, expected):
  keep = sseds.select(RANKED_SCORES, RANKED_COSTS, 14, rank=rank, fill=fill)
  want = np.zeros((3, 3), bool)
  want[tuple(np.array(expected).T)] = True
  np.testing.assert_array_equal(keep, want)
  with pytest.raises(ValueError, match='fill'):
    sseds.select(RANKED_SCORES, RANKED_COSTS, 14, rank=rank, fill=fill.upper())


def test_rank_per_param_divides_by_params_not_by_the_budget_unit():
  """A budget in slots (every cost 1) still ranks by the parameters a slot stores."""
  keep = sseds.select(RANKED_SCORES, np.ones(3, np.int64), 3, rank='saliency_per_param',
                      params=RANKED_COSTS)
  np.testing.assert_array_equal(np.argwhere(keep), [(1, 0), (1, 1), (2, 0)])
  keep = sseds.select(RANKED_SCORES, np.ones(3, np.int64), 3)
  np.testing.assert_array_equal(np.argwhere(keep), [(0, 0), (0, 1), (1, 0)])


def test_greedy_fill_after_min_width():
  # Forced: each field's best slot, (0,0) (1,0) (2,0), 13 spent of 14. Then by saliency:
  # (0,1) 10 and (0,2) 10 do not fit, (1,1) 2 does not fit the 1 left, (2,1) 1 does.
  keep = sseds.select(RANKED_SCORES, RANKED_COSTS, 14, min_width=1, fill='greedy')
  np.testing.assert_array_equal(np.argwhere(keep), [(0, 0), (1, 0), (2, 0), (2, 1)])
  keep = sseds.select(RANKED_SCORES, RANKED_COSTS, 14, min_width=1)  # prefix: (0,1) ends it
  np.testing.assert_array_equal(np.argwhere(keep), [(0, 0), (1, 0), (2, 0)])


def brute_force_select(scores, costs, budget, rank, fill):
  """The selection written as a loop over the ranking, one slot at a time."""
  n, d = scores.shape
  slots = [(i, j) for i in range(n) for j in range(d)]
  value = {(i, j): scores[i, j] / (costs[i] if rank == 'saliency_per_param' else 1)
           for i, j in slots}
  ordered = sorted(slots, key=lambda s: (-value[s], s))  # ties by position
  keep, left = np.zeros((n, d), bool), budget
  for i, j in ordered:
    if costs[i] <= left:
      keep[i, j], left = True, left - costs[i]
    elif fill == 'prefix':
      break
  return keep


@pytest.mark.parametrize('rank', sseds.RANKS)
@pytest.mark.parametrize('fill', sseds.FILLS)
def test_selection_matches_a_brute_force_loop(rank, fill):
  rng = np.random.default_rng(2)
  for _ in range(200):
    n, d = rng.integers(1, 6), rng.integers(1, 5)
    scores = rng.random((n, d))
    costs = rng.integers(1, 30, n)
    budget = int(rng.integers(1, int(costs.sum() * d) + 1))
    keep = sseds.select(scores, costs, budget, rank=rank, fill=fill)
    np.testing.assert_array_equal(keep, brute_force_select(scores, costs, budget, rank, fill))
    assert (keep * costs[:, None]).sum() <= budget
    if fill == 'greedy':  # it keeps the prefix and more, and nothing left out would fit
      prefix = sseds.select(scores, costs, budget, rank=rank)
      assert (keep >= prefix).all()
      left = budget - (keep * costs[:, None]).sum()
      assert all(costs[i] > left for i, _ in np.argwhere(~keep))


def test_bad_settings_name_their_key(tmp_path):
  for overrides, key in (({'budgets': (10_000_000,)}, 'sseds.budgets'),
                         ({'granularity': 'row'}, 'sseds.granularity'),
                         ({'align': 'projection', 'granularity': 'feature'}, 'sseds.align'),
                         ({'score_batches': 0}, 'sseds.score_batches'),
                         ({'min_width': 99}, 'sseds.min_width'),
                         ({'rank': 'per_param'}, 'sseds.rank'),
                         ({'fill': 'knapsack'}, 'sseds.fill')):
    with pytest.raises(ValueError, match=key):
      experiment.run(tiny(**overrides), str(tmp_path / key))


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('sseds'))
  config = tiny()
  config.methods = ('ue', 'sseds')
  return workdir, experiment.run(config, workdir)


def test_end_to_end_reuses_the_uniform_run_and_keeps_its_budgets(finished):
  workdir, rows = finished
  ue_result = os.path.join(workdir, 'retrain', 'ue_d8', 'result.json')
  mtime = os.path.getmtime(ue_result)
  with open(os.path.join(workdir, 'sseds', 'result.json')) as f:
    search = json.load(f)
  assert search['pretrain_run'] == 'ue_d8' and search['score_passes'] == 1
  assert os.path.getmtime(ue_result) == mtime  # pre-training reused, not repeated
  found = [r for r in rows if r['method'] == 'sseds']
  table = 368 * 8
  assert [r['budget'] for r in found] == [round(0.5 * table), round(0.2 * table)]
  for row in found:
    assert 0 < row['params'] <= row['budget']
    assert row['params'] == sum(w * v for w, v in zip(row['field_mean_size'],
                                                      (3, 10, 50, 200, 5, 100)))
    assert row['nonzeros'] <= row['params']  # retrained masked table, zeros elsewhere
    assert row['search_seconds'] > 0 and 0.5 < row['test_auc'] < 1


@pytest.mark.parametrize('key, value', [('rank', 'saliency_per_param'), ('fill', 'greedy')])
def test_a_finished_search_refuses_another_rank_or_fill(finished, key, value):
  """The masks depend on them: the work directory refuses the change, naming the key."""
  workdir, _ = finished
  config = tiny(**{key: value})
  config.methods = ('ue', 'sseds')
  with pytest.raises(ValueError, match=f'sseds.{key}'):
    experiment.run(config, workdir)


def test_the_search_records_its_rank_and_fill(finished):
  workdir, _ = finished
  with open(os.path.join(workdir, 'sseds', 'result.json')) as f:
    search = json.load(f)
  assert (search['rank'], search['fill']) == ('saliency', 'prefix')


def test_the_search_selects_by_the_configured_rank_and_fill(finished, data, tmp_path):
  """A search with another rank and fill, on the finished pre-trained model, keeps what
  :func:`sseds.select` keeps of the same scores with that rank and fill."""
  workdir, _ = finished
  other = str(tmp_path / 'other')
  shutil.copytree(workdir, other)
  shutil.rmtree(wd.search_dir(other, *sseds.SEARCH))  # the pre-trained run stays
  ctx = Context(tiny(rank='saliency_per_param', fill='greedy'), data, other, None)
  sseds.search(ctx)
  default = Context(tiny(), data, workdir, None)
  ckpt = Checkpointer(wd.search_dir(workdir, *sseds.SEARCH, 'search'), max_to_keep=None)
  shape = (data.num_fields, 8)
  budgets = [c.info['budget'] for c in sseds.candidates(default)]
  stored, _ = ckpt.restore(0, {'scores': np.zeros(shape, np.float64),
                               'masks': {f'b{b}': np.zeros(shape, bool) for b in budgets}})
  ckpt.close()
  dims = np.asarray(data.field_dims)
  changed = False
  for b in budgets:
    expected = sseds.select(stored['scores'], dims, b, rank='saliency_per_param', fill='greedy')
    np.testing.assert_array_equal(sseds.load_mask(ctx, b), expected)
    changed |= not np.array_equal(expected, sseds.load_mask(default, b))
  assert changed  # the variant keeps other slots than the paper's ranking does here


@pytest.mark.parametrize('init', ['warm', 'rewind'])
def test_projection_starts_as_the_masked_model(finished, data, init):
  """Per-field tables and identity-row projections reproduce ``table * mask`` exactly."""
  workdir, _ = finished
  batch = first_batch(tiny(), data)
  probs = {}
  for align in ('pad', 'projection'):
    config = tiny(align=align, init=init)
    ctx = Context(config, data, workdir, None)
    cand = sseds.candidates(ctx)[1]
    stage = sseds.build(ctx, cand)
    state, constants = sseds.initial(ctx, cand, stage)
    probs[align] = np.asarray(stage.eval_step(state, batch, constants))
    size = sseds.size(ctx, cand, stage, state, constants)
    kept = np.asarray(size['field_mean_size'])
    entries = int((kept * np.asarray(data.field_dims)).sum())
    assert size['params'] == entries + (int(kept.sum()) * 8 if align == 'projection' else 0)
  np.testing.assert_allclose(probs['projection'], probs['pad'], rtol=1e-5, atol=1e-7)
