"""The training loop every method uses, and its two uses.

:func:`_train` is the loop: it resumes from the newest checkpoint of a folder, runs the stage's
train block over blocks of ``train.steps_per_dispatch`` batches, logs every
``train.log_every_steps`` steps, shows a progress bar and saves a checkpoint every
``checkpoint_every`` steps. Two hooks let a use add to it: one after every compiled call (a block
of steps finished, or stopped at a budget) that may stop the run, one at the end of every epoch.

* :func:`train_steps` trains for up to ``max_epochs`` and hands every call's metrics to a callback
  that may stop it: the search stages (PEP's pruning cuts a ticket there, DartsEmb's supernet
  records its architecture weights).
* :func:`train_to_best` validates at the end of every epoch, stops early once validation AUC has
  not improved for ``train.patience`` epochs, keeps the best state and scores the test split once
  with it: every slim model a method proposes is trained this way.

A resumed run replays the batches an uninterrupted run would have seen (epoch ``e``'s order
depends only on ``(seed, e)``), so a killed run ends bit for bit where an uninterrupted one does.
Wall-clock seconds are accumulated in the checkpoints' progress documents, so a resumed run still
reports what its training cost in all.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pep_jax.data import pipeline
from pep_jax.data.base import CTRDataset
from pep_jax.errors import UserError
from pep_jax.layers.embedding import field_offsets
from pep_jax.metrics import evaluate_predictions
from pep_jax.train import batches as batches_lib
from pep_jax.train import evaluation
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.logging import MetricWriter, Progress
from pep_jax.train.setup import Stage

# on_step(step, epoch_end, state, metrics) -> True to stop after this step.
StepCallback = Callable[[int, bool, object, dict], bool]
# on_epoch_end(epoch, step, state, loss) -> (state, stop, shown): the state training continues
# from, True to stop, and fields for the progress bar.
EpochCallback = Callable[[int, int, object, float], tuple[object, bool, dict]]


class NonFiniteLossError(UserError, FloatingPointError):
  """The training loss became NaN or infinite."""


def check_loss(loss: float, stage: str, step: int, checkpoint_dir: str) -> None:
  if not math.isfinite(loss):
    raise NonFiniteLossError(
        f'{stage}: the training loss is {loss} at step {step}. Nothing was saved for this step; '
        f'the last good checkpoint in {checkpoint_dir} is kept. Lower optimizer.learning_rate or '
        'check the data.')


class _Blocks:
  """Runs a stage's train block over the slabs of a run and reports each call's steps."""

  def __init__(self, stage: Stage, constants: dict, name: str, ckpt_dir: str):
    self.stage, self.constants, self.name, self.ckpt_dir = stage, constants, name, ckpt_dir
    self.warmup = None  # (seconds, steps) of this process's first call (it compiles)

  def run(self, state, block: batches_lib.Block, slot: int, halt_at: int):
    """One compiled call from ``slot``; returns ``(state, metrics, done)``, metrics on the host.

    With ``halt_at >= 0`` the call halts after the first step whose ``nonzeros`` is at or
    under ``halt_at``. In the rows mode a step's count is of the rows as stored, an upper
    bound of the true count (rows not looked up lately have decay and threshold climbs still
    to apply, which only prune): so after the call the true count is taken (every row brought
    up to date); when it is at or under ``halt_at`` the call is replayed from its start one
    step at a time, and halts after the first step whose true count is, with that count as
    the step's ``nonzeros``. The ticket is then cut at the step the faithful count would
    have been cut at, up to the catch-up's own error.

    Raises :class:`NonFiniteLossError` (before anything is saved) if a step's loss is not
    finite.
    """
    t = time.perf_counter()
    steps = self.stage.steps_for(block.distinct)
    exact = halt_at >= 0 and self.stage.materialize_fn is not None
    start = jax.tree.map(jnp.copy, state) if exact else None  # the call donates ``state``
    state, metrics, done = steps.train_block(state, block.slab, self.constants, slot,
                                             block.count, halt_at)
    metrics, done = jax.device_get((metrics, done))
    done = int(done)
    for j in range(slot, done):
      check_loss(float(metrics['loss'][j]), self.name, block.first + j + 1, self.ckpt_dir)
    if exact and self.true_count(state) <= halt_at:
      state, metrics, done = self._replay(start, block, slot, done, halt_at, metrics)
    sync = self.stage.config.optimizer.rows_sync_steps
    if self.stage.materialize_fn is not None and (block.first + done) % sync == 0:
      state = self.stage.materialize(state)  # rows mode: every row brought up to date
    if self.warmup is None:
      self.warmup = (time.perf_counter() - t, done - slot)
    return state, metrics, done

  def true_count(self, state) -> int:
    """The layer's non-zeros with every row brought up to date (``state`` is kept)."""
    return int(self.stage.embedding_call(self.stage.materialize(state), 'nonzeros',
                                         self.constants))

  def _replay(self, state, block, slot: int, stop: int, halt_at: int, metrics: dict):
    """Steps ``slot .. stop - 1`` again, one per call, up to the first whose true count is at
    or under ``halt_at`` (the last one at the latest: its true count is)."""
    steps = self.stage.steps_for(block.distinct)
    metrics = {k: v.copy() for k, v in metrics.items()}
    for j in range(slot, stop):
      state, step_metrics, _ = steps.train_block(state, block.slab, self.constants, j, j + 1,
                                                 -1)
      step_metrics = jax.device_get(step_metrics)
      for key, values in step_metrics.items():
        metrics[key][j] = values[j]
      count = self.true_count(state)
      if count <= halt_at or j == stop - 1:
        metrics['nonzeros'][j] = count
        return state, metrics, j + 1
    raise AssertionError('unreachable: the replay covers the call')


