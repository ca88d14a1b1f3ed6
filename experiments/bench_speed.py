"""Samples/s of the train step, the whole training loop, evaluation and the demo, in one run.

    python experiments/bench_speed.py                                   # default grid
    python experiments/bench_speed.py --shapes=criteo --models=fm --modes=dense --json=fm.json
    python experiments/bench_speed.py --full                            # every combination
    python experiments/bench_speed.py --parts=demo --demo               # the demo's wall time
    python experiments/bench_speed.py --parts=methods --models=fm --modes=dense  # every method

Every row runs on fake data shaped like a real table (:data:`SHAPES`): ``small`` is
MovieLens-sized (7 fields, 1,280 features, d=32), ``criteo`` has Criteo's size as the paper
prepares it (39 fields, 1,086,810 features) at the public scripts' width d=24. Batch 1024 and
the faithful optimizer (:mod:`pep_jax.train.optim`). Methods: UE (the ``plain`` stage, uniform
embeddings) and PEP's prune stage (``pep``: thresholded table, non-zeros counted every step) at
each granularity of ``--granularities``; ``--methods=ue,pep,retrain`` adds the retraining of a
ticket (the ``masked`` stage, with a mask keeping every entry). Optimizer modes ``--modes``
(``dense`` or ``rows``: ``optimizer.updates``).

Parts (``--parts``), each timed over ``--steps`` steps per row (small 100, criteo 20):

* ``step``: the isolated train step on pre-built device batches, timed after compilation. At
  K=1 ``train_step`` is called in a Python loop (a stage that counts non-zeros has them read
  back every step, as a one-step prune loop does); at K=``--per-dispatch`` ``train_block`` runs
  a pre-placed slab of the same K batches per call (a single call of ``--steps`` slots when
  ``--steps`` < K). Every (shape, mode, model, method, granularity) of the flags.
* ``loop``: :func:`pep_jax.train.fit.train_steps`, the loop a search runs (batches built and
  placed in a background thread, metrics read back, budget checked, logs written), at K=1 and
  K=``--per-dispatch``; the steady rate excludes its first call (K steps), then whole calls
  are timed. PEP never reaches its budget (``halt_at`` is -1); the run stops before an epoch
  ends, so no checkpoint is written inside the timed steps. For ``--loop-models`` (FM) and
  PEP at ``--loop-granularities`` (``feature_dimension``); everything with ``--full``.
* ``eval``: :func:`pep_jax.train.evaluation.predict` over ``--eval-rows`` rows (host batches
  included) after a warm-up, for every model, UE and PEP at ``--loop-granularities``
  (everything with ``--full``), in the first mode only.
* ``methods``: the block train step (K=``--per-dispatch``) of every method of the registry
  (:data:`pep_jax.methods.METHODS`) at representative settings (:data:`SETTINGS`), each against
  the uniform model at the same base width in the same run: the stage a method's candidates
  retrain (``build``/``initial``) and, where it has one, its search's stage (``search_stage``).
  A method whose candidates come from a search gets a stand-in search result written to a
  scratch work directory (:data:`STAND_INS`: masks, tickets or widths as a search would give),
  so its real ``candidates``/``build``/``initial`` run. Printed and written as ``method`` rows
  and ``method/ue step time`` ratios, with the targets of :data:`METHOD_TARGETS`. The model is
  the first of ``--models``, the mode the first of ``--modes``. Each row is the fastest of
  ``--repeats`` timings of ``--steps`` steps (compiled before the first), taken in rounds over
  every stage of the shape, so the stages are held in memory together.
* ``demo`` (with ``--demo``): ``python -m pep_jax.main --config=configs/demo.py`` in a
  subprocess, wall time; ``--demo-variant=tiny`` runs the small variant.

Bytes moved per step (dense mode only), a model of the memory traffic of a step whose table is
far larger than a batch (the Criteo-sized case; on the small table the batch dominates and the
figure means little): every array leaf of the state is counted (a retraining ticket's mask, a
constant, is not), in bytes ``n`` of that leaf:

    parameter leaf:        4n   the gradient written whole (the lookup's transpose writes a
                                dense gradient) and read by the update; the parameter read and
                                written
                         + 1n   the gradient read once more for its norm (clip_norm > 0)
    optimizer-state leaf:  2n   read and written (Adam's m and v: 4n per parameter byte)
    batch-statistics leaf: 2n   read and written
    counted non-zeros:     1n   of each embedding parameter (table, thresholds), read to count

so a dense Adam step with clipping moves 9 bytes per byte of parameters, and PEP adds one more
read of its table and thresholds. Achieved GB/s is that estimate over the measured step time; the
traffic-implied PEP/UE ratio (bytes of PEP over bytes of UE) is printed beside the measured one.

Ratios, all from the same run: PEP/UE step time per granularity (targets: at most 1.1x a UE step
with ``dimension`` thresholds, at most 1.1x the traffic-implied ratio with ``feature_dimension``
ones), loop/isolated step samples/s (target >= 0.9), K>1 over K=1 and rows over dense.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from pep_jax import workdir as wd
from pep_jax.config import default_config
from pep_jax.data import pipeline
from pep_jax.data.base import CTRDataset, Split
from pep_jax.layers.embedding import field_offsets
from pep_jax.methods import METHODS, dartsemb, magnitude, pep, random, sseds
from pep_jax.methods.base import Context, resolve_budgets
from pep_jax.train import batches as batches_lib
from pep_jax.train import evaluation, fit
from pep_jax.train import steps as steps_lib
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.logging import MetricWriter
from pep_jax.train.setup import Stage, build_stage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 13 integer fields (small vocabularies after the log rule) and 26 categorical ones.
CRITEO_SHAPED = (
    [40, 90, 80, 50, 200, 110, 80, 70, 100, 10, 30, 60, 70] +
    [1400, 550, 200000, 180000, 290, 22, 11000, 600, 3, 40000, 5000, 190000, 3100, 26, 11000,
     220000, 10, 4000, 2000, 4, 150000, 15, 15, 40000, 70, 26715])
# MovieLens-sized: 7 fields, 1,280 features (the public code's small benchmark).
SMALL = [278, 2, 7, 21, 800, 81, 91]


@dataclasses.dataclass(frozen=True)
class Shape:
  """A table to benchmark: vocabulary of each field, width, and timed steps per row."""

  field_dims: tuple[int, ...]
  dim: int
  steps: int


SHAPES = {'small': Shape(tuple(SMALL), 32, 100), 'criteo': Shape(tuple(CRITEO_SHAPED), 24, 20)}
# method -> build_stage kind; retrain (a PEP ticket's retraining, full mask) only when asked
KINDS = {'ue': 'plain', 'pep': 'pep', 'retrain': 'masked'}
MODES = ('dense', 'rows')


@dataclasses.dataclass(frozen=True)
class Case:
  """One trained configuration: a method at a granularity, on a shape, model and mode."""

  shape: str
  model: str
  method: str  # a key of KINDS
  granularity: str | None  # PEP's thresholds; None for the other methods
  mode: str  # optimizer.updates: 'dense' | 'rows'

  @property
  def label(self) -> str:
    return self.method if self.granularity is None else f'{self.method}:{self.granularity}'

  def key(self) -> dict:
    return {'shape': self.shape, 'model': self.model, 'method': self.method,
            'granularity': self.granularity, 'mode': self.mode}


def fake_data(field_dims, rows: int, eval_rows: int, seed: int = 0) -> CTRDataset:
  """Zipf-distributed ids (as real CTR features are) and 25% clicks; ``eval_rows`` for eval."""
  rng = np.random.default_rng(seed)

  def split(n: int) -> Split:
    ids = np.stack([np.minimum(rng.zipf(1.2, n) - 1, d - 1) for d in field_dims], 1)
    return Split(ids.astype(np.int32), (rng.random(n) < 0.25).astype(np.float32))

  held_out = split(eval_rows)
  names = tuple(f'f{i}' for i in range(len(field_dims)))
  return CTRDataset('bench', names, np.asarray(field_dims), split(rows), held_out, held_out)


def case_config(case: Case, args: argparse.Namespace, per_dispatch: int):
  """The default config with the case's model, width, thresholds and optimizer mode."""
  c = default_config()
  c.model.name = case.model
  c.embedding.dim = SHAPES[case.shape].dim
  if case.granularity is not None:
    c.embedding.granularity = case.granularity
  if case.mode != 'dense':
    c.optimizer.updates = case.mode
  c.train.batch_size = args.batch_size
  c.train.eval_batch_size = args.eval_batch_size
  c.train.steps_per_dispatch = per_dispatch
  return c


