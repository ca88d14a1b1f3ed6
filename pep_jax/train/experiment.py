"""One experiment in one work directory: every method's search, its slim models, the summary.

``run(config, workdir)`` is what ``python -m pep_jax.main`` calls. For each method named in
``config.methods`` (:mod:`pep_jax.methods`) it runs the search, then trains every candidate the
search proposes with :func:`pep_jax.train.fit.train_to_best`, and writes one summary row per
candidate. Every step is resumable and skipped once finished, so the same command started again
after a crash carries on where the last checkpoint left off. A work directory belongs to one
config: running another config into it (other than the keys in
``pep_jax.config.RESUMABLE_KEYS``) is refused, so results from different settings never mix.
"""

from __future__ import annotations

import json
import os

import jax

from pep_jax import config as config_lib
from pep_jax import methods as methods_lib
from pep_jax.data import load_dataset
from pep_jax.data.base import CTRDataset
from pep_jax.methods.base import Candidate, Context, fit_candidate
from pep_jax.train import report
from pep_jax.train.logging import MetricWriter
from pep_jax.train.setup import write_json


def check_workdir(config, workdir: str) -> None:
  """Records the config in ``workdir/config.json``, or refuses a different one."""
  path = os.path.join(workdir, 'config.json')
  current = config_lib.flatten(config.to_dict())
  if os.path.exists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON ({e}); it records the config this work '
                       'directory was made with. Restore it or use a new --workdir.') from e
    differ = sorted(k for k in set(saved) | set(current)
                    if k not in config_lib.RESUMABLE_KEYS and saved.get(k) != current.get(k))
    if differ:
      details = ', '.join(f'{k}: {saved.get(k)!r} -> {current.get(k)!r}' for k in differ)
      raise ValueError(f'{workdir} holds a run with another config ({details}). Use a new '
                       '--workdir, or the same config to resume.')
  if jax.process_index() == 0:
    write_json(path, current)


def summary_row(ctx: Context, cand: Candidate, result: dict) -> dict:
  """One row of ``summary.json``: the candidate's setting, stored size and metrics."""
  row = {'method': cand.method, 'setting': cand.setting, 'run': cand.run, 'budget': None,
         **cand.report,
         'params': result['params'], 'bytes': result['bytes'], 'nonzeros': result['nonzeros'],
         'sparsity': 1.0 - result['params'] / ctx.table_entries}
  row.update({k: v for k, v in result.items() if k not in ('history', 'params', 'bytes',
                                                            'nonzeros', 'field_mean_size')})
  row['field_mean_size'] = result['field_mean_size']
  row.update(report.importance(result['field_mean_size'], ctx.data))
  return row


def teacher_row(data: CTRDataset) -> list[dict]:
  """The planted teacher's ceiling, for synthetic data."""
  if 'teacher_test_auc' not in data.info:
    return []
  return [{'method': 'teacher', 'setting': None, 'budget': None, 'params': None, 'bytes': None,
           'nonzeros': None, 'sparsity': None, 'valid_auc': data.info['teacher_valid_auc'],
           'test_auc': data.info['teacher_test_auc'], 'test_logloss': None,
           'test_auc_batch_mean': None}]


def run(config, workdir: str) -> list[dict]:
  """Runs ``config.stage`` of every method in ``config.methods``; returns the summary rows.

  ``all`` searches and trains every candidate of each method in turn; ``search`` (or its older
  name ``prune``) only searches; ``retrain`` trains the candidates of finished searches;
  ``evaluate`` scores every finished run's best checkpoint again. The summary collects every
  finished run.
  """
  config_lib.validate(config)
  modules = [methods_lib.get(name) for name in config.methods]
  data = load_dataset(config.data)
  for method in modules:  # before the work directory records this config
    method.check(Context(config, data, workdir, None))
  os.makedirs(workdir, exist_ok=True)
  check_workdir(config, workdir)
  writer = MetricWriter(workdir)
  ctx = Context(config, data, workdir, writer)
  stage = config.stage
  if stage == 'evaluate':
    _reevaluate(workdir)
  rows = []
  try:
    for method in modules:
      cands = method.candidates(ctx, search=stage in ('all', 'search', 'prune'))
      for cand in cands:
        if stage in ('all', 'retrain', 'evaluate') or ctx.finished(cand.run) is not None:
          rows.append(summary_row(ctx, cand, fit_candidate(ctx, method, cand)))
    rows += teacher_row(data)
  finally:
    writer.close()
  if jax.process_index() == 0 and rows:
    title = f'{config.data.name} / {config.model.name} / d={config.embedding.dim}'
    print(report.write_summary(rows, workdir, title, data))
    print(f'per-field sizes and the plot: {workdir}/summary.md, {workdir}/frontier.png')
  return rows


def _reevaluate(workdir: str) -> None:
  """Sets finished results aside so that :func:`run` scores every best checkpoint again.

  A finished run resumes at its last step with nothing left to train, restores its best
  checkpoint and writes a fresh ``result.json``.
  """
  root = os.path.join(workdir, 'retrain')
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    path = os.path.join(root, name, 'result.json')
    if os.path.exists(path):
      os.replace(path, path + '.previous')
