"""One experiment in one work directory: every method's search, its slim models, the summary.

``run(config, workdir)`` is what ``python -m pep_jax.main`` calls. For each method named in
``config.methods`` (:mod:`pep_jax.methods`) it runs the search, then trains every candidate the
search proposes with :func:`pep_jax.train.fit.train_to_best`, and writes one summary row per
candidate. Every step is resumable and skipped once finished, so the same command started again
after a crash carries on where the last checkpoint left off. A work directory belongs to one
config: running another config into it (other than the keys in
``pep_jax.config.RESUMABLE_KEYS`` and the methods' own resumable keys) is refused, so results
from different settings never mix. The driver reaches every method through its
:class:`pep_jax.methods.base.Method` and never tests a method's name.

With several seeds (``config.seeds``) each seed is that whole experiment, searches included,
in its own work directory (:func:`pep_jax.workdir.seed_dir`) with ``config.seed`` that seed, so
initial values, data order, dropout and every search come from it while the data and its
split (``data.*``) are the same for all: every seed is scored on the same test rows. A seed
that finished is read back, not trained again. The work directory's own summary then covers
every seed (:mod:`pep_jax.report`).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import time

import jax
import numpy as np

from pep_jax import config as config_lib
from pep_jax import methods as methods_lib
from pep_jax import report
from pep_jax import workdir as wd
from pep_jax.data import load_dataset
from pep_jax.data.base import CTRDataset
from pep_jax.errors import ConfigError, ExistsError
from pep_jax.methods import pep as pep_lib
from pep_jax.methods import ue as ue_lib
from pep_jax.methods.base import Candidate, Context, fit_candidate
from pep_jax.train import logging as logging_lib
from pep_jax.train.logging import MetricWriter


def check_workdir(config, workdir: str) -> None:
  """Records the config in ``workdir/config.json``, or refuses a different one.

  In an experiment with several seeds, ``seeds`` may grow (the new seeds run, the others are
  read back) and ``seed`` is unused; a work directory of one seed's experiment never becomes one
  of several, nor the other way round.

  Raises:
    ConfigError: naming the keys that differ, or ``seeds`` for another layout.
  """
  keys = config_lib.RESUMABLE_KEYS + methods_lib.resumable_keys()
  several = len(config_lib.seed_list(config)) > 1
  saved = wd.recorded_config(workdir)
  if saved is not None and (len(saved.get('seeds') or ()) > 1) != several:
    if several:
      raise ConfigError(f'config key seeds: {workdir} holds the experiment of one seed '
                        f'({saved.get("seed")}); several seeds need a new --workdir')
    raise ConfigError(f'config key seeds: {workdir} holds an experiment with seeds '
                      f'{saved["seeds"]}; give them again to resume it, or one seed\'s work '
                      f'directory ({wd.seed_dir(workdir, saved["seeds"][0])}) to resume that '
                      'seed alone')
  wd.check_config(config, workdir, keys + (('seed', 'seeds') if several else ()))


def check_methods(config) -> list:
  """The configured methods; refuses one that cannot train as ``optimizer.updates`` asks."""
  methods = [methods_lib.get(name) for name in config.methods]
  if config.optimizer.updates == 'rows':
    others = [m.name for m in methods if not m.rows_mode]
    if others:
      supported = tuple(m.name for m in methods_lib.METHODS.values() if m.rows_mode)
      raise ConfigError(f"config key optimizer.updates: 'rows' updates the shared table of "
                        f'methods {supported}; config.methods also has {others} (use '
                        "optimizer.updates='dense' for them)")
  return methods


def summary_row(ctx: Context, cand: Candidate, result: dict) -> dict:
  """One row of ``summary.json``: the candidate's setting, stored size and metrics."""
  row = {'method': cand.label, 'setting': cand.setting, 'run': cand.run, 'budget': None,
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
  """Runs ``config.stage`` of every method in ``config.methods``, once per seed; returns the
  summary rows.

  ``all`` searches and trains every candidate of each method in turn; ``search`` (or its older
  name ``prune``) only searches; ``retrain`` trains the candidates of finished searches;
  ``evaluate`` scores every finished run's best checkpoint again. The summary collects every
  finished run: with one seed as it always has, with several one row per run and seed (its
  ``seed`` added).
  """
  config_lib.validate(config)
  seeds = config_lib.seed_list(config)
  if len(seeds) == 1:
    config = config_lib.for_seed(config, seeds[0])
  modules = check_methods(config)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ExistsError(f'--workdir={workdir} is a file; a work directory is a folder')
  data = load_dataset(config.data)
  for method in modules:  # before the work directory records this config
    method.check(Context(config, data, workdir, None))
  os.makedirs(workdir, exist_ok=True)
  check_workdir(config, workdir)
  if len(seeds) == 1:
    return summarise(config, workdir, data, {seeds[0]: run_seed(config, workdir, data)},
                     {seeds[0]: workdir})
  per_seed, dirs = {}, {}
  for seed in seeds:
    seed_config, dirs[seed] = config_lib.for_seed(config, seed), wd.seed_dir(workdir, seed)
    os.makedirs(dirs[seed], exist_ok=True)
    check_workdir(seed_config, dirs[seed])
    per_seed[seed] = run_seed(seed_config, dirs[seed], data)
    summarise(seed_config, dirs[seed], data, {seed: per_seed[seed]}, {seed: dirs[seed]},
              one_of_several=True)
  return summarise(config, workdir, data, per_seed, dirs)


def run_seed(config, workdir: str, data: CTRDataset) -> list[dict]:
  """One seed's experiment (``config.seed``) in ``workdir``: its summary rows, models only."""
  writer = MetricWriter(workdir)
  ctx = Context(config, data, workdir, writer)
  stage = config.stage
  if stage == 'evaluate':
    wd.set_aside_results(workdir)
  search = stage in ('all', 'search', 'prune')

  def plan(method) -> list:
    """The method's search, then its candidates to train (or read back, when finished)."""
    if search:
      method.search(ctx)
    cands = method.candidates(ctx)
    return [cand for cand in cands
            if stage in ('all', 'retrain', 'evaluate') or wd.result(workdir, cand.run) is not None]

  rows = []
  try:
    workers = parallel_runs(config)
    if workers == 1:
      for method in check_methods(config):
        rows += [summary_row(ctx, c, fit_candidate(ctx, method, c)) for c in plan(method)]
    else:
      rows = _run_parallel(ctx, list(config.methods), plan, workers)
  finally:
    writer.close()
  return rows


def summarise(config, workdir: str, data: CTRDataset, per_seed: dict[int, list[dict]],
              dirs: dict[int, str], one_of_several: bool = False) -> list[dict]:
  """Writes the summary of ``workdir`` (:func:`pep_jax.report.write_summary`) from every seed's
  rows (``dirs``: each seed's work directory, where its runs' test predictions are); returns
  ``summary.json``'s rows: with one seed the rows as they are, with several each with its
  ``seed``; the teacher's ceiling last. ``one_of_several``: the title names the seed."""
  several = len(per_seed) > 1
  rows = [{'seed': seed, **row} if several else row
          for seed, seed_rows in per_seed.items() for row in seed_rows]
  rows += [{'seed': None, **row} if several else row for row in teacher_row(data)]
  if jax.process_index() != 0 or not rows:
    return rows
  table_entries = data.num_features * int(config.embedding.dim)
  reference = ue_lib.candidate(int(config.embedding.dim)).run
  comparison = report.comparison_rows(per_seed, reference, table_entries)
  pairs = report.headline_pairs(comparison, reference, pep_lib.NAME)
  tests = report.significance(
      pairs, np.asarray(data.test.labels), lambda seed, run: wd.read_test_probs(dirs[seed], run),
      int(config.compare.bootstrap_resamples), int(config.compare.bootstrap_seed))
  title = f'{config.data.name} / {config.model.name} / d={config.embedding.dim}'
  if several or one_of_several:
    title += f' / seed{"s" if several else ""} {", ".join(str(s) for s in per_seed)}'
  coverage = report.band_coverage(comparison, config.compare.bands, table_entries,
                                  methods_lib.floors(config, data.field_dims))
  print(report.write_summary(rows, comparison, tests, workdir, title, data, coverage))
  paths = wd.summary_paths(workdir)
  print(f'per-field sizes and the plot: {paths["md"]}, {paths["plot"]}')
  return rows


def parallel_runs(config) -> int:
  """How many runs train at once (``train.parallel_runs``; 0: one per CPU core on a
  one-process CPU run, else one).

  XLA:CPU runs a training step on about one core, and one device runs one program at a time,
  so independent runs (every method's candidates, and one method's search beside other
  methods' runs) train in separate processes to use the other cores. A run's results do not
  depend on what trains beside it.
  """
  if int(config.train.parallel_runs) > 0:
    return int(config.train.parallel_runs)
  cpu = jax.process_count() == 1 and jax.default_backend() == 'cpu'
  return max(1, os.cpu_count() or 1) if cpu else 1


_WORKER: dict = {}  # the worker process's experiment (see _start_worker)


def _exit_with(parent: int, every: float = 0.2) -> None:
  """Ends this worker process soon after process ``parent`` ends (e.g. when it is killed).

  A watch on the parent's pid rather than ``PR_SET_PDEATHSIG``: that signal follows the
  *thread* that started the worker, and the pool starts a worker from whichever thread submits
  when none is idle (a search's thread, which ends long before the pool does), so the worker
  was killed mid-task and the pool hung on its queue's lock at shutdown.
  """

  def watch():
    while os.getppid() == parent:
      time.sleep(every)
    os._exit(1)

  threading.Thread(target=watch, name='pep_jax-parent-watch', daemon=True).start()


def _start_worker(config, data: CTRDataset, workdir: str, progress_queue, parent: int) -> None:
  """Initialises a worker process with the parent's data (sent, not read or generated again);
  its progress bars are drawn by the parent, each run on a line of its own."""
  _exit_with(parent)  # die with the parent, e.g. when it is killed
  # The searches in the parent are what later runs wait for: they go first for the cores.
  os.nice(10)
  _WORKER.update(config=config, data=data, workdir=workdir)
  logging_lib.connect(progress_queue)


def _fit_in_worker(method: str, cand: Candidate) -> dict:
  # One writer per run, closed before the result returns.
  writer = MetricWriter(_WORKER['workdir'], name=cand.run)
  try:
    ctx = Context(_WORKER['config'], _WORKER['data'], _WORKER['workdir'], writer)
    return fit_candidate(ctx, methods_lib.get(method), cand)
  finally:
    writer.close()


def _run_parallel(ctx: Context, names: list[str], plan, workers: int) -> list[dict]:
  """Every method's search in a thread of its own, and every candidate in a pool of
  ``workers`` processes as soon as its method proposes it; rows in ``config.methods`` order."""
  spawn = multiprocessing.get_context('spawn')  # JAX is not fork-safe
  progress = spawn.Queue()  # the workers' progress bars, drawn here
  drawing = logging_lib.serve(progress)
  fits = concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=spawn, initializer=_start_worker,
      initargs=(ctx.config, ctx.data, ctx.workdir, progress, os.getpid()))
  for _ in range(workers):  # start them now, so they are ready when the first run comes
    fits.submit(os.getpid)
  drivers = concurrent.futures.ThreadPoolExecutor(len(names), 'pep_jax-search')

  def drive(name: str) -> list:
    return [(c, fits.submit(_fit_in_worker, name, c)) for c in plan(methods_lib.get(name))]

  try:
    plans = [drivers.submit(drive, name) for name in names]
    return [summary_row(ctx, cand, future.result())
            for p in plans for cand, future in p.result()]
  except BaseException:
    fits.shutdown(cancel_futures=True)  # runs already training finish; nothing else starts
    drivers.shutdown(cancel_futures=True)
    raise
  finally:
    drivers.shutdown()
    fits.shutdown()
    progress.put(None)
    drawing.join()