def _row_offsets(stage: Stage, data: CTRDataset):
  """Field offsets when blocks should count their distinct rows (the rows mode), else None."""
  if stage.capacity_steps is None or jax.process_count() > 1:
    return None  # (processes would count their own rows and could pick different programs)
  return field_offsets(data.field_dims)


def _crossed(before: int, after: int, every: int) -> bool:
  """Whether a multiple of ``every`` lies in ``(before, after]``."""
  return after // every > before // every


def _train(config, data: CTRDataset, stage: Stage, state, constants: dict, ckpt: Checkpointer,
           name: str, writer: MetricWriter, progress: dict, *, max_epochs: int,
           checkpoint_every: int, on_call: StepCallback | None = None,
           on_epoch_end: EpochCallback | None = None,
           finished: Callable[[dict], bool] | None = None,
           halt_at: Callable[[], int] | None = None,
           batch_map: Callable[[int, dict], dict] | None = None, log_keys: tuple[str, ...] = (),
           log_epoch_ends: bool = True, time_warmup: bool = False,
           ended: Callable[[dict, int], str | None] | None = None) -> tuple[object, dict]:
  """Trains from the newest checkpoint in ``ckpt`` until a hook stops it, or for ``max_epochs``.

  Every compiled call runs the steps of one block (:class:`batches_lib.Block`) from where the
  previous call stopped. After it: ``on_call``; a log row for each step on the
  ``train.log_every_steps`` cadence; the progress bar; then ``on_epoch_end`` if the call ended an
  epoch and the hook is given, else a checkpoint in ``ckpt`` if the call crossed a multiple of
  ``checkpoint_every`` and the run goes on (the caller saves where it stops).

  Args:
    ckpt: the folder of periodic checkpoints, restored from and saved to (not closed).
    progress: the document saved with every checkpoint, holding at least ``seconds``; updated in
      place with the restored one, then after every call with ``seconds`` (wall time of the loop,
      summed over resumes).
    on_call: ``(step, epoch_end, state, metrics) -> stop`` after every call, with its last step,
      whether that step ended an epoch, the state after it and its metrics (host scalars).
    on_epoch_end: ``(epoch, step, state, loss) -> (state, stop, shown)`` after a call that ended
      an epoch; it saves what it needs (no periodic checkpoint is saved at that call) and
      ``shown`` is added to the progress bar.
    finished: ``(progress) -> bool``: the restored run had already stopped; nothing trains.
    halt_at: ``() -> int``: a call stops after the first step whose ``nonzeros`` metric is at or
      under this value (``< 0`` or no ``halt_at``: never).
    batch_map: ``(step, batch) -> dict`` of per-step inputs added to the batch.
    log_keys: metrics besides ``loss`` shown on the progress bar and logged.
    log_epoch_ends: also log the last step of every epoch, off the cadence.
    time_warmup: also keep ``progress``'s ``warmup_seconds`` and ``warmup_steps`` up to date:
      the time and steps of each process's first call (which compiles), summed over resumes.
    ended: ``(progress, step) -> note``: how the loop ended, printed once when its progress bar
      closes.

  Returns:
    The state as trained (not materialized) and ``progress``.
  """
  if ckpt.latest_step() is not None:
    state, restored = ckpt.restore(ckpt.latest_step(), state)
    progress.update(restored)
  bs = config.train.batch_size
  start = int(state.step)
  per_epoch = pipeline.num_batches(len(data.train), bs)
  bar = Progress(name, max_epochs * per_epoch, start, bs)
  t0, base = time.perf_counter(), dict(progress)
  runner = _Blocks(stage, constants, name, ckpt.directory)
  blocks = batches_lib.resumable_blocks(data.train, bs, stage.per_dispatch, seed=config.seed,
                                        start_step=start, max_epochs=max_epochs,
                                        sharding=stage.batch_sharding, batch_map=batch_map,
                                        row_offsets=_row_offsets(stage, data))
  stop = finished is not None and finished(progress)
  with contextlib.closing(blocks):
    for block in () if stop else blocks:
      slot = block.start
      while slot < block.count and not stop:
        state, metrics, done = runner.run(state, block, slot,
                                          -1 if halt_at is None else int(halt_at()))
        step, loss = block.first + done, float(metrics['loss'][done - 1])
        epoch_end = block.epoch_end and done == block.count
        if on_call is not None:
          stop = on_call(step, epoch_end, state, {k: v[done - 1] for k, v in metrics.items()})
        progress['seconds'] = base['seconds'] + time.perf_counter() - t0
        if time_warmup:
          progress['warmup_seconds'] = base['warmup_seconds'] + runner.warmup[0]
          progress['warmup_steps'] = base['warmup_steps'] + runner.warmup[1]
        for j in range(slot, done):
          if (block.first + j + 1) % config.train.log_every_steps == 0 or (
              log_epoch_ends and epoch_end and j == done - 1):
            values = {k: float(metrics[k][j]) for k in ('loss',) + log_keys}
            writer.write(name, block.first + j + 1, **values,
                         samples_per_second=bar.samples_per_second)
        bar.update(step, **{k: f'{float(metrics[k][done - 1]):,.6g}' for k in log_keys},
                   loss=f'{loss:.4f}')
        if epoch_end and on_epoch_end is not None:
          state, end, shown = on_epoch_end(step // per_epoch - 1, step, state, loss)
          stop = stop or end
          bar.update(step, loss=f'{loss:.4f}', **shown)
        elif not stop and _crossed(block.first + slot, step, checkpoint_every):
          ckpt.save(step, state, progress)
        slot = done
      if stop:
        break
  bar.close(None if ended is None else ended(progress, int(state.step)))
  return state, progress


def train_steps(config, data: CTRDataset, stage: Stage, state, constants: dict, ckpt_dir: str,
                name: str, writer: MetricWriter, *, max_epochs: int, checkpoint_every: int,
                on_step: StepCallback, halt_at: Callable[[], int] | None = None,
                batch_map: Callable[[int, dict], dict] | None = None,
                log_keys: tuple[str, ...] = ()) -> tuple[object, dict]:
  """Trains from the newest checkpoint in ``ckpt_dir`` until ``on_step`` says stop.

  Steps run ``train.steps_per_dispatch`` per compiled call (:class:`batches_lib.Block`).

  Args:
    on_step: called after every call with its last step, whether that step ended an epoch,
      the state after it and its metrics (host scalars); it may write artefacts (they must be
      idempotent: a step replayed after a crash calls it again).
    halt_at: ``() -> int``: a call stops after the first step whose ``nonzeros`` metric is at
      or under this value (``< 0``: never), so ``on_step`` sees the state of exactly that step.
    batch_map: ``(step, batch) -> dict`` of per-step inputs added to the batch (e.g.
      validation rows), numpy arrays of ``train.batch_size`` rows.
    log_keys: metrics besides ``loss`` shown on the progress bar and logged.

  Returns:
    The final state and ``{'steps', 'seconds', 'warmup_steps', 'warmup_seconds'}``: the wall
    time of the loop, and the steps and time of each process's first call (which compiles),
    summed over resumes, so ``(steps - warmup_steps) / (seconds - warmup_seconds)`` is the
    steady rate.
  """
  ckpt = Checkpointer(ckpt_dir, max_to_keep=2)
  state, progress = _train(
      config, data, stage, state, constants, ckpt, name, writer,
      {'seconds': 0.0, 'warmup_seconds': 0.0, 'warmup_steps': 0}, max_epochs=max_epochs,
      checkpoint_every=checkpoint_every, on_call=on_step, halt_at=halt_at, batch_map=batch_map,
      log_keys=log_keys, time_warmup=True,
      ended=lambda progress, step: f'stopped at step {step:,} ({progress["seconds"]:.0f} s)')
  ckpt.save(int(state.step), state, progress)  # as trained: a resumed run continues from it
  ckpt.close()
  return stage.materialize(state), {'steps': int(state.step), **progress}


def train_to_best(config, data: CTRDataset, stage: Stage, state, constants: dict, run_dir: str,
                  name: str, writer: MetricWriter) -> dict:
  """Trains with early stopping on validation AUC; returns the best state's metrics.

  Resumable: ``run_dir/latest`` holds the newest state with the validation history,
  ``run_dir/best`` the best one; ``run_dir/result.json`` marks the run finished. Steps run
  ``train.steps_per_dispatch`` per compiled call; every epoch ends a call.

  Returns:
    ``valid_*``/``test_*`` metrics of the best state, its epoch, the epochs run,
    ``train_seconds`` and ``history``; plus ``best_state`` and ``test_probs`` (the best state's
    click probability of every test row, float32 ``[test rows]``), not written to
    ``result.json``.
  """
  latest = Checkpointer(os.path.join(run_dir, 'latest'), max_to_keep=2)
  best = Checkpointer(os.path.join(run_dir, 'best'), max_to_keep=1)
  progress = {'history': [], 'best_epoch': None, 'best_valid_auc': None, 'bad_epochs': 0,
              'seconds': 0.0}

  def end_epoch(epoch: int, step: int, state, loss: float):
    """Validates, saves ``best`` (when better) then ``latest``; stops once patience is spent."""
    state = stage.materialize(state)
    valid = evaluation.evaluate(stage, state, constants, data.valid)
    progress['history'].append({'epoch': epoch, 'step': step, 'train_loss': loss,
                                **{f'valid_{k}': v for k, v in valid.items()}})
    writer.write(name, step, **{f'valid_{k}': v for k, v in valid.items()})
    if progress['best_valid_auc'] is None or valid['auc'] > progress['best_valid_auc']:
      progress.update(best_epoch=epoch, best_valid_auc=valid['auc'], bad_epochs=0)
      best.save(epoch, state, progress)  # before `latest`, so a crash never loses the best
    else:
      progress['bad_epochs'] += 1
    latest.save(step, state, progress)
    return (state, progress['bad_epochs'] >= config.train.patience,
            {'valid_auc': f'{valid["auc"]:.4f}'})

  def ended(progress: dict, step: int) -> str | None:
    """Why training stopped, and the best epoch (epochs counted from 0, as ``best_epoch``)."""
    del step
    if not progress['history']:
      return None
    best = (f'best epoch {progress["best_epoch"]} (valid AUC '
            f'{progress["best_valid_auc"]:.4f})')
    if progress['bad_epochs'] >= config.train.patience:
      return f'early stop at epoch {progress["history"][-1]["epoch"]}, {best}'
    return f'{len(progress["history"])} epochs (train.max_epochs), {best}'

  state, _ = _train(
      config, data, stage, state, constants, latest, name, writer, progress,
      max_epochs=config.train.max_epochs, checkpoint_every=config.train.checkpoint_every_steps,
      on_epoch_end=end_epoch,
      finished=lambda restored: restored['bad_epochs'] >= config.train.patience,
      log_epoch_ends=False, ended=ended)
  latest.close()

  if progress['best_epoch'] is None:
    raise RuntimeError(f'{name}: no epoch finished (train.max_epochs={config.train.max_epochs})')
  best_state, _ = best.restore(progress['best_epoch'], state)
  best.close()
  valid = evaluation.evaluate(stage, best_state, constants, data.valid)
  test_probs = evaluation.predict(stage, best_state, constants, data.test)
  test = evaluate_predictions(np.asarray(data.test.labels, np.float64), test_probs)
  return {
      'best_epoch': progress['best_epoch'],
      'epochs': len(progress['history']),
      'valid_auc': valid['auc'], 'valid_logloss': valid['logloss'],
      'test_auc': test['auc'], 'test_logloss': test['logloss'],
      'test_auc_batch_mean': test['auc_batch_mean'],
      'test_logloss_batch_mean': test['logloss_batch_mean'],
      'train_seconds': progress.get('seconds', 0.0),
      'history': progress['history'],
      'best_state': best_state,
      'test_probs': test_probs.astype(np.float32),
  }


def restore_best(run_dir: str, epoch: int, target):
  """The best state :func:`train_to_best` kept in ``run_dir`` (its ``epoch``), restored into
  ``target`` (shapes and shardings)."""
  best = Checkpointer(os.path.join(run_dir, 'best'), max_to_keep=None)
  state, _ = best.restore(int(epoch), target)
  best.close()
  return state
