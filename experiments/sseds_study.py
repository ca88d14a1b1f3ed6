"""SSEDS's open choices at equal stored parameters: the ranking, the fill and the scoring batches.

    python experiments/ml100k_as_ml1m.py --src=<public checkout>/data/ml-100k --out=/data/ml100k
    python experiments/sseds_study.py --workdir=runs/sseds_study --movielens_dir=/data/ml100k \
        --seeds=42,43

Runs SSEDS once per variant of :data:`VARIANTS` on two datasets, each variant the whole
experiment (UE at the base width, its scoring, every budget retrained) in
``--workdir/<dataset>/<variant>/`` (reused when the command is started again):

* ``compare``: ``configs/compare.py:quick`` (synthetic, 20 fields whose vocabulary size says
  nothing about importance; FM, d=16; budgets 30%, 10% and 3% of the table);
* ``movielens``: ``configs/movielens_fm.py:small`` on ``--movielens_dir`` (MovieLens-100K in
  ML-1M's files: 7 fields, 1,285 features; FM, d=32), with budgets of 50%, 25% and 10% of
  the table, retraining up to 50 epochs with patience 5, PEP pruning up to 300 epochs (its
  ``s_init=-6``, ``gate_scale=4`` reach 10% there, docs/analyses.md).

The paper's variant (rank by saliency, prefix fill, one scoring batch) also trains PEP's
tickets at the same budgets, the reference. Every variant retrains UE at the base width: the
same config and seed give the same model, which the table shows (one UE row per dataset and
seed). Writes ``--out``'s ``sseds_study.json`` (every row, and per dataset its shape and the
training caps the figures depend on) and ``sseds_study.md`` (test AUC per variant and budget,
each seed and their mean, with the machine's description).
"""

from __future__ import annotations

import datetime
import json
import os

import jax
import numpy as np
from absl import app, flags, logging

from configs import compare, movielens_fm
from pep_jax import analysis, experiment
from pep_jax.data import load_dataset

flags.DEFINE_string('workdir', None, 'Folder of the runs (one per dataset and variant).')
flags.DEFINE_string('movielens_dir', '', 'ML-1M-format files (ratings.dat, users.dat, '
                    'movies.dat); the movielens dataset is skipped without it.')
flags.DEFINE_list('seeds', ['42'], 'Seeds; each is the whole experiment.')
flags.DEFINE_list('datasets', ['compare', 'movielens'], 'Datasets to run.')
flags.DEFINE_list('variants', None, 'Variants to run (default: all of VARIANTS).')
flags.DEFINE_string('compare_variant', 'quick', "configs/compare.py's variant ('tiny' for tests).")
flags.DEFINE_string('out', 'docs/results', 'Folder of sseds_study.json and sseds_study.md.')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS

# name -> sseds.* overrides. The first is the paper's procedure (and the defaults).
VARIANTS = {
    'paper': {},
    'greedy': {'fill': 'greedy'},
    'per_param': {'rank': 'saliency_per_param'},
    'per_param_greedy': {'rank': 'saliency_per_param', 'fill': 'greedy'},
    'batches10': {'score_batches': 10},
    'batches100': {'score_batches': 100},
}
REFERENCE = 'paper'  # the variant that also trains PEP's tickets


def dataset_config(name: str):
  """The base config of a dataset of the study (methods set per variant)."""
  if name == 'compare':
    return compare.get_config(FLAGS.compare_variant)
  if name != 'movielens':
    raise ValueError(f'--datasets: unknown dataset {name!r}; expected compare or movielens')
  c = movielens_fm.get_config('small')
  c.data.dir = FLAGS.movielens_dir
  budgets = (0.5, 0.25, 0.1)
  c.prune.budgets = budgets
  c.sseds.budgets = budgets
  c.prune.max_epochs = 300
  c.train.max_epochs = 50
  c.train.patience = 5
  return c


def variant_config(base, name: str, seeds: tuple[int, ...]):
  methods = ('ue', 'pep', 'sseds') if name == REFERENCE else ('ue', 'sseds')
  overrides = {f'sseds.{k}': v for k, v in VARIANTS[name].items()}
  seed_keys = {'seeds': seeds} if len(seeds) > 1 else {'seeds': (), 'seed': seeds[0]}
  return analysis.variant(base, methods=methods, stage='all', **overrides, **seed_keys,
                          **{'ue.dims': (int(base.embedding.dim),),
                             'train.parallel_runs': 1})


def study_rows(dataset: str, name: str, config, rows: list[dict]) -> list[dict]:
  """The summary rows this study reports, with the dataset, variant and config they come from."""
  out = []
  for row in rows:
    if row['method'] not in ('ue', 'pep', 'sseds'):
      continue
    out.append({
        'dataset': dataset, 'variant': name, 'seed': row.get('seed', config.seed),
        'method': row['method'], 'setting': row['setting'], 'budget': row['budget'],
        'params': row['params'], 'test_auc': row['test_auc'],
        'test_logloss': row['test_logloss'], 'valid_auc': row['valid_auc'],
        'field_mean_size': row['field_mean_size'],
        'width_spearman': row.get('width_spearman'), 'noise_share': row.get('noise_share'),
        'best_epoch': row.get('best_epoch'), 'epochs': row.get('epochs'),
        'search_seconds': row.get('search_seconds'), 'train_seconds': row['train_seconds'],
        'rank': config.sseds.rank, 'fill': config.sseds.fill,
        'score_batches': int(config.sseds.score_batches),
    })
  return out


