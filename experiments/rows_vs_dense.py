"""The rows mode against the faithful dense optimizer on the same run: tickets, AUC, speed.

    python experiments/rows_vs_dense.py --config=configs/demo.py --workdir=runs/rows_vs_dense

Runs the config twice (``optimizer.updates='dense'`` and ``'rows'``, methods PEP and UE) in
``<workdir>/dense`` and ``<workdir>/rows`` (each resumable; a finished one is reused), then
prints, for every budget, the step each ticket was cut at, the overlap of the two tickets
(Jaccard index of their masks), the retrained test AUC of each, and the prune stage's steady
samples/s; writes the same as JSON (``<workdir>/rows_vs_dense.json``) with the machine.
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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/demo.py')
  parser.add_argument('--workdir', required=True)
  args = parser.parse_args()

  summaries, masks, tickets = {}, {}, {}
  for mode in MODES:
    config = load_config(args.config)
    config.methods = ('pep', 'ue')
    config.optimizer.updates = mode
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
  for budget in sorted(set(tickets['dense']) | set(tickets['rows']), reverse=True):
    row = {'budget': budget}
    for mode in MODES:
      t = tickets[mode].get(budget)
      run = next((r for r in summaries[mode].values()
                  if r['method'] == 'pep' and r.get('budget') == budget), {})
      row[f'{mode}_step'] = t and t['step']
      row[f'{mode}_nonzeros'] = t and t['nonzeros']
      row[f'{mode}_test_auc'] = run.get('test_auc')
    if budget in masks['dense'] and budget in masks['rows']:
      a, b = masks['dense'][budget], masks['rows'][budget]
      row['jaccard'] = float((a & b).sum() / max((a | b).sum(), 1))
    rows.append(row)
  speed = {mode: prune_rate(os.path.join(args.workdir, mode), batch_size) for mode in MODES}
  ue = {mode: {k: v['test_auc'] for k, v in summaries[mode].items() if k.startswith('ue_')}
        for mode in MODES}

  print(f'{"budget":>8s} {"step d/r":>13s} {"jaccard":>8s} {"AUC dense":>10s} {"AUC rows":>9s}')
  for r in rows:
    auc = [f'{r[f"{m}_test_auc"]:.4f}' if r[f'{m}_test_auc'] else '-' for m in MODES]
    jac = f'{r["jaccard"]:.4f}' if 'jaccard' in r else '-'
    print(f'{r["budget"]:8d} {str(r["dense_step"]):>6s}/{str(r["rows_step"]):<6s} {jac:>8s} '
          f'{auc[0]:>10s} {auc[1]:>9s}')
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


if __name__ == '__main__':
  main()