def machine() -> dict:
  """What the numbers were measured on."""
  device = jax.devices()[0]
  try:
    jaxlib = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    jaxlib = None
  return {'platform': platform.platform(), 'processor': platform.processor() or platform.machine(),
          'cpu_count': os.cpu_count(), 'python': platform.python_version(),
          'jax': jax.__version__, 'jaxlib': jaxlib, 'device_platform': device.platform,
          'device_kind': device.device_kind, 'device_count': jax.device_count(),
          'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds')}


# --- bytes moved per step ----------------------------------------------------------------------


def dense_step_bytes(stage: Stage, state: steps_lib.TrainState, counts_nonzeros: bool) -> int:
  """The memory traffic of one dense step, in bytes (the model in this module's docstring)."""
  def nbytes(tree) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree))

  params = nbytes(state.params)
  grad_passes = 5 if stage.config.optimizer.clip_norm > 0 else 4
  total = grad_passes * params + 2 * nbytes(state.opt_state) + 2 * nbytes(state.batch_stats)
  if counts_nonzeros:
    total += nbytes(state.params['embedding'])  # the table and its thresholds, read to count
  return total


# --- the parts ---------------------------------------------------------------------------------


def copy(state: steps_lib.TrainState) -> steps_lib.TrainState:
  """A copy of ``state`` (in place on its devices) that a donating step may consume."""
  return jax.tree.map(jnp.copy, state)


def ticket_constants(stage: Stage, state: steps_lib.TrainState) -> dict:
  """A retraining stage's constants: a ticket keeping every entry, split like the table."""
  mask = jnp.ones(state.params['embedding']['table'].shape, bool)
  return {'ticket': {'embedding': {'mask': jax.device_put(mask, stage.row_sharding)}}}


