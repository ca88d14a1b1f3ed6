"""The two training loops every method uses.

* :func:`train_steps` trains for up to ``max_epochs`` with periodic checkpoints and hands every
  step's metrics to a callback that may stop it: the search stages (PEP's pruning cuts a ticket
  there, DartsEmb's supernet records its architecture weights).
* :func:`train_to_best` trains with early stopping on validation AUC, keeps the best state and
  scores the test split once with it: every slim model a method proposes is trained this way.

Both resume from their newest checkpoint and replay the batches an uninterrupted run would have
seen (epoch ``e``'s order depends only on ``(seed, e)``), so a killed run ends bit for bit where
an uninterrupted one does. Wall-clock seconds are accumulated in the checkpoints' progress
documents, so a resumed run still reports what its training cost in all.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable

import jax

from pep_jax.data import pipeline
from pep_jax.data.base import CTRDataset
from pep_jax.layers.embedding import field_offsets
from pep_jax.train import batches as batches_lib
from pep_jax.train import evaluation
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.logging import MetricWriter, Progress
from pep_jax.train.setup import Stage, write_json

# on_step(step, epoch_end, state, metrics) -> True to stop after this step.
StepCallback = Callable[[int, bool, object, dict], bool]


class NonFiniteLossError(FloatingPointError):
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

    Raises :class:`NonFiniteLossError` (before anything is saved) if a step's loss is not
    finite.
    """
    t = time.perf_counter()
    steps = self.stage.steps_for(block.distinct)
    state, metrics, done = steps.train_block(state, block.slab, self.constants, slot,
                                             block.count, halt_at)
    metrics, done = jax.device_get((metrics, done))
    done = int(done)
    for j in range(slot, done):
      check_loss(float(metrics['loss'][j]), self.name, block.first + j + 1, self.ckpt_dir)
    sync = self.stage.config.optimizer.rows_sync_steps
    if self.stage.materialize_fn is not None and (block.first + done) % sync == 0:
      state = self.stage.materialize(state)  # rows mode: every row brought up to date
    if self.warmup is None:
      self.warmup = (time.perf_counter() - t, done - slot)
    return state, metrics, done


def _row_offsets(stage: Stage, data: CTRDataset):
  """Field offsets when blocks should count their distinct rows (the rows mode), else None."""
  if stage.capacity_steps is None or jax.process_count() > 1:
    return None  # (processes would count their own rows and could pick different programs)
  return field_offsets(data.field_dims)


def _crossed(before: int, after: int, every: int) -> bool:
  """Whether a multiple of ``every`` lies in ``(before, after]``."""
  return after // every > before // every


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
  progress = {'seconds': 0.0, 'warmup_seconds': 0.0, 'warmup_steps': 0}
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
  stop = False
  with contextlib.closing(blocks):
    for block in blocks:
      slot = block.start
      while slot < block.count and not stop:
        state, metrics, done = runner.run(state, block, slot,
                                          -1 if halt_at is None else int(halt_at()))
        step = block.first + done
        epoch_end = block.epoch_end and done == block.count
        stop = on_step(step, epoch_end, state, {k: v[done - 1] for k, v in metrics.items()})
        progress['seconds'] = base['seconds'] + time.perf_counter() - t0
        progress['warmup_seconds'] = base['warmup_seconds'] + runner.warmup[0]
        progress['warmup_steps'] = base['warmup_steps'] + runner.warmup[1]
        for j in range(slot, done):
          if (block.first + j + 1) % config.train.log_every_steps == 0 or (
              epoch_end and j == done - 1):
            values = {k: float(metrics[k][j]) for k in ('loss',) + log_keys}
            writer.write(name, block.first + j + 1, **values,
                         samples_per_second=bar.samples_per_second)
        bar.update(step, **{k: f'{float(metrics[k][done - 1]):,.6g}' for k in log_keys},
                   loss=f'{float(metrics["loss"][done - 1]):.4f}')
        if not stop and _crossed(block.first + slot, step, checkpoint_every):
          ckpt.save(step, state, progress)
        slot = done
      if stop:
        break
  ckpt.save(int(state.step), state, progress)  # as trained: a resumed run continues from it
  ckpt.close()
  bar.close()
  return stage.materialize(state), {'steps': int(state.step), **progress}