def dataset_facts(config) -> dict:
  """What the figures of a dataset depend on: its fields and rows, the planted dimensions
  (synthetic data only), the model and the training caps."""
  data = load_dataset(config.data)
  truth = data.info.get('intrinsic_dims')
  return {
      'field_dims': [int(v) for v in data.field_dims],
      'features': int(sum(data.field_dims)),
      'rows': len(data.train) + len(data.valid) + len(data.test),
      'intrinsic_dims': None if truth is None else [int(k) for k in truth],
      'model': config.model.name, 'dim': int(config.embedding.dim),
      'train_max_epochs': int(config.train.max_epochs),
      'train_patience': int(config.train.patience),
      'prune_max_epochs': int(config.prune.max_epochs),
  }


def machine() -> str:
  """CPU count, model, memory and accelerator: the machine the numbers come from."""
  return f'{analysis.machine_line()}, JAX {jax.__version__} on {jax.default_backend()}'


def _auc(values: list[float]) -> str:
  return f'{values[0]:.4f}' if len(values) == 1 else (
      ' / '.join(f'{v:.4f}' for v in values) + f' (mean {np.mean(values):.4f})')


def markdown(rows: list[dict], seeds: tuple[int, ...], header: str) -> str:
  """Per dataset: UE and PEP, then every variant's row per budget (test AUC per seed)."""
  lines = [header, '']
  for dataset in dict.fromkeys(r['dataset'] for r in rows):
    mine = [r for r in rows if r['dataset'] == dataset]
    table = next(r['params'] for r in mine if r['method'] == 'ue')
    lines += [f'## {dataset}', '',
              f'Test AUC per seed ({", ".join(str(s) for s in seeds)}) and their mean. budget: '
              f'a share of the uniform table ({table:,} entries); params and fields (those '
              'with at least one dimension): the first seed\'s model.', '',
              '| method | variant | budget | params | fields | test AUC |',
              '|---|---|---:|---:|---:|---|']
    keyed: dict[tuple, list[dict]] = {}
    for r in mine:
      if r['method'] == 'ue' and r['variant'] != REFERENCE:
        continue  # the same model in every variant; the reference's row stands for them
      variant = '' if r['method'] != 'sseds' else r['variant']
      keyed.setdefault((r['method'], variant, r['budget'] or 0, r['setting']), []).append(r)
    order = {'ue': 0, 'pep': 1, 'sseds': 2}
    variants = list(VARIANTS)
    for key in sorted(keyed, key=lambda k: (order[k[0]], variants.index(k[1]) if k[1] else -1,
                                            -k[2])):
      group = sorted(keyed[key], key=lambda r: r['seed'])
      method, variant, budget, setting = key
      fields = sum(w > 0 for w in group[0]['field_mean_size'])
      share = f'{budget / table:.0%} ({budget:,})' if budget else '-'
      lines.append(f'| {method} {setting if method == "ue" else ""}'.rstrip() +
                   f' | {variant or "-"} | {share} | {group[0]["params"]:,} | {fields} | '
                   f'{_auc([r["test_auc"] for r in group])} |')
    lines.append('')
  return '\n'.join(lines)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  seeds = tuple(int(s) for s in FLAGS.seeds)
  names = FLAGS.variants or list(VARIANTS)
  rows, datasets = [], {}
  for dataset in FLAGS.datasets:
    if dataset == 'movielens' and not FLAGS.movielens_dir:
      print('movielens skipped: no --movielens_dir')
      continue
    base = dataset_config(dataset)
    datasets[dataset] = dataset_facts(base)
    for name in names:
      config = variant_config(base, name, seeds)
      found = experiment.run(config, os.path.join(FLAGS.workdir, dataset, name))
      rows += study_rows(dataset, name, config, found)
  os.makedirs(FLAGS.out, exist_ok=True)
  described = machine()
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  with open(os.path.join(FLAGS.out, 'sseds_study.json'), 'w') as f:
    json.dump({'machine': described, 'date': stamp, 'seeds': seeds, 'variants': VARIANTS,
               'datasets': datasets, 'rows': rows}, f, indent=1)
  paper = '(the paper: rank by saliency, prefix fill, one scoring batch)'
  header = (f'# SSEDS: ranking, fill and scoring batches at equal stored parameters\n\n'
            f'`python experiments/sseds_study.py` ({stamp}; {described}). Variants: '
            + '; '.join(f'`{n}` ' + (', '.join(f'sseds.{k}={v}' for k, v in VARIANTS[n].items())
                                     or paper) for n in names) + '.')
  text = markdown(rows, seeds, header)
  with open(os.path.join(FLAGS.out, 'sseds_study.md'), 'w') as f:
    f.write(text)
  print(text)


if __name__ == '__main__':
  app.run(main)
