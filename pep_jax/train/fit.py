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

import os
import time
from collections.abc import Callable

from pep_jax.data import pipeline
from pep_jax.data.base import CTRDataset
from pep_jax.train import loop
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.logging import MetricWriter, Progress
from pep_jax.train.setup import Stage, write_json

# on_step(step, epoch_end, state, metrics) -> True to stop after this step.
StepCallback = Callable[[int, bool, object, dict], bool]


def train_steps(config, data: CTRDataset, stage: Stage, state, constants: dict, ckpt_dir: str,
                name: str, writer: MetricWriter, *, max_epochs: int, checkpoint_every: int,
                on_step: StepCallback, batch_map: Callable[[int, dict], dict] | None = None,
                log_keys: tuple[str, ...] = ()) -> tuple[object, dict]:
  """Trains from the newest checkpoint in ``ckpt_dir`` until ``on_step`` says stop.

  Args:
    on_step: called after every step with the metrics read back; it may write artefacts (they
      must be idempotent: a step replayed after a crash calls it again).
    batch_map: ``(step, batch) -> batch`` adds per-step inputs (e.g. validation rows).
    log_keys: metrics besides ``loss`` shown on the progress bar and logged.

  Returns:
    The final state and ``{'steps', 'seconds'}``.
  """
  ckpt = Checkpointer(ckpt_dir, max_to_keep=2)
  progress = {'seconds': 0.0}
  if ckpt.latest_step() is not None:
    state, progress = ckpt.restore(ckpt.latest_step(), state)
  bs = config.train.batch_size
  start = int(state.step)
  per_epoch = pipeline.num_batches(len(data.train), bs)
  bar = Progress(name, max_epochs * per_epoch, start, bs)
  t0, seconds0 = time.perf_counter(), progress['seconds']
  batches = loop.resumable_batches(data.train, bs, seed=config.seed, start_step=start,
                                   max_epochs=max_epochs, sharding=stage.batch_sharding)
  for step, epoch_end, batch in batches:
    if batch_map is not None:
      batch = batch_map(step, batch)
    state, metrics = stage.train_step(state, batch, constants)
    values = {k: float(metrics[k]) for k in ('loss',) + log_keys}
    loop.check_loss(values['loss'], name, step, ckpt.directory)
    stop = on_step(step, epoch_end, state, metrics)
    progress['seconds'] = seconds0 + time.perf_counter() - t0
    if step % config.train.log_every_steps == 0 or epoch_end:
      writer.write(name, step, **values, samples_per_second=bar.samples_per_second)
      bar.update(step, **{k: f'{v:.4f}' if k == 'loss' else f'{v:,.6g}'
                          for k, v in values.items()})
    if stop:
      break
    if step % checkpoint_every == 0 or epoch_end:
      ckpt.save(step, state, progress)
  ckpt.save(int(state.step), state, progress)
  ckpt.close()
  bar.close()
  return state, {'steps': int(state.step), 'seconds': progress['seconds']}


def train_to_best(config, data: CTRDataset, stage: Stage, state, constants: dict, run_dir: str,
                  name: str, writer: MetricWriter) -> dict:
  """Trains with early stopping on validation AUC; returns the best state's metrics.

  Resumable: ``run_dir/latest`` holds the newest state with the validation history,
  ``run_dir/best`` the best one; ``run_dir/result.json`` marks the run finished.

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
  bs, ebs = config.train.batch_size, config.train.eval_batch_size
  per_epoch = pipeline.num_batches(len(data.train), bs)
  start = int(state.step)
  bar = Progress(name, config.train.max_epochs * per_epoch, start, bs)
  stopped = progress['bad_epochs'] >= config.train.patience
  pending = None  # metrics of the previous step, read one step late
  t0, seconds0 = time.perf_counter(), progress.get('seconds', 0.0)

  batches = loop.resumable_batches(data.train, bs, seed=config.seed, start_step=start,
                                   max_epochs=config.train.max_epochs,
                                   sharding=stage.batch_sharding)
  for step, epoch_end, batch in () if stopped else batches:
    state, metrics = stage.train_step(state, batch, constants)
    if pending is not None:
      loss = float(pending['loss'])
      loop.check_loss(loss, name, step - 1, latest.directory)
      if (step - 1) % config.train.log_every_steps == 0:
        writer.write(name, step - 1, loss=loss, samples_per_second=bar.samples_per_second)
        bar.update(step - 1, loss=f'{loss:.4f}')
    pending = metrics
    if epoch_end:
      loss = float(pending['loss'])
      loop.check_loss(loss, name, step, latest.directory)
      pending = None
      valid = loop.evaluate(stage.eval_step, state, constants, data.valid, ebs,
                            stage.batch_sharding)
      epoch = step // per_epoch - 1
      progress['history'].append({'epoch': epoch, 'step': step, 'train_loss': loss,
                                  **{f'valid_{k}': v for k, v in valid.items()}})
      progress['seconds'] = seconds0 + time.perf_counter() - t0
      writer.write(name, step, **{f'valid_{k}': v for k, v in valid.items()})
      if progress['best_valid_auc'] is None or valid['auc'] > progress['best_valid_auc']:
        progress.update(best_epoch=epoch, best_valid_auc=valid['auc'], bad_epochs=0)
        best.save(epoch, state, progress)  # before `latest`, so a crash never loses the best
      else:
        progress['bad_epochs'] += 1
      latest.save(step, state, progress)
      bar.update(step, loss=f'{loss:.4f}', valid_auc=f'{valid["auc"]:.4f}')
      if progress['bad_epochs'] >= config.train.patience:
        break
    elif step % config.train.checkpoint_every_steps == 0:
      progress['seconds'] = seconds0 + time.perf_counter() - t0
      latest.save(step, state, progress)
  bar.close()
  latest.close()

  if progress['best_epoch'] is None:
    raise RuntimeError(f'{name}: no epoch finished (train.max_epochs={config.train.max_epochs})')
  best_state, _ = best.restore(progress['best_epoch'], state)
  best.close()
  valid = loop.evaluate(stage.eval_step, best_state, constants, data.valid, ebs,
                        stage.batch_sharding)
  test = loop.evaluate(stage.eval_step, best_state, constants, data.test, ebs,
                       stage.batch_sharding)
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


def finish(run_dir: str, result: dict) -> dict:
  """Writes ``run_dir/result.json`` (the run's done marker) without the state; returns it."""
  result = {k: v for k, v in result.items() if k != 'best_state'}
  write_json(os.path.join(run_dir, 'result.json'), result)
  return result
