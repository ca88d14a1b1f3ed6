"""The paper's analyses as functions: what ``experiments/*.py`` compute, importable and tested.

Each analysis script is thin (flags, runs, outputs); the numbers come from here:

* runs of config variants, each in its own sub-work-directory (:func:`run_variant`), so a
  script started again reuses every finished run;
* the pruned model scored as it is at a ticket's step (:func:`score_pruned_ticket`), and the
  effective table of a finished run's best checkpoint (:func:`best_effective_table`);
* feature frequencies, frequency groups and the sparsity of each group
  (:func:`feature_counts`, :func:`frequency_groups`, :func:`group_sparsity`);
* field-interaction matrices, the paper's Figure 5 (:func:`interaction_matrix`);
* the non-zero count over steps from ``metrics.jsonl`` (:func:`prune_curve`);
* seconds per epoch of a stage's train step (:func:`seconds_per_epoch`);
* tables as markdown and CSV, and the machine they were measured on.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time

import jax
import ml_collections
import numpy as np

from pep_jax import experiment
from pep_jax import workdir as wd
from pep_jax.data import pipeline
from pep_jax.data.base import CTRDataset, Split
from pep_jax.errors import MissingError
from pep_jax.layers.embedding import field_offsets
from pep_jax.methods.base import feature_counts, resolve_budgets  # noqa: F401  (re-exported)
from pep_jax.methods.runs import load_run
from pep_jax.train import batches, evaluation
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.setup import build_stage, write_json  # noqa: F401  (re-exported)

# ----------------------------------------------------------------------------------- runs


def variant(config, **overrides) -> ml_collections.ConfigDict:
  """A copy of ``config`` with dotted-key overrides (``variant(c, **{'embedding.dim': 8})``).

  Raises:
    KeyError: naming the key, when an override names no existing key.
  """
  out = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    node, *path = out, *key.split('.')
    for part in path[:-1]:
      node = node[part]
    if path[-1] not in node:
      raise KeyError(f'config key {key} does not exist')
    node[path[-1]] = value
  return out


def prune_result(workdir: str) -> dict | None:
  """The prune stage's result in a work directory, or None before it finished."""
  return wd.search_result(workdir, *wd.PRUNE)


def run_variant(config, workdir: str, *, retrain: bool = True, uniform: bool = False) -> dict:
  """Prunes, then (when a budget was reached and ``retrain``) retrains every ticket.

  Every finished stage of ``workdir`` is reused. The uniform baselines ``ue.dims`` are trained
  too only with ``uniform`` (variants of one config share them: see :func:`run_uniform`).

  Returns:
    ``{'prune': prune result, 'rows': summary rows}`` (``rows`` empty when nothing was
    retrained).
  """
  if not uniform:
    config = variant(config, **{'ue.dims': ()})
  experiment.run(variant(config, stage='search'), workdir)
  result = prune_result(workdir)
  rows = []
  if retrain and result['reached']:
    rows = experiment.run(variant(config, stage='all'), workdir)
  return {'prune': result, 'rows': rows}


def run_uniform(config, workdir: str, dims) -> list[dict]:
  """Uniform-embedding baselines at widths ``dims`` in their own work directory."""
  rows = experiment.run(variant(config, stage='all', methods=('ue',),
                                **{'ue.dims': tuple(dims)}), workdir)
  return [r for r in rows if r['method'] == 'ue']


def run_random_reinit(config, workdir: str) -> list[dict]:
  """Retrains every ticket of ``workdir`` from a random table times its mask; all summary rows.

  The rows hold both the rewound (``'pep'``) and the re-initialised (``'pep_random'``) tickets.
  """
  return experiment.run(variant(config, stage='retrain', **{'retrain.init': 'random'}), workdir)


