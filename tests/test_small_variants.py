"""The ``:small`` variants reach a budget on a small Criteo-format sample (a first look at data)."""

import json
import os

import numpy as np

from configs import criteo_fm
from pep_jax import analysis
from pep_jax import experiment


def write_criteo_sample(path, rows: int, seed: int = 0) -> None:
  """``rows`` lines of Criteo's train.txt with Zipf-like values and labels that depend on them.

  Integer fields take small counts (most of them fall into a handful of log buckets), the
  categorical fields 8-hex-digit tokens from vocabularies of 5 to 3,000 values, empties as in
  the real file; the click probability is a logistic function of a few fields' values.
  """
  rng = np.random.default_rng(seed)
  vocabs = rng.integers(5, 3000, 26)
  cats = [rng.zipf(1.3, rows) % v for v in vocabs]  # [26][rows]
  ints = [rng.zipf(1.5, rows) for _ in range(13)]
  effect = rng.normal(size=(26, 3000))
  logit = -1.2 + sum(effect[f][cats[f]] * 0.5 for f in range(6)) + 0.3 * np.log(ints[0])
  labels = rng.random(rows) < 1 / (1 + np.exp(-logit))
  with open(path, 'w') as f:
    for r in range(rows):
      fields = ['1' if labels[r] else '0']
      fields += ['' if rng.random() < 0.1 else str(int(ints[i][r])) for i in range(13)]
      tokens = [(f * 7919 + int(cats[f][r])) * 2654435761 % 2**32 for f in range(26)]
      fields += ['' if rng.random() < 0.05 else f'{t:08x}' for t in tokens]
      f.write('\t'.join(fields) + '\n')


def test_criteo_small_variant_writes_a_ticket_on_a_10k_row_sample(tmp_path):
  raw = tmp_path / 'criteo'
  raw.mkdir()
  write_criteo_sample(raw / 'train.txt', 10_000)
  config = criteo_fm.get_config('small')
  # The variant's threshold settings as they are; only its largest budget, so pruning stops early.
  config = analysis.variant(config, stage='prune', **{
      'data.dir': str(raw), 'data.workers': 1, 'prune.budgets': config.prune.budgets[:1]})
  workdir = str(tmp_path / 'run')
  experiment.run(config, workdir)
  with open(os.path.join(workdir, 'prune', 'result.json')) as f:
    result = json.load(f)
  assert result['reached'], result
  ticket = os.path.join(workdir, 'tickets', f'b{max(result["reached"])}', 'ticket.json')
  with open(ticket) as f:
    assert json.load(f)['nonzeros'] <= max(result['reached'])


def test_small_budget_variant_lifts_the_threshold_bound_and_keeps_the_rest():
  paper, small_budget = criteo_fm.get_config(), criteo_fm.get_config('small_budget')
  assert (paper.embedding.gate_scale, small_budget.embedding.gate_scale) == (1.0, 4.0)
  assert small_budget.embedding.s_init == paper.embedding.s_init == -150.0
  assert small_budget.prune.budgets == paper.prune.budgets
