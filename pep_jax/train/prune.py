"""The prune stage: train with PEP's thresholds and write a ticket at each budget.

The non-zero count of the table is computed inside the train step and read every step: a
ticket is the mask of the *first* step whose count is at or under a budget, so the loop needs
the count before the next step overwrites (donates) the state. The stage ends when every
budget has its ticket or at ``prune.max_epochs``; budgets it could not reach are reported
(with a sigmoid gate a threshold never exceeds 1, so the count can plateau above a budget).
Beside each mask the whole pruning state of that step is kept (``tickets/b<budget>/state``),
so a ticket can also be scored as it is, without retraining.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from pep_jax.data import pipeline
from pep_jax.data.base import CTRDataset
from pep_jax.ops import threshold as th
from pep_jax.train import loop
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.logging import MetricWriter, Progress
from pep_jax.train.setup import Stage, build_stage, write_json


def resolve_budgets(budgets, table_entries: int) -> list[int]:
  """Budgets as absolute non-zero counts, largest first.

  A budget ``<= 1`` is a fraction of the table's entries; a larger one an absolute count.

  Raises:
    ValueError: naming ``prune.budgets``, for a budget outside ``(0, table_entries]``.
  """
  out = []
  for b in budgets:
    count = int(round(b * table_entries)) if b <= 1 else int(b)
    if count <= 0 or count > table_entries:
      raise ValueError(f'config key prune.budgets: budget {b} means {count} non-zeros, outside '
                       f'1..{table_entries} (the table has {table_entries} entries)')
    out.append(count)
  return sorted(set(out), reverse=True)


def ticket_dir(workdir: str, budget: int) -> str:
  return os.path.join(workdir, 'tickets', f'b{budget}')


def ticket_state_dir(workdir: str, budget: int) -> str:
  """The pruned model's whole state at the ticket's step (scored as it is, without retraining)."""
  return os.path.join(ticket_dir(workdir, budget), 'state')


def find_tickets(workdir: str) -> list[dict]:
  """Metadata of every finished ticket of a work directory, largest budget first."""
  root = os.path.join(workdir, 'tickets')
  found = []
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    path = os.path.join(root, name, 'ticket.json')
    if os.path.exists(path):
      with open(path) as f:
        found.append(json.load(f))
  return sorted(found, key=lambda t: -t['budget'])


def load_ticket_mask(workdir: str, ticket: dict, target) -> np.ndarray:
  """The mask array of a ticket, restored into ``target`` (shape and sharding)."""
  ckpt = Checkpointer(ticket_dir(workdir, ticket['budget']), max_to_keep=None)
  state, _ = ckpt.restore(ticket['step'], {'mask': target})
  ckpt.close()
  return state['mask']


def field_size_totals(stage: Stage, mask, field_dims) -> np.ndarray:
  """Sum of the embedding sizes of each field's features ``[F]`` (padding rows excluded).

  Computed where the mask lives (split by rows over the mesh); only ``F`` numbers come back.
  """
  num_rows, num_fields = stage.embedding.num_rows, len(field_dims)

  def totals(mask):
    rows = mask.shape[0]
    sizes = jnp.where(jnp.arange(rows) < num_rows, th.row_sizes(mask), 0)  # [rows]
    return jax.ops.segment_sum(sizes, th.row_fields(field_dims, rows), num_segments=num_fields)

  return np.asarray(jax.jit(totals, out_shardings=stage.shardings.replicated)(mask))


def _write_ticket(stage: Stage, state, workdir: str, budget: int, nonzeros: int, step: int,
                  epoch: int, data: CTRDataset) -> dict:
  mask = stage.embedding_call(state, 'mask')
  sizes = field_size_totals(stage, mask, data.field_dims) / np.asarray(data.field_dims)
  meta = {
      'budget': budget, 'nonzeros': nonzeros, 'step': step, 'epoch': epoch,
      'table_entries': stage.table_entries,
      'sparsity': 1.0 - nonzeros / stage.table_entries,
      'field_mean_size': [float(x) for x in sizes],
      'field_names': list(data.field_names),
  }
  ckpt = Checkpointer(ticket_dir(workdir, budget), max_to_keep=None)
  ckpt.save(step, {'mask': mask}, meta)
  ckpt.close()
  pruned = Checkpointer(ticket_state_dir(workdir, budget), max_to_keep=None)
  pruned.save(step, state)
  pruned.close()
  # ticket.json marks the ticket as finished; written only once the mask is on disk.
  write_json(os.path.join(ticket_dir(workdir, budget), 'ticket.json'), meta)
  return meta


def run_prune(config, data: CTRDataset, workdir: str, writer: MetricWriter) -> dict:
  """Runs (or resumes, or skips when finished) the prune stage; returns its result."""
  result_path = os.path.join(workdir, 'prune', 'result.json')
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)
  stage = build_stage(config, data, 'pep')
  budgets = resolve_budgets(config.prune.budgets, stage.table_entries)
  state = stage.initial_state_saved(os.path.join(workdir, 'init'))

  ckpt_dir = os.path.join(workdir, 'prune', 'checkpoints')
  ckpt = Checkpointer(ckpt_dir, max_to_keep=2)
  latest = ckpt.latest_step()
  if latest is not None:
    state, _ = ckpt.restore(latest, state)
  start = int(state.step)
  done = {t['budget']: t for t in find_tickets(workdir)}
  remaining = [b for b in budgets if b not in done]

  bs = config.train.batch_size
  per_epoch = pipeline.num_batches(len(data.train), bs)
  progress = Progress('prune', config.prune.max_epochs * per_epoch, start, bs)
  nonzeros = None
  batches = loop.resumable_batches(data.train, bs, seed=config.seed, start_step=start,
                                   max_epochs=config.prune.max_epochs,
                                   sharding=stage.batch_sharding)
  for step, epoch_end, batch in batches if remaining else ():
    state, metrics = stage.train_step(state, batch, {})
    nonzeros, loss = int(metrics['nonzeros']), float(metrics['loss'])
    loop.check_loss(loss, 'prune', step, ckpt_dir)
    while remaining and nonzeros <= remaining[0]:
      budget = remaining.pop(0)
      done[budget] = _write_ticket(stage, state, workdir, budget, nonzeros, step,
                                   (step - 1) // per_epoch, data)
      writer.write('prune', step, ticket_budget=budget, ticket_nonzeros=nonzeros)
    if step % config.train.log_every_steps == 0 or epoch_end:
      writer.write('prune', step, loss=loss, nonzeros=nonzeros,
                   samples_per_second=progress.samples_per_second)
      progress.update(step, loss=f'{loss:.4f}', nonzeros=nonzeros)
    if step % config.prune.checkpoint_every_steps == 0 or epoch_end:
      ckpt.save(step, state)
    if not remaining:
      break
  ckpt.save(int(state.step), state)
  ckpt.close()
  progress.close()
  if nonzeros is None:
    nonzeros = int(stage.embedding_call(state, 'nonzeros'))
  result = {
      'steps': int(state.step), 'final_nonzeros': nonzeros,
      'table_entries': stage.table_entries,
      'budgets': budgets,
      'reached': sorted(done),
      'unreached': [b for b in budgets if b not in done],
  }
  if result['unreached'] and jax.process_index() == 0:
    print(f'prune: budgets {result["unreached"]} not reached within prune.max_epochs='
          f'{config.prune.max_epochs} (non-zeros at the end: {nonzeros}); raise the cap, '
          'raise embedding.s_init or choose larger budgets.')
  write_json(result_path, result)
  return result