def device_batches(stage: Stage, data: CTRDataset, count: int) -> list[dict]:
  """The first ``count`` training batches (as the loop orders them), placed on the mesh."""
  it = pipeline.batches(data.train, stage.config.train.batch_size, shuffle=True, seed=0)
  batches = [next(it) for _ in range(count)]
  return [jax.device_put(b, stage.batch_sharding) for b in batches]


def steps_of(stage: Stage, batches: list[dict]):
  """The compiled steps the training loop would run on ``batches``.

  In the rows mode that is the program sized for the most distinct rows a batch looks up
  (:meth:`Stage.steps_for`); every other stage has one program.
  """
  if stage.capacity_steps is None:
    return stage.steps
  offsets = field_offsets(stage.embedding.field_dims)
  return stage.steps_for(batches_lib.most_distinct_rows(batches, offsets))


def time_one_step(stage: Stage, state, constants: dict, batches: list[dict], steps: int):
  """Seconds per ``train_step`` called once per step, cycling over ``batches``.

  Returns ``(state, seconds, metrics)``.

  A step that returns ``nonzeros`` has it read back every step (a one-step prune loop does).
  """
  train_step = steps_of(stage, batches).train_step
  state, metrics = train_step(state, batches[0], constants)  # compiles
  jax.block_until_ready(metrics)
  read_back = 'nonzeros' in metrics
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = train_step(state, batches[(i + 1) % len(batches)], constants)
    if read_back:
      int(metrics['nonzeros'])
  jax.block_until_ready((state, metrics))
  return state, (time.perf_counter() - start) / steps, metrics


def time_block(stage: Stage, state, constants: dict, batches: list[dict], steps: int):
  """Seconds per step of ``train_block`` over a pre-placed slab of the K batches.

  After a call that compiles (one step), ``steps`` steps are timed in calls of K steps (the
  last call, or the only one when ``steps < K``, runs the remaining slots only). Returns
  ``(state, seconds, steps_per_call)``.
  """
  size = len(batches)
  stacked = {k: np.stack([np.asarray(b[k]) for b in batches]) for k in batches[0]}
  slab = jax.device_put(stacked, steps_lib.slab_sharding(stage.batch_sharding))
  train_block = steps_of(stage, batches).train_block
  state, _, done = train_block(state, slab, constants, 0, 1, -1)  # compiles
  assert int(done) == 1, 'the warm-up block did not run its step'
  start, left = time.perf_counter(), steps
  while left > 0:
    stop = min(size, left)
    state, _, done = train_block(state, slab, constants, 0, stop, -1)
    left -= int(done)  # the loop reads each call's last step back
  jax.block_until_ready(state)
  return state, (time.perf_counter() - start) / steps, min(size, steps)


def time_loop(stage: Stage, state, constants: dict, data: CTRDataset, per_dispatch: int,
              steps: int, log_keys: tuple[str, ...]) -> tuple[float, int]:
  """Steady seconds per step of :func:`fit.train_steps` at K=``per_dispatch`` from ``state``.

  The first call (K steps; it may compile) is excluded, then ``ceil(steps / K)`` calls are
  timed; the run stops there, before any epoch ends or checkpoint is due. Returns
  ``(seconds, steps_timed)``.
  """
  config = stage.config.copy_and_resolve_references()
  config.train.steps_per_dispatch = per_dispatch
  stage = dataclasses.replace(stage, config=config)  # same compiled steps, another K
  target = per_dispatch * (1 + max(1, math.ceil(steps / per_dispatch)))
  assert target <= pipeline.num_batches(len(data.train), config.train.batch_size)
  with (tempfile.TemporaryDirectory(prefix='bench_speed_loop_') as tmp,
        contextlib.redirect_stderr(io.StringIO())):  # the loop's progress bar
    writer = MetricWriter(tmp)
    state, progress = fit.train_steps(
        config, data, stage, state, constants, os.path.join(tmp, 'checkpoints'), 'bench',
        writer, max_epochs=1, checkpoint_every=10 * target,
        on_step=lambda step, *_: step >= target, halt_at=lambda: -1, log_keys=log_keys)
    writer.close()
    del state
  timed = progress['steps'] - progress['warmup_steps']
  return (progress['seconds'] - progress['warmup_seconds']) / timed, timed


def time_eval(stage: Stage, state, constants: dict, data: CTRDataset) -> tuple[float, float]:
  """``(rows/s, seconds)`` of :func:`evaluation.predict` over the held-out split, after a
  warm-up."""
  first = Split(data.valid.ids[:1], data.valid.labels[:1])
  evaluation.predict(stage, state, constants, first)  # compiles (the slab's shape is fixed)
  start = time.perf_counter()
  probs = evaluation.predict(stage, state, constants, data.valid)
  seconds = time.perf_counter() - start
  assert probs.shape == (len(data.valid),)
  return len(data.valid) / seconds, seconds