def score_pruned_ticket(config, data: CTRDataset, workdir: str, ticket: dict) -> dict:
  """The pruning model at a ticket's step, scored as it is (no retraining).

  Reads the state the prune stage saves beside each ticket (``tickets/b<budget>/state``).

  Returns:
    ``{'budget', 'nonzeros', 'valid_auc', 'test_auc', 'test_logloss'}``.

  Raises:
    FileNotFoundError: naming the folder, for tickets written before states were saved.
  """
  directory = wd.ticket_state_dir(workdir, ticket['budget'])
  if not os.path.isdir(directory):
    raise MissingError(f'{directory} is missing: this ticket was written without the pruned '
                            'state; prune again in a new work directory to score it as it is')
  stage = build_stage(config, data, 'pep')
  ckpt = Checkpointer(directory, max_to_keep=None)
  state, _ = ckpt.restore(ticket['step'], stage.abstract_state())
  ckpt.close()
  valid = evaluation.evaluate(stage, state, {}, data.valid)
  test = evaluation.evaluate(stage, state, {}, data.test)
  return {'budget': ticket['budget'], 'nonzeros': int(stage.embedding_call(state, 'nonzeros')),
          'valid_auc': valid['auc'], 'test_auc': test['auc'], 'test_logloss': test['logloss']}


def best_effective_table(config, data: CTRDataset, workdir: str, run: str) -> np.ndarray:
  """The table as the model sees it, ``[features, D]``, at a finished run's best checkpoint.

  Args:
    run: a finished run of ``workdir`` whose layer has an ``effective_table`` (a uniform
      baseline ``ue_d<dim>``, a ticket ``pep_b<budget>`` whose table is multiplied by its mask,
      an SSEDS model with ``align='pad'``).
  """
  del config  # the work directory's own
  if wd.result(workdir, run) is None:
    raise MissingError(f'run {run} of {workdir} has not finished: run that experiment first')
  loaded = load_run(workdir, run, data)
  if not hasattr(loaded.stage.embedding, 'effective_table'):
    raise ValueError(f'run {run!r}: its embedding layer has no single table to read')
  table = loaded.stage.embedding_call(loaded.state, 'effective_table', loaded.constants)
  return np.asarray(table)[:data.num_features]


# ---------------------------------------------------------------------- frequency and size


def frequency_groups(counts: np.ndarray, num_groups: int) -> np.ndarray:
  """Group of each feature ``[N]``: features ranked by count, cut into equal-size groups.

  Group 0 holds the rarest features, ``num_groups - 1`` the most frequent; ties in count are
  broken by index so that the groups are equal in size (within one feature).
  """
  order = np.argsort(counts, kind='stable')  # rarest first
  groups = np.empty(len(counts), np.int64)
  groups[order] = np.arange(len(counts)) * num_groups // len(counts)
  return groups


def group_sparsity(sizes: np.ndarray, groups: np.ndarray, num_groups: int,
                   dim: int) -> np.ndarray:
  """Fraction of zero entries of each group ``[G]``, from per-feature sizes ``[N]`` of ``dim``."""
  kept = np.bincount(groups, weights=sizes, minlength=num_groups)
  total = np.bincount(groups, minlength=num_groups) * dim
  return 1.0 - kept / np.maximum(total, 1)


def field_mean_sizes(sizes: np.ndarray, field_dims) -> np.ndarray:
  """Mean size of each field's features ``[F]`` from per-feature sizes ``[N]``."""
  fields = np.repeat(np.arange(len(field_dims)), field_dims)
  return np.bincount(fields, weights=sizes, minlength=len(field_dims)) / np.asarray(field_dims)


