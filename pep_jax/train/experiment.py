"""One experiment in one work directory: prune -> retrain tickets -> uniform baselines -> summary.

``run(config, workdir)`` is what ``python -m pep_jax.main`` calls. Every stage is resumable and
skipped once finished, so the same command started again after a crash carries on where the
last checkpoint left off. A work directory belongs to one config: running another config
into it (other than the keys in ``pep_jax.config.RESUMABLE_KEYS``) is refused, so results
from different settings never mix.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from pep_jax import config as config_lib
from pep_jax.data import load_dataset
from pep_jax.data.base import CTRDataset
from pep_jax.train import report
from pep_jax.train.logging import MetricWriter
from pep_jax.train.prune import find_tickets, run_prune
from pep_jax.train.retrain import retrain_all, retrain_ticket, ticket_run_name, train_uniform
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


def collect_rows(config, data: CTRDataset, workdir: str, writer: MetricWriter) -> list[dict]:
  """Summary rows of every finished retrain and UE run, plus the teacher's ceiling."""
  def finished(run: str) -> bool:
    path = os.path.join(workdir, 'retrain', run, 'result.json')
    return os.path.exists(path) or os.path.exists(path + '.previous')

  rows = []
  for init in ('rewind', 'random'):  # both, when the re-initialisation ablation was run
    variant = ml_collections.ConfigDict(config.to_dict())
    variant.retrain.init = init
    for ticket in find_tickets(workdir):
      if finished(ticket_run_name(variant, ticket)):
        rows.append(retrain_ticket(variant, data, workdir, ticket, writer))
  for dim in config.ue.dims:
    if finished(f'ue_d{int(dim)}'):
      rows.append(train_uniform(config, data, workdir, int(dim), writer))
  if 'teacher_test_auc' in data.info:
    rows.append({'method': 'teacher', 'budget': None, 'nonzeros': None, 'sparsity': None,
                 'valid_auc': data.info['teacher_valid_auc'],
                 'test_auc': data.info['teacher_test_auc'], 'test_logloss': None,
                 'test_auc_batch_mean': None})
  return rows


def run(config, workdir: str) -> list[dict]:
  """Runs ``config.stage`` in ``workdir`` and writes the summary; returns its rows."""
  config_lib.validate(config)
  os.makedirs(workdir, exist_ok=True)
  check_workdir(config, workdir)
  data = load_dataset(config.data)
  writer = MetricWriter(workdir)
  try:
    stage = config.stage
    if stage in ('all', 'prune'):
      result = run_prune(config, data, workdir, writer)
      print(f'prune: {len(result["reached"])} of {len(result["budgets"])} budgets reached '
            f'after {result["steps"]} steps; final non-zeros {result["final_nonzeros"]}')
    if stage in ('all', 'retrain'):
      retrain_all(config, data, workdir, writer)
    if stage in ('all', 'ue'):
      for dim in config.ue.dims:
        train_uniform(config, data, workdir, int(dim), writer)
    if stage == 'evaluate':
      _reevaluate(workdir)
    rows = collect_rows(config, data, workdir, writer)
  finally:
    writer.close()
  if jax.process_index() == 0 and rows:
    title = f'{config.data.name} / {config.model.name} / d={config.embedding.dim}'
    fields = report.field_size_table(find_tickets(workdir), data.field_dims,
                                     data.info.get('intrinsic_dims'))
    print(report.write_summary(rows, workdir, title, fields))
    print(f'per-field sizes and the plot: {workdir}/summary.md, {workdir}/frontier.png')
  return rows


def _reevaluate(workdir: str) -> None:
  """Sets finished results aside so ``collect_rows`` scores every best checkpoint again.

  A finished run resumes at its last step with nothing left to train, restores its best
  checkpoint and writes a fresh ``result.json``.
  """
  root = os.path.join(workdir, 'retrain')
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    path = os.path.join(root, name, 'result.json')
    if os.path.exists(path):
      os.replace(path, path + '.previous')