def run_demo(variant: str) -> dict:
  """Wall time of the demo command, run in a subprocess in a fresh work directory."""
  config = 'configs/demo.py' + (f':{variant}' if variant else '')
  with tempfile.TemporaryDirectory(prefix='bench_speed_demo_') as workdir:
    command = [sys.executable, '-m', 'pep_jax.main', f'--config={config}', f'--workdir={workdir}']
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
  row = {'part': 'demo', 'config': config, 'seconds': seconds, 'returncode': proc.returncode}
  if proc.returncode:
    row['output_tail'] = (proc.stdout + proc.stderr)[-2000:]
  return row


# --- the grid ----------------------------------------------------------------------------------


def cases(args: argparse.Namespace, notes: list[str]) -> list[Case]:
  """Every (shape, mode, model, method) the flags ask for, in run order."""
  modes = args.modes  # the first one also gives the eval rows
  methods = [(m, g) for m in args.methods
             for g in (args.granularities if m == 'pep' else [None])]
  return [Case(shape, model, method, granularity, mode)
          for shape in args.shapes for mode in modes for model in args.models
          for method, granularity in methods]


def wants_loop(case: Case, args: argparse.Namespace) -> bool:
  """Loop rows: the models of ``--loop-models``, UE and PEP at ``--loop-granularities``."""
  return args.full or (case.model in args.loop_models and
                       case.granularity in [None, *args.loop_granularities])


def wants_eval(case: Case, args: argparse.Namespace) -> bool:
  """Eval rows: every model, UE and PEP at ``--loop-granularities``, the first mode only."""
  if case.mode != args.modes[0]:  # the optimizer mode does not change evaluation
    return False
  return args.full or case.granularity in [None, *args.loop_granularities]


def run_case(case: Case, data: CTRDataset, args: argparse.Namespace) -> list[dict]:
  """The step, loop and eval rows of one case."""
  steps, k = args.steps or SHAPES[case.shape].steps, args.per_dispatch
  config = case_config(case, args, k)
  stage = build_stage(config, data, KINDS[case.method])
  rows = []

  def add(part: str, per_dispatch: int, seconds: float, timed: int, **extra) -> None:
    row = {'part': part, **case.key(), 'per_dispatch': per_dispatch, 'steps_timed': timed,
           'ms_per_step': 1e3 * seconds, 'samples_per_second': args.batch_size / seconds, **extra}
    if bytes_per_step is not None:
      row['bytes_per_step'] = bytes_per_step
      row['gb_per_second'] = bytes_per_step / seconds / 1e9
    rows.append(row)
    print_row(row)

  initial = stage.initial_state()  # copied for the rows that train (their steps donate it)
  batch = device_batches(stage, data, 1)[0]
  constants = ticket_constants(stage, initial) if KINDS[case.method] == 'masked' else {}
  metric_shapes = jax.eval_shape(stage.train_step, stage.abstract_state(), batch, constants)[1]
  counts_nonzeros = 'nonzeros' in metric_shapes
  bytes_per_step = None
  if case.mode == 'dense':
    bytes_per_step = dense_step_bytes(stage, stage.abstract_state(), counts_nonzeros)
  if 'step' in args.parts:
    batches = device_batches(stage, data, max(k, 2))
    state = copy(initial)
    state, seconds, _ = time_one_step(stage, state, constants, batches[:max(2, min(k, steps))],
                                      steps)
    add('step', 1, seconds, steps, steps_per_call=1)
    if k > 1:
      state, seconds, per_call = time_block(stage, state, constants, batches[:k], steps)
      add('step', k, seconds, steps, steps_per_call=per_call)
    del state, batches
  if 'loop' in args.parts and wants_loop(case, args):
    log_keys = ('nonzeros',) if counts_nonzeros else ()
    for per_dispatch in sorted({1, k}):
      seconds, timed = time_loop(stage, copy(initial), constants, data, per_dispatch, steps,
                                 log_keys)
      add('loop', per_dispatch, seconds, timed, steps_per_call=per_dispatch)
  if 'eval' in args.parts and wants_eval(case, args):
    rows_per_second, seconds = time_eval(stage, initial, constants, data)
    row = {'part': 'eval', **case.key(), 'per_dispatch': k, 'rows': len(data.valid),
           'batch_size': args.eval_batch_size, 'seconds': seconds,
           'rows_per_second': rows_per_second}
    rows.append(row)
    print_row(row)
  return rows


# --- every method of the registry --------------------------------------------------------------


def field_widths(field_dims, choices) -> tuple[int, ...]:
  """Widths a per-field search gives a field table: the widest choice for fields of 100 or more
  features, the middle one for 10 or more, the narrowest for the rest."""
  low, mid, high = choices
  return tuple(high if n >= 100 else mid if n >= 10 else low for n in field_dims)


def _mde(c, dim):
  c.mde.update(dims=(dim,), blocks=(8, 16, 32), alphas=(0.3,))


def _mgqe(c, dim):
  c.mgqe.update(dims=(dim,), subspaces=(4,), centroids=(64,))


def _budgets(section):
  def apply(c, dim):
    del dim
    c[section].budgets = (0.5,)
  return apply


def _sseds(c, dim):
  del dim
  c.sseds.update(budgets=(0.5,), align='projection')