def train_to_best(config, data: CTRDataset, stage: Stage, state, constants: dict, run_dir: str,
                  name: str, writer: MetricWriter) -> dict:
  """Trains with early stopping on validation AUC; returns the best state's metrics.

  Resumable: ``run_dir/latest`` holds the newest state with the validation history,
  ``run_dir/best`` the best one; ``run_dir/result.json`` marks the run finished. Steps run
  ``train.steps_per_dispatch`` per compiled call; every epoch ends a call.

  Returns:
    ``valid_*``/``test_*`` metrics of the best state, its epoch, the epochs run,
    ``train_seconds`` and ``history``; plus ``best_state`` (not written to ``result.json``).
  """
  latest = Checkpointer(os.path.join(run_dir, 'latest'), max_to_keep=2)
  best = Checkpointer(os.path.join(run_dir, 'best'), max_to_keep=1)
  progress = {'history': [], 'best_epoch': None, 'best_valid_auc': None, 'bad_epochs': 0,
              'seconds': 0.0}
  if latest.latest_step() is not None:
    state, progress = latest.restore(latest.latest_step(), state)
  bs = config.train.batch_size
  per_epoch = pipeline.num_batches(len(data.train), bs)
  start = int(state.step)
  bar = Progress(name, config.train.max_epochs * per_epoch, start, bs)
  stop = progress['bad_epochs'] >= config.train.patience
  t0, seconds0 = time.perf_counter(), progress.get('seconds', 0.0)
  runner = _Blocks(stage, constants, name, latest.directory)
  blocks = batches_lib.resumable_blocks(data.train, bs, stage.per_dispatch, seed=config.seed,
                                        start_step=start, max_epochs=config.train.max_epochs,
                                        sharding=stage.batch_sharding,
                                        row_offsets=_row_offsets(stage, data))
  with contextlib.closing(blocks):
    for block in () if stop else blocks:
      slot = block.start
      while slot < block.count:
        state, metrics, done = runner.run(state, block, slot, -1)
        step, loss = block.first + done, float(metrics['loss'][done - 1])
        for j in range(slot, done):
          if (block.first + j + 1) % config.train.log_every_steps == 0:
            writer.write(name, block.first + j + 1, loss=float(metrics['loss'][j]),
                         samples_per_second=bar.samples_per_second)
        bar.update(step, loss=f'{loss:.4f}')
        progress['seconds'] = seconds0 + time.perf_counter() - t0
        if block.epoch_end and done == block.count:
          state = stage.materialize(state)
          stop = _end_epoch(config, data, stage, state, constants, step, step // per_epoch - 1,
                            loss, progress, latest, best, writer, bar, name)
        elif _crossed(block.first + slot, step, config.train.checkpoint_every_steps):
          latest.save(step, state, progress)
        slot = done
      if stop:
        break
  bar.close()
  latest.close()

  if progress['best_epoch'] is None:
    raise RuntimeError(f'{name}: no epoch finished (train.max_epochs={config.train.max_epochs})')
  best_state, _ = best.restore(progress['best_epoch'], state)
  best.close()
  valid = evaluation.evaluate(stage, best_state, constants, data.valid)
  test = evaluation.evaluate(stage, best_state, constants, data.test)
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
  }


def _end_epoch(config, data, stage, state, constants, step, epoch, loss, progress, latest, best,
               writer, bar, name) -> bool:
  """Validates at the end of an epoch, saves ``best``/``latest``; True once patience is spent."""
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
  bar.update(step, loss=f'{loss:.4f}', valid_auc=f'{valid["auc"]:.4f}')
  return progress['bad_epochs'] >= config.train.patience


def finish(run_dir: str, result: dict) -> dict:
  """Writes ``run_dir/result.json`` (the run's done marker) without the state; returns it."""
  result = {k: v for k, v in result.items() if k != 'best_state'}
  write_json(os.path.join(run_dir, 'result.json'), result)
  return result
