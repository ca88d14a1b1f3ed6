"""The rows mode against the faithful dense optimizer on the same run: tickets, AUC, speed.

    python experiments/rows_vs_dense.py --config=configs/demo.py --workdir=runs/rows_vs_dense

Runs the config three times, methods PEP and UE: ``optimizer.updates='dense'`` and ``'rows'``
with the same seed, and ``'dense'`` again with the next seed, in ``<workdir>/dense``,
``<workdir>/rows`` and ``<workdir>/dense_seed`` (each resumable; a finished one is reused).
Prints, for every budget, the step each ticket was cut at and how far under the budget its
count is, the overlap (Jaccard index) of the rows-mode and dense tickets beside the overlap of
the two dense tickets that differ only in their seed (what a ticket's entries owe to chance),
the retrained test AUC of each, and the prune stage's steady samples/s; writes the same as
JSON (``<workdir>/rows_vs_dense.json``) with the machine.
"""

import argparse
import importlib.util
import json
import os
import platform

import jax
import numpy as np

from pep_jax import experiment
from pep_jax import workdir as wd
from pep_jax.data import load_dataset
from pep_jax.train.setup import build_stage

MODES = ('dense', 'rows')
RUNS = {'dense': ('dense', 0), 'rows': ('rows', 0), 'dense_seed': ('dense', 1)}  # updates, seed+


def load_config(spec: str):
  path, _, variant = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('config_module', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def prune_rate(workdir: str, batch_size: int) -> float:
  r = wd.search_result(workdir, *wd.PRUNE)
  steps, seconds = r['steps'] - r['warmup_steps'], r['seconds'] - r['warmup_seconds']
  return batch_size * steps / seconds if seconds > 0 else float('nan')


def markdown(report: dict) -> str:
  """The table docs/performance.md shows, from ``rows_vs_dense.json``."""

  def cell(value, spec):
    return '-' if value is None else format(value, spec)

  lines = ['| budget | step cut, dense / rows | non-zeros, dense / rows | under budget, dense / rows '
           '| Jaccard, rows vs dense | Jaccard, dense vs dense (next seed) '
           '| test AUC retrained, dense / rows / dense next seed |',
           '|---:|---:|---:|---:|---:|---:|---:|']
  for r in report['tickets']:
    lines.append(
        f'| {r["budget"]:,} | {cell(r["dense_step"], ",")} / {cell(r["rows_step"], ",")} '
        f'| {cell(r["dense_nonzeros"], ",")} / {cell(r["rows_nonzeros"], ",")} '
        f'| {cell(r["dense_under_budget"], ".2%")} / {cell(r["rows_under_budget"], ".2%")} '
        f'| {cell(r["jaccard"], ".3f")} | {cell(r["jaccard_dense_seeds"], ".3f")} '
        f'| {cell(r["dense_test_auc"], ".4f")} / {cell(r["rows_test_auc"], ".4f")} / '
        f'{cell(r["dense_seed_test_auc"], ".4f")} |')
  speed = report['prune_samples_per_second']
  lines.append('')
  lines.append(f'Prune stage, steady samples/s: dense {speed["dense"]:,.0f}, rows '
               f'{speed["rows"]:,.0f} ({speed["rows"] / speed["dense"]:.2f}x).')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/demo.py')
  parser.add_argument('--workdir', required=True)
  args = parser.parse_args()

  summaries, masks, tickets = {}, {}, {}
  for mode, (updates, seed_offset) in RUNS.items():
    config = load_config(args.config)
    config.methods = ('pep', 'ue')
    config.optimizer.updates = updates
    config.seed += seed_offset
    workdir = os.path.join(args.workdir, mode)
    summaries[mode] = {r['run']: r for r in experiment.run(config, workdir) if r.get('run')}
    data = load_dataset(config.data)
    stage = build_stage(config, data, 'masked')
    target = jax.ShapeDtypeStruct(stage.abstract_state().params['embedding']['table'].shape,
                                  bool, sharding=stage.row_sharding)
    tickets[mode] = {t['budget']: t for t in wd.find_tickets(workdir)}
    masks[mode] = {b: np.asarray(wd.load_ticket_mask(workdir, t, target))
                   for b, t in tickets[mode].items()}

  batch_size = config.train.batch_size
  rows = []
  def jaccard(a: str, b: str, budget: int) -> float | None:
    if budget not in masks[a] or budget not in masks[b]:
      return None
    x, y = masks[a][budget], masks[b][budget]
    return float((x & y).sum() / max((x | y).sum(), 1))

  for budget in sorted(set().union(*tickets.values()), reverse=True):
    row = {'budget': budget}
    for mode in RUNS:
      t = tickets[mode].get(budget)
      run = next((r for r in summaries[mode].values()
                  if r['method'] == 'pep' and r.get('budget') == budget), {})
      row[f'{mode}_step'] = t and t['step']
      row[f'{mode}_nonzeros'] = t and t['nonzeros']
      row[f'{mode}_under_budget'] = t and (budget - t['nonzeros']) / budget
      row[f'{mode}_test_auc'] = run.get('test_auc')
    row['jaccard'] = jaccard('dense', 'rows', budget)
    row['jaccard_dense_seeds'] = jaccard('dense', 'dense_seed', budget)
    rows.append(row)
  speed = {mode: prune_rate(os.path.join(args.workdir, mode), batch_size) for mode in MODES}
  ue = {mode: {v['run']: v['test_auc'] for v in summaries[mode].values() if v['method'] == 'ue'}
        for mode in RUNS}

  def cell(value, spec):
    return '-' if value is None else format(value, spec)

  print(f'{"budget":>8s} {"step d/r":>13s} {"under d/r":>15s} {"jaccard d-r":>11s} '
        f'{"d-d seeds":>9s} {"AUC dense":>10s} {"AUC rows":>9s} {"AUC seed+1":>10s}')
  for r in rows:
    print(f'{r["budget"]:8d} {str(r["dense_step"]):>6s}/{str(r["rows_step"]):<6s} '
          f'{cell(r["dense_under_budget"], ".2%"):>7s}/{cell(r["rows_under_budget"], ".2%"):<7s} '
          f'{cell(r["jaccard"], ".4f"):>11s} {cell(r["jaccard_dense_seeds"], ".4f"):>9s} '
          f'{cell(r["dense_test_auc"], ".4f"):>10s} {cell(r["rows_test_auc"], ".4f"):>9s} '
          f'{cell(r["dense_seed_test_auc"], ".4f"):>10s}')
  for name, aucs in ue['dense'].items():
    print(f'{name}: test AUC dense {aucs:.4f}, rows {ue["rows"].get(name, float("nan")):.4f}')
  print(f'prune samples/s (steady): dense {speed["dense"]:,.0f}, rows {speed["rows"]:,.0f} '
        f'({speed["rows"] / speed["dense"]:.2f}x)')
  out = {'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                     'cpus': os.cpu_count(), 'device': jax.devices()[0].device_kind,
                     'jax': jax.__version__},
         'config': args.config, 'tickets': rows, 'ue_test_auc': ue,
         'prune_samples_per_second': speed}
  with open(os.path.join(args.workdir, 'rows_vs_dense.json'), 'w') as f:
    json.dump(out, f, indent=2)
  with open(os.path.join(args.workdir, 'rows_vs_dense.md'), 'w') as f:
    f.write(markdown(out) + '\n')


if __name__ == '__main__':
  main()