def _dartsemb(c, dim):
  del dim
  c.dartsemb.candidate_sets = ((1, 2, 8),)


# method -> config of its representative candidates, (config, base width) -> None
SETTINGS = {'ue': lambda c, dim: c.ue.update(dims=(dim,)), 'mde': _mde, 'mgqe': _mgqe,
            'sseds': _sseds, 'dartsemb': _dartsemb, 'pep': _budgets('prune'),
            'magnitude': _budgets('magnitude'), 'random': _budgets('random'),
            'qr': _budgets('qr')}


def _pep_ticket(ctx: Context) -> None:
  """A ticket of PEP's prune stage at its initial state (thresholds at ``s_init``)."""
  stage = build_stage(ctx.config, ctx.data, 'pep')
  state = stage.initial_state_saved(wd.initial_state_dir(ctx.workdir))
  entries = stage.table_entries
  pep._write_ticket(ctx, stage, state, entries, entries, 0, 0)


def _magnitude_masks(ctx: Context) -> None:
  """Random masks of the configured budgets, written where the magnitude search writes them."""
  budgets = resolve_budgets(ctx.config.magnitude.budgets, ctx.table_entries, 'magnitude.budgets')
  dim = int(ctx.config.embedding.dim)
  magnitude.save_masks(ctx, magnitude.SEARCH, {
      f'b{b}': random.draw(ctx.data.num_features, dim, b, 0) for b in budgets})
  wd.finish_search(ctx.workdir, magnitude.SEARCH, {
      'budgets': budgets, 'pretrain_run': None, 'pretrain_seconds': 0.0, 'select_seconds': 0.0})


def _sseds_mask(ctx: Context) -> None:
  """Field masks keeping half of the width in every field (the first columns)."""
  budgets = resolve_budgets(ctx.config.sseds.budgets, ctx.table_entries, 'sseds.budgets')
  dim = int(ctx.config.embedding.dim)
  mask = np.arange(dim)[None, :] < np.full((ctx.data.num_fields, 1), dim // 2)
  ckpt = Checkpointer(wd.search_dir(ctx.workdir, *sseds.SEARCH, 'search'), max_to_keep=None)
  ckpt.save(0, {'scores': mask.astype(np.float64), 'masks': {f'b{b}': mask for b in budgets}})
  ckpt.close()
  wd.finish_search(ctx.workdir, sseds.SEARCH, {
      'budgets': budgets, 'granularity': 'field', 'pretrain_seconds': 0.0,
      'score_seconds': 0.0, 'score_passes': 0})


def _dartsemb_widths(ctx: Context) -> None:
  for cset in ctx.config.dartsemb.candidate_sets:
    wd.finish_search(ctx.workdir, dartsemb._search(cset), {
        'widths': list(field_widths(ctx.data.field_dims, sorted(cset))), 'seconds': 0.0,
        'seconds_per_epoch': 0.0})


# method -> a stand-in for its finished search, written to the scratch work directory (the
# random masks' own search is as cheap as a stand-in)
STAND_INS = {'pep': _pep_ticket, 'magnitude': _magnitude_masks, 'random': random.search,
             'sseds': _sseds_mask, 'dartsemb': _dartsemb_widths}
# (method, stage) -> the most its step may take, in UE steps at the same base width
METHOD_TARGETS = {('mde', 'retrain'): 1.5, ('sseds', 'retrain'): 1.5,
                  ('dartsemb', 'retrain'): 1.5, ('dartsemb', 'search'): 2.0,
                  ('mgqe', 'retrain'): 3.0}


def block_timing(stage: Stage, state, constants: dict, batches: list[dict], steps: int):
  """``time_block`` again and again, each timing from the state the previous one left.

  Returns ``(steps per call, timing)``; ``timing() -> seconds per step``.
  """
  held = [state]

  def timing() -> float:
    held[0], seconds, _ = time_block(stage, held[0], constants, batches, steps)
    return seconds

  return min(len(batches), steps), timing


def scoring_timing(score, state, batches: list[dict], steps: int):
  """``timing() -> seconds per batch`` of a scoring pass: ``score(state, batch)`` once per batch,
  as SSEDS's search calls it (one compiled call per batch), cycling over ``batches``; compiled
  here."""
  jax.block_until_ready(score(state, batches[0]))

  def timing() -> float:
    start, total = time.perf_counter(), None
    for i in range(steps):
      g = score(state, batches[(i + 1) % len(batches)])
      total = g if total is None else total + g  # the pass sums the scores, as the search does
    jax.block_until_ready(total)
    return (time.perf_counter() - start) / steps

  return timing


def sseds_scoring(ctx: Context):
  """SSEDS's scoring stage, its state and ``score(state, batch)``: ``|dL/d alpha|`` at alpha = 1
  (:func:`pep_jax.methods.sseds.saliency`'s per-batch call)."""
  stage = sseds.probe_stage(ctx)
  alpha = sseds.ones_alpha(ctx, stage)
  grad = sseds.score_fn(stage)
  return stage, stage.initial_state(), lambda state, batch: jnp.abs(grad(alpha, state, batch))


# The scoring passes timed beside the train steps: method -> (ctx) -> (stage, state, score).
SCORING = {'sseds': sseds_scoring}


def method_stages(ctx: Context, method):
  """``[(stage kind, setting, stage, state, constants, batch_map)]`` of one method: each
  candidate's retraining, then its search's stage (if any)."""
  out = []
  for cand in method.candidates(ctx):
    stage = method.build(ctx, cand)
    state, constants = method.initial(ctx, cand, stage)
    out.append(('retrain', cand.setting, stage, state, constants, None))
  if method.search_stage is not None:
    stage, batch_map = method.search_stage(ctx)
    out.append(('search', '', stage, stage.initial_state(), {}, batch_map))
  return out


def run_methods(shape: str, data: CTRDataset, args: argparse.Namespace) -> list[dict]:
  """The ``methods`` rows of one shape: every method's stages, the first model and mode.

  Every stage is built and timed once, then timed again in ``--repeats - 1`` rounds over all of
  them, so a change of load on a shared machine falls on every row alike; a row is its fastest
  timing.
  """
  steps, k = args.steps or SHAPES[shape].steps, args.per_dispatch
  case = Case(shape, args.models[0], 'ue', None, args.modes[0])
  timed = []  # [row, timing() -> seconds per step, seconds of each timing]
  for name, method in METHODS.items():
    config = case_config(case, args, k)
    SETTINGS.get(name, lambda c, dim: None)(config, SHAPES[shape].dim)
    with tempfile.TemporaryDirectory(prefix='bench_speed_methods_') as workdir:
      ctx = Context(config, data, workdir, None)
      if name in STAND_INS:
        STAND_INS[name](ctx)
      for kind, setting, stage, state, constants, batch_map in method_stages(ctx, method):
        batches = device_batches(stage, data, min(k, steps))
        if batch_map is not None:
          batches = [batch_map(i + 1, jax.device_get(b)) for i, b in enumerate(batches)]
        per_call, timing = block_timing(stage, state, constants, batches, steps)
        row = {'part': 'methods', **case.key(), 'method': name, 'stage': kind,
               'setting': setting, 'per_dispatch': k, 'steps_timed': steps,
               'steps_per_call': per_call, 'repeats': args.repeats}
        timed.append([row, timing, [timing()]])
      if name in SCORING:
        stage, state, score = SCORING[name](ctx)
        timing = scoring_timing(score, state, device_batches(stage, data, min(k, steps)), steps)
        row = {'part': 'methods', **case.key(), 'method': name, 'stage': 'score',
               'setting': '', 'per_dispatch': 1, 'steps_timed': steps, 'steps_per_call': 1,
               'repeats': args.repeats}
        timed.append([row, timing, [timing()]])
  for _ in range(args.repeats - 1):
    for _, timing, seconds in timed:
      seconds.append(timing())
  rows = []
  for row, _, seconds in timed:
    best = min(seconds)
    rows.append({**row, 'ms_per_step': 1e3 * best, 'samples_per_second': args.batch_size / best})
    print_row(rows[-1])
  return rows


def method_ratios(rows: list[dict]) -> list[dict]:
  """Every ``method`` row's step time over the UE row's of the same shape, model and mode."""
  out = []
  for r in rows:
    if r['part'] != 'methods':
      continue
    ue = next((u for u in rows if u['part'] == 'methods' and u['method'] == 'ue' and
               all(u[key] == r[key] for key in ('shape', 'model', 'mode'))), None)
    if ue is None:
      continue
    item = {'ratio': 'method/ue step time', **{key: r[key] for key in (
        'part', 'shape', 'model', 'method', 'stage', 'setting', 'granularity', 'mode',
        'per_dispatch')}, 'measured': r['ms_per_step'] / ue['ms_per_step']}
    target = METHOD_TARGETS.get((r['method'], r['stage']))
    if target is not None:
      item.update(target=f'measured <= {target}', meets_target=item['measured'] <= target)
    out.append(item)
  return out


# --- ratios ------------------------------------------------------------------------------------


RATIOS = ('pep/ue step time', 'loop/step samples/s', 'loop/block step samples/s',
          'K>1/K=1 samples/s', 'rows/dense samples/s')


def ratios(rows: list[dict]) -> list[dict]:
  """PEP/UE, loop/step, K>1/K=1 and rows/dense, each between two rows of this run."""
  def key(r: dict) -> tuple:
    return (r['part'], r['shape'], r['model'], r['method'], r['granularity'], r['mode'],
            r['per_dispatch'])

  timed = [r for r in rows if r['part'] in ('step', 'loop')]
  index = {key(r): r for r in timed}
  out = []
  for r in timed:
    part, shape, model, method, gran, mode, k = key(r)
    where = {'part': part, 'shape': shape, 'model': model, 'method': method, 'granularity': gran,
             'mode': mode, 'per_dispatch': k}

    def add(ratio: str, other: dict | None, **extra) -> None:
      if other is not None:
        out.append({'ratio': ratio, **where,
                    'measured': r['samples_per_second'] / other['samples_per_second'], **extra})

    ue = index.get((part, shape, model, 'ue', None, mode, k))
    if part == 'step' and method == 'pep' and ue is not None:
      item = {'ratio': RATIOS[0], **where, 'measured': r['ms_per_step'] / ue['ms_per_step']}
      if 'bytes_per_step' in r and 'bytes_per_step' in ue:
        item['traffic_implied'] = r['bytes_per_step'] / ue['bytes_per_step']
      if gran == 'dimension':
        item.update(target='measured <= 1.1', meets_target=item['measured'] <= 1.1)
      elif gran == 'feature_dimension' and 'traffic_implied' in item:
        item.update(target='measured <= 1.1 * traffic_implied',
                    meets_target=item['measured'] <= 1.1 * item['traffic_implied'])
      out.append(item)
    if part == 'loop':
      # Against the isolated one-step step (K=1, batches pre-built: the step's own speed, the
      # target), and against the block step at the loop's own K (what the loop adds to it).
      step = index.get(('step',) + key(r)[1:-1] + (1,))
      if step is not None:
        measured = r['samples_per_second'] / step['samples_per_second']
        add(RATIOS[1], step, target='measured >= 0.9', meets_target=measured >= 0.9)
      block = index.get(('step',) + key(r)[1:])
      if k > 1 and block is not None:
        add(RATIOS[2], block)
    if k > 1:
      add(RATIOS[3], index.get(key(r)[:-1] + (1,)))
    if mode != 'dense':
      add(RATIOS[4], index.get(key(r)[:5] + ('dense', k)))
  return sorted(out, key=lambda item: RATIOS.index(item['ratio']))


# --- printing ----------------------------------------------------------------------------------

COLUMNS = ('part', 'shape', 'model', 'method', 'mode', 'K', 'ms/step', 'samples/s', 'GB/s')
WIDTHS = (5, 6, 12, 30, 5, 3, 9, 11, 6)


def print_row(row: dict) -> None:
  """One line of the table (printed as the run goes)."""
  if row['part'] == 'demo':
    status = '' if row['returncode'] == 0 else f'FAILED ({row["returncode"]})'
    cells = ('demo', '', '', row['config'], '', '', f'{row["seconds"]:.1f} s', 'wall', status)
  else:
    method = row['method'] + (f':{row["granularity"]}' if row['granularity'] else '')
    if row['part'] == 'methods':
      method = f'{row["method"]}:{row["stage"]} {row["setting"]}'.rstrip()
    if row['part'] == 'eval':
      cells = ('eval', row['shape'], row['model'], method, '', row['per_dispatch'], '',
               f'{row["rows_per_second"]:,.0f}', 'rows/s')
    else:
      gbs = f'{row["gb_per_second"]:.2f}' if 'gb_per_second' in row else ''
      cells = (row['part'], row['shape'], row['model'], method, row['mode'], row['per_dispatch'],
               f'{row["ms_per_step"]:.3f}', f'{row["samples_per_second"]:,.0f}', gbs)
  print(' '.join(f'{str(c):>{w}s}' if i >= 5 else f'{str(c):{w}s}'
                 for i, (c, w) in enumerate(zip(cells, WIDTHS))).rstrip(), flush=True)


def print_header() -> None:
  print(' '.join(f'{c:>{w}s}' if i >= 5 else f'{c:{w}s}'
                 for i, (c, w) in enumerate(zip(COLUMNS, WIDTHS))).rstrip(), flush=True)


def print_plan(todo: list[Case], args: argparse.Namespace) -> None:
  """The rows each case gives (without running anything)."""
  k = args.per_dispatch
  for case in todo:
    parts = [f'step K=1,{k}'] if 'step' in args.parts else []
    if 'loop' in args.parts and wants_loop(case, args):
      parts.append(f'loop K=1,{k}')
    if 'eval' in args.parts and wants_eval(case, args):
      parts.append('eval')
    if parts:
      print(f'{case.shape:6s} {case.mode:5s} {case.model:12s} {case.label:22s} {", ".join(parts)}')
  if 'demo' in args.parts:
    print(f'demo configs/demo.py{":" + args.demo_variant if args.demo_variant else ""}')


def print_ratios(items: list[dict]) -> None:
  for name in RATIOS + ('method/ue step time',):
    group = [item for item in items if item['ratio'] == name]
    if group:
      print(f'{name}:')
    for item in group:
      method = item['method'] + (f':{item["granularity"]}' if item['granularity'] else '')
      if item['part'] == 'methods':
        method = f'{item["method"]}:{item["stage"]} {item["setting"]}'.rstrip()
      line = (f'  {item["part"]:4s} {item["shape"]:6s} {item["model"]:12s} {method:22s} '
              f'{item["mode"]:5s} K={item["per_dispatch"]:<3d} {item["measured"]:6.2f}')
      if 'traffic_implied' in item:
        line += f'  traffic-implied {item["traffic_implied"]:.2f}'
      if 'meets_target' in item:
        line += f'  target {item["target"]}: {"met" if item["meets_target"] else "NOT met"}'
      print(line)


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  def names(allowed):
    def parse(text: str) -> list[str]:
      values = [v for v in text.split(',') if v]
      bad = [v for v in values if allowed and v not in allowed]
      if bad:
        raise argparse.ArgumentTypeError(f'{bad} not in {sorted(allowed)}')
      return values
    return parse

  from pep_jax.models.ctr import MODELS
  from pep_jax.ops.threshold import GRANULARITIES
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--parts', type=names(('step', 'loop', 'eval', 'methods', 'demo')),
                 default=['step', 'loop', 'eval'], help='what to time')
  p.add_argument('--shapes', type=names(SHAPES), default=['small', 'criteo'])
  p.add_argument('--models', type=names(MODELS), default=['fm', 'deepfm', 'autoint_plus'])
  p.add_argument('--methods', type=names(KINDS), default=['ue', 'pep'],
                 help='ue (plain), pep (prune stage), retrain (a ticket, masked stage)')
  p.add_argument('--granularities', type=names(GRANULARITIES),
                 default=['global', 'dimension', 'feature', 'feature_dimension'],
                 help="PEP's threshold granularities")
  p.add_argument('--modes', type=names(MODES), default=list(MODES),
                 help='optimizer.updates modes')
  p.add_argument('--loop-models', '--loop_models', type=names(MODELS), default=['fm'],
                 help='models whose whole loop is timed (all of them with --full)')
  p.add_argument('--loop-granularities', '--loop_granularities', type=names(GRANULARITIES),
                 default=['feature_dimension'],
                 help="PEP's granularities in the loop and eval rows (all of them with --full)")
  p.add_argument('--full', action='store_true',
                 help='every combination: loop and eval rows for every model and granularity')
  p.add_argument('--per-dispatch', '--per_dispatch', type=int,
                 default=default_config().train.steps_per_dispatch,
                 help='K of the block rows (train.steps_per_dispatch); K=1 rows always run')
  p.add_argument('--steps', type=int, default=None,
                 help='timed steps per row (default: small 100, criteo 20)')
  p.add_argument('--repeats', type=int, default=3,
                 help='methods part: each row is the fastest of this many timings')
  p.add_argument('--batch-size', '--batch_size', type=int, default=1024)
  p.add_argument('--eval-batch-size', '--eval_batch_size', type=int, default=8192)
  p.add_argument('--eval-rows', '--eval_rows', type=int, default=16 * 8192,
                 help='rows of the evaluated split')
  p.add_argument('--demo', action='store_true',
                 help='also time the whole demo (adds demo to --parts)')
  p.add_argument('--demo-variant', '--demo_variant', default='',
                 help="variant of configs/demo.py, e.g. 'tiny' (default: the full demo)")
  p.add_argument('--json', default='bench_speed.json', help='where to write the results')
  p.add_argument('--list', action='store_true', help='print the rows the flags ask for and exit')
  args = p.parse_args(argv)
  if args.per_dispatch < 1 or args.repeats < 1 or (args.steps is not None and args.steps < 1):
    p.error('--per-dispatch, --repeats and --steps must be positive')
  if args.demo and 'demo' not in args.parts:
    args.parts.append('demo')
  return args