def size_snapshots(config, data: CTRDataset, every_steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature embedding sizes while pruning, every ``every_steps`` steps.

  Drives a 'pep' stage's ``train_step`` as the prune stage does (same batches, same seed) until
  the non-zero count is at or under the smallest of ``prune.budgets`` or ``prune.max_epochs``
  ends (that last step is a snapshot too); nothing is checkpointed.

  Returns:
    ``steps [T]`` (the first is 0, the initial table) and ``sizes [T, N]`` (int16), the
    non-zero entries of each feature's row at those steps.
  """
  stage = build_stage(config, data, 'pep')
  target = min(resolve_budgets(config.prune.budgets, stage.table_entries, 'prune.budgets'))
  state = stage.initial_state()

  def sizes_now():
    mask = np.asarray(stage.embedding_call(state, 'mask'))[:data.num_features]  # [N, D]
    return mask.sum(axis=1).astype(np.int16)

  steps, sizes = [0], [sizes_now()]
  stream = batches.resumable_batches(data.train, config.train.batch_size, seed=config.seed,
                                     start_step=0, max_epochs=config.prune.max_epochs,
                                     sharding=stage.batch_sharding)
  step = 0
  for step, _, batch in stream:
    state, metrics = stage.train_step(state, batch, {})
    done = int(metrics['nonzeros']) <= target
    if step % every_steps == 0 or done:
      steps.append(step)
      sizes.append(sizes_now())
    if done:
      break
  if steps[-1] != step:  # the last step of prune.max_epochs
    steps.append(step)
    sizes.append(sizes_now())
  return np.asarray(steps), np.stack(sizes)


# ------------------------------------------------------------------ field interactions


def interaction_matrix(table: np.ndarray, ids: np.ndarray, field_dims,
                       chunk: int = 4096) -> np.ndarray:
  """Mean absolute interaction of every field pair over data rows (the paper's Figure 5).

      M[i, j] = mean_r |<e_i(r), e_j(r)>|,   e_f(r) = table[offset_f + ids[r, f]]

  Args:
    table: the effective embedding table ``[N, D]`` (pruned entries 0).
    ids: per-field local indices ``[R, F]`` of the rows to average over.
    field_dims: vocabulary size of each field ``[F]``.
    chunk: rows per block (memory ``chunk * F * F``).

  Returns:
    ``[F, F]`` float64, symmetric; the diagonal holds the mean squared norm of each field.
  """
  table = np.asarray(table, np.float64)
  gids = np.asarray(ids, np.int64) + field_offsets(field_dims)[None, :].astype(np.int64)
  total = np.zeros((gids.shape[1], gids.shape[1]))
  for start in range(0, len(gids), chunk):
    emb = table[gids[start:start + chunk]]  # [r, F, D]
    total += np.abs(np.einsum('rfd,rgd->rfg', emb, emb)).sum(0)  # [F, F]
  return total / max(len(gids), 1)


# ----------------------------------------------------------------- curves and runtimes


def read_metrics(workdir: str, stage: str, key: str) -> tuple[np.ndarray, np.ndarray]:
  """``(steps, values)`` of ``key`` logged by ``stage`` in ``workdir/metrics.jsonl``.

  A step logged twice (a resumed run replays a few steps) keeps its last value.
  """
  path = wd.metrics_path(workdir)
  points = {}
  if os.path.exists(path):
    with open(path) as f:
      for number, line in enumerate(f, 1):
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f'{path} line {number} is not valid JSON ({e})') from e
        if row.get('stage') == stage and key in row:
          points[int(row['step'])] = float(row[key])
  steps = np.asarray(sorted(points), np.int64)
  return steps, np.asarray([points[s] for s in steps.tolist()], np.float64)


def prune_curve(workdir: str) -> tuple[np.ndarray, np.ndarray]:
  """Non-zero count of the table against steps while pruning (from ``metrics.jsonl``)."""
  return read_metrics(workdir, 'prune', 'nonzeros')


def first_step_at_or_under(steps: np.ndarray, counts: np.ndarray, target: float) -> int | None:
  """The first logged step whose count is at or under ``target``; None if none is."""
  hit = np.flatnonzero(np.asarray(counts) <= target)
  return int(np.asarray(steps)[hit[0]]) if len(hit) else None


def seconds_per_epoch(stage, state, constants: dict, split: Split, batch_size: int, *,
                      max_steps: int = 0, seed: int = 0) -> dict:
  """Times a stage's train step over one epoch of ``split`` (compilation excluded).

  The first batch compiles the step and is not timed. With ``max_steps > 0`` only that many
  steps are timed and the epoch's time is extrapolated from their mean.

  Returns:
    ``{'seconds_per_epoch', 'ms_per_step', 'steps_timed', 'steps_per_epoch'}``.
  """
  per_epoch = pipeline.num_batches(len(split), batch_size)
  timed = per_epoch if max_steps <= 0 else min(max_steps, per_epoch)
  it = batches.resumable_batches(split, batch_size, seed=seed, start_step=0, max_epochs=2,
                                 sharding=stage.batch_sharding)
  _, _, batch = next(it)
  state, metrics = stage.train_step(state, batch, constants)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(timed):
    _, _, batch = next(it)
    state, metrics = stage.train_step(state, batch, constants)
    if 'nonzeros' in metrics:
      int(metrics['nonzeros'])  # the prune loop reads the count every step
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - start
  return {'seconds_per_epoch': seconds / timed * per_epoch, 'ms_per_step': 1e3 * seconds / timed,
          'steps_timed': timed, 'steps_per_epoch': per_epoch}


# ---------------------------------------------------------------------------- outputs


def machine() -> dict:
  """What the figures were measured on, with the load average of the last minute."""
  return {'platform': platform.platform(), 'processor': platform.processor(),
          'cpus': os.cpu_count(), 'device': jax.devices()[0].device_kind,
          'devices': jax.device_count(), 'jax': jax.__version__,
          'load_average_1min': os.getloadavg()[0]}


def machine_line() -> str:
  """CPU count, model and memory, in one line: the machine the numbers come from."""
  model = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      model = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  mem = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
  return f'{os.cpu_count()} CPUs ({model}), {mem:.0f} GiB RAM'


def conditions(load_before: tuple[float, float, float]) -> dict:
  """When a measurement ended and how busy the machine was around it.

  Args:
    load_before: ``os.getloadavg()`` taken when the measurement started.

  Returns:
    ``{'date', 'load_average_before', 'load_average_after'}``: the UTC date and time, and the
    1, 5 and 15 minute load averages before and after.
  """
  return {'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
          'load_average_before': [round(x, 2) for x in load_before],
          'load_average_after': [round(x, 2) for x in os.getloadavg()]}


def describe_data(data: CTRDataset) -> dict:
  """The size of a dataset, as the pages that quote a result state it."""
  intrinsic = data.info.get('intrinsic_dims')
  return {'name': data.name, 'fields': int(data.num_fields),
          'features': int(sum(data.field_dims)),
          'rows': len(data.train) + len(data.valid) + len(data.test),
          'train_rows': len(data.train), 'test_rows': len(data.test),
          'noise_fields': None if intrinsic is None else [f for f, k in enumerate(intrinsic)
                                                          if k == 0]}


def write_results(path: str, results: dict) -> None:
  """Writes ``results`` as JSON, with the command line that made them and the machine.

  The pages of ``docs/`` quote such a file through ``experiments/readme_results.py``.
  """
  command = ' '.join(['python', os.path.relpath(sys.argv[0])] + sys.argv[1:])
  write_json(os.path.abspath(path), {'command': command, 'machine': machine(), **results})


def _cell(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return f'{value:.4f}' if abs(value) < 100 else f'{value:,.1f}'
  return str(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(_cell(r.get(c)) for c in columns) + ' |' for r in rows]
  return '\n'.join(lines)


def write_tables(rows: list[dict], columns: list[str], workdir: str, name: str,
                 title: str, notes: str = '') -> str:
  """Writes ``<name>.md`` (title, table, notes) and ``<name>.csv``; returns the markdown table."""
  table = markdown_table(rows, columns)
  with open(os.path.join(workdir, f'{name}.md'), 'w') as f:
    f.write(f'# {title}\n\n{table}\n' + (f'\n{notes}\n' if notes else ''))
  with open(os.path.join(workdir, f'{name}.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
  return table


def pyplot():
  """matplotlib's pyplot on the file-only backend."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt
