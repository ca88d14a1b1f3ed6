"""Retraining: each PEP ticket from its rewound initial values, and the uniform baseline.

A ticket is retrained as ``V0 * mask`` with the mask held (lottery-ticket rewinding; every
other parameter is rewound to its initial value too), or, with ``retrain.init='random'``, from
a fresh random table times the mask. Every epoch ends with a validation pass; the best
validation state is kept, training stops after ``train.patience`` epochs without improvement,
and the test split is scored once, with the best state. (The public code selects on the test
split; selecting on validation is the honest protocol.)
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from pep_jax.data import pipeline
from pep_jax.data.base import CTRDataset
from pep_jax.layers.embedding import xavier_table_init
from pep_jax.train import loop
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.logging import MetricWriter, Progress
from pep_jax.train.prune import find_tickets, load_ticket_mask
from pep_jax.train.setup import Stage, build_stage, write_json


def train_to_best(config, data: CTRDataset, stage: Stage, state, constants: dict, run_dir: str,
                  name: str, writer: MetricWriter) -> dict:
  """Trains with early stopping on validation AUC; returns the best state's metrics.

  Resumable: ``run_dir/latest`` holds the newest state with the validation history,
  ``run_dir/best`` the best one; ``run_dir/result.json`` marks the run finished.
  """
  latest = Checkpointer(os.path.join(run_dir, 'latest'), max_to_keep=2)
  best = Checkpointer(os.path.join(run_dir, 'best'), max_to_keep=1)
  progress = {'history': [], 'best_epoch': None, 'best_valid_auc': None, 'bad_epochs': 0}
  if latest.latest_step() is not None:
    state, progress = latest.restore(latest.latest_step(), state)
  bs, ebs = config.train.batch_size, config.train.eval_batch_size
  per_epoch = pipeline.num_batches(len(data.train), bs)
  start = int(state.step)
  bar = Progress(name, config.train.max_epochs * per_epoch, start, bs)
  stopped = progress['bad_epochs'] >= config.train.patience
  pending = None  # metrics of the previous step, read one step late

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
  nonzeros = int(stage.embedding_call(best_state, 'nonzeros', constants))
  result = {
      'nonzeros': nonzeros,
      'sparsity': 1.0 - nonzeros / stage.table_entries,
      'best_epoch': progress['best_epoch'],
      'epochs': len(progress['history']),
      'valid_auc': valid['auc'], 'valid_logloss': valid['logloss'],
      'test_auc': test['auc'], 'test_logloss': test['logloss'],
      'test_auc_batch_mean': test['auc_batch_mean'],
      'test_logloss_batch_mean': test['logloss_batch_mean'],
      'history': progress['history'],
  }
  write_json(os.path.join(run_dir, 'result.json'), result)
  return result


def _finished(run_dir: str) -> dict | None:
  path = os.path.join(run_dir, 'result.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def ticket_run_name(config, ticket: dict) -> str:
  """Folder of a ticket's retraining: ``pep_b<budget>``, or ``pep_random_b<budget>``."""
  prefix = 'pep' if config.retrain.init == 'rewind' else 'pep_random'
  return f'{prefix}_b{ticket["budget"]}'


def retrain_ticket(config, data: CTRDataset, workdir: str, ticket: dict,
                   writer: MetricWriter) -> dict:
  """Retrains one ticket (or returns its finished result)."""
  run_dir = os.path.join(workdir, 'retrain', ticket_run_name(config, ticket))
  done = _finished(run_dir)
  if done is None:
    stage = build_stage(config, data, 'masked')
    init = Checkpointer(os.path.join(workdir, 'init'), max_to_keep=None)
    if 0 not in init.steps():
      raise FileNotFoundError(f'{init.directory}/0 (the initial state V0) is missing: run the '
                              'prune stage first (config.stage=prune or all)')
    state = stage.initial_state()
    pep_target = build_stage(config, data, 'pep', mesh=stage.mesh).abstract_state()
    pep_state, _ = init.restore(0, pep_target)
    init.close()
    params = _rewind(state.params, pep_state.params)
    table = params['embedding']['table']
    if config.retrain.init == 'random':
      key = jax.random.PRNGKey(config.seed + 7919)
      fresh = xavier_table_init(stage.embedding.num_rows)
      params['embedding']['table'] = jax.jit(lambda k: fresh(k, table.shape),
                                             out_shardings=table.sharding)(key)
    elif config.retrain.init != 'rewind':
      raise ValueError(f"config key retrain.init: expected 'rewind' or 'random', got "
                       f'{config.retrain.init!r}')
    state = stage.with_params(state, params)
    mask = load_ticket_mask(workdir, ticket, jax.ShapeDtypeStruct(table.shape, jnp.bool_,
                                                                  sharding=stage.row_sharding))
    constants = {'ticket': {'embedding': {'mask': mask}}}
    done = train_to_best(config, data, stage, state, constants, run_dir,
                         f'retrain b{ticket["budget"]}', writer)
  method = 'pep' if config.retrain.init == 'rewind' else 'pep_random'
  return {'method': method, 'budget': ticket['budget'], 'ticket_nonzeros': ticket['nonzeros'],
          **_row(done)}


def _rewind(params: dict, initial: dict) -> dict:
  """``params`` with every leaf that also exists in ``initial`` taken from ``initial``."""
  out = {}
  for key, value in params.items():
    if isinstance(value, dict):
      out[key] = _rewind(value, initial.get(key, {}))
    else:
      out[key] = initial.get(key, value)
  return out


def train_uniform(config, data: CTRDataset, workdir: str, dim: int, writer: MetricWriter) -> dict:
  """The uniform-embedding (UE) baseline at width ``dim``."""
  run_dir = os.path.join(workdir, 'retrain', f'ue_d{dim}')
  done = _finished(run_dir)
  if done is None:
    stage = build_stage(config, data, 'plain', dim=dim)
    done = train_to_best(config, data, stage, stage.initial_state(), {}, run_dir,
                         f'ue d{dim}', writer)
  return {'method': 'ue', 'budget': None, 'dim': dim, **_row(done)}


def retrain_all(config, data: CTRDataset, workdir: str, writer: MetricWriter) -> list[dict]:
  """Retrains every finished ticket of the work directory."""
  tickets = find_tickets(workdir)
  if not tickets:
    raise FileNotFoundError(f'no tickets in {os.path.join(workdir, "tickets")}: run the prune '
                            'stage first (config.stage=prune or all)')
  return [retrain_ticket(config, data, workdir, t, writer) for t in tickets]


def _row(result: dict) -> dict:
  return {k: v for k, v in result.items() if k != 'history'}