def main(argv: list[str] | None = None) -> dict:
  args = parse_args(argv)
  notes: list[str] = []
  info = machine()
  print(f'{info["device_kind"]} ({info["device_platform"]}), {info["processor"]}, '
        f'{info["cpu_count"]} CPUs, jax {info["jax"]}, python {info["python"]}; '
        f'batch {args.batch_size}, K={args.per_dispatch}', flush=True)
  todo = cases(args, notes) if {'step', 'loop', 'eval'} & set(args.parts) else []
  if args.list:
    print_plan(todo, args)
    return {'cases': [c.key() for c in todo], 'notes': notes}
  print_header()
  rows = []
  shapes = args.shapes if 'methods' in args.parts else dict.fromkeys(c.shape for c in todo)
  for shape in shapes:
    steps = args.steps or SHAPES[shape].steps
    k = args.per_dispatch
    # Enough training batches for the longest loop row, which stops before its epoch ends.
    loop_batches = max(1 + steps, k * (1 + math.ceil(steps / k)), k, 2)
    data = fake_data(SHAPES[shape].field_dims, loop_batches * args.batch_size, args.eval_rows)
    print(f'# {shape}: {data.num_features:,} features x d={SHAPES[shape].dim}, '
          f'{steps} timed steps per row', flush=True)
    for case in (c for c in todo if c.shape == shape):
      rows.extend(run_case(case, data, args))
    if 'methods' in args.parts:
      rows.extend(run_methods(shape, data, args))
  if 'demo' in args.parts:
    rows.append(run_demo(args.demo_variant))
    print_row(rows[-1])
  items = ratios(rows) + method_ratios(rows)
  if items:
    print('\nratios, from this run (samples/s over samples/s; pep/ue: step time over step time)')
    print_ratios(items)
  for note in notes:
    print(f'note: {note}')
  report = {'machine': info, 'settings': {k: v for k, v in vars(args).items() if k != 'json'},
            'default_steps': {name: s.steps for name, s in SHAPES.items()},
            'rows': rows, 'ratios': items, 'notes': notes}
  os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
  with open(args.json, 'w') as f:
    json.dump(report, f, indent=2)
  print(f'wrote {args.json}')
  return report


if __name__ == '__main__':
  main()
