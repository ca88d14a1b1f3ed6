"""PEP: train with learnable thresholds, cut a ticket at each budget, retrain every ticket.

Search (the prune stage): the table is reparameterised as ``sign(V) relu(|V| - g(s))``
(:class:`pep_jax.layers.embedding.PEPEmbedding`) and trained; the non-zero count is computed in
the train step, because a ticket is the mask of the *first* step whose count is at or under a
budget: a block of steps halts on the device right after that step, so the ticket is cut from
exactly its state however many steps a call runs. The stage ends when every budget has its ticket or at
``prune.max_epochs``; budgets it could not reach are reported (with a sigmoid gate a threshold
never exceeds ``gate_scale``, so the count can plateau above a budget).

Retraining: ``V0 * mask`` with the mask held (lottery-ticket rewinding: every other parameter is
rewound to its initial value too), or, with ``retrain.init='random'``, a fresh random table times
the mask. Both ablations sit in one work directory (``pep_b<budget>``, ``pep_random_b<budget>``).

Stored as the retrained table's non-zero entries (``bitmask`` up to 32 dimensions, else
``csr``). Its search's folders (``init``, ``prune``, ``tickets``) are named by
:mod:`pep_jax.workdir`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pep_jax import workdir as wd
from pep_jax.data import pipeline
from pep_jax.errors import MissingError
from pep_jax.layers.embedding import xavier_table_init
from pep_jax.methods.base import (SPARSE_LAYOUTS, Candidate, Compact, Context, Method,
                                  resolve_budgets, sparse_compact)
from pep_jax.ops import threshold as th
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.fit import train_steps
from pep_jax.train.logging import say
from pep_jax.train.setup import Stage, build_stage

NAME = 'pep'
INITS = {'rewind': 'pep', 'random': 'pep_random'}  # retrain.init -> series and run prefix


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


def _write_ticket(ctx: Context, stage: Stage, state, budget: int, nonzeros: int,
                  step: int, epoch: int) -> dict:
  data = ctx.data
  if stage.materialize_fn is not None:  # rows mode: every row's missed decay applied first
    state = stage.materialize(state)
    nonzeros = int(stage.embedding_call(state, 'nonzeros'))
  mask = stage.embedding_call(state, 'mask')
  sizes = field_size_totals(stage, mask, data.field_dims) / np.asarray(data.field_dims)
  meta = {
      'budget': budget, 'nonzeros': nonzeros, 'step': step, 'epoch': epoch,
      'table_entries': stage.table_entries,
      'sparsity': 1.0 - nonzeros / stage.table_entries,
      'field_mean_size': [float(x) for x in sizes],
      'field_names': list(data.field_names),
  }
  ckpt = Checkpointer(wd.ticket_dir(ctx.workdir, budget), max_to_keep=None)
  ckpt.save(step, {'mask': mask}, meta)
  ckpt.close()
  pruned = Checkpointer(wd.ticket_state_dir(ctx.workdir, budget), max_to_keep=None)
  pruned.save(step, state)
  pruned.close()
  wd.write_ticket_meta(ctx.workdir, budget, meta)  # the ticket's done marker, written last
  return meta


def search(ctx: Context) -> None:
  """Runs (or resumes, or skips when finished) the prune stage."""
  run_prune(ctx)


def run_prune(ctx: Context) -> dict:
  """Runs (or resumes, or skips when finished) the prune stage; returns its result."""
  config, workdir = ctx.config, ctx.workdir
  done_result = wd.search_result(workdir, *wd.PRUNE)
  if done_result is not None:
    return done_result
  stage = build_stage(config, ctx.data, 'pep')
  budgets = resolve_budgets(config.prune.budgets, stage.table_entries, 'prune.budgets')
  state = stage.initial_state_saved(wd.initial_state_dir(workdir))
  done = {t['budget']: t for t in wd.find_tickets(workdir)}
  remaining = [b for b in budgets if b not in done]
  per_epoch = pipeline.num_batches(len(ctx.data.train), config.train.batch_size)
  last = {'nonzeros': None}

  def on_step(step, epoch_end, state, metrics) -> bool:
    del epoch_end
    last['nonzeros'] = nonzeros = int(metrics['nonzeros'])
    while remaining and nonzeros <= remaining[0]:
      budget = remaining.pop(0)
      done[budget] = _write_ticket(ctx, stage, state, budget, nonzeros, step,
                                   (step - 1) // per_epoch)
      ctx.writer.write('prune', step, ticket_budget=budget, ticket_nonzeros=nonzeros)
    return not remaining

  seconds, warmup = 0.0, (0, 0.0)
  if remaining:
    state, progress = train_steps(
        config, ctx.data, stage, state, {}, wd.prune_checkpoints(workdir),
        'prune', ctx.writer, max_epochs=config.prune.max_epochs,
        checkpoint_every=config.prune.checkpoint_every_steps, on_step=on_step,
        halt_at=lambda: remaining[0] if remaining else -1, log_keys=('nonzeros',))
    seconds = progress['seconds']
    warmup = (progress['warmup_steps'], progress['warmup_seconds'])
  nonzeros = last['nonzeros']
  if nonzeros is None:
    nonzeros = int(stage.embedding_call(state, 'nonzeros'))
  result = {
      'steps': int(state.step), 'final_nonzeros': nonzeros,
      'table_entries': stage.table_entries,
      'budgets': budgets,
      'reached': sorted(done),
      'unreached': [b for b in budgets if b not in done],
      'seconds': seconds,
      'warmup_steps': warmup[0], 'warmup_seconds': warmup[1],
  }
  if result['unreached'] and jax.process_index() == 0:
    say(f'prune: budgets {result["unreached"]} not reached within prune.max_epochs='
        f'{config.prune.max_epochs} (non-zeros at the end: {nonzeros}); raise the cap, '
        'raise embedding.s_init or embedding.gate_scale, or choose larger budgets.')
  return wd.finish_search(workdir, wd.PRUNE, result)


def run_name(init: str, budget: int) -> str:
  """Folder of a ticket's retraining: ``pep_b<budget>``, or ``pep_random_b<budget>``."""
  return wd.run_name(INITS[init], f'b{int(budget)}')


def candidates(ctx: Context) -> list[Candidate]:
  """One candidate per ticket, retrained as ``retrain.init`` says.

  The other initialisation's runs are included too where they finished (the re-initialisation
  ablation shares the work directory).
  """
  config = ctx.config
  result = wd.search_result(ctx.workdir, *wd.PRUNE)
  tickets = wd.find_tickets(ctx.workdir)
  if not tickets:
    if result is None:
      raise MissingError(f'no tickets in {wd.tickets_dir(ctx.workdir)}: run the prune '
                         'stage first (config.stage=search or all)')
    if jax.process_index() == 0:
      say(f'pep: no budget of {result["budgets"]} was reached (non-zeros at the end: '
          f'{result["final_nonzeros"]}), so there is no ticket to retrain.')
    return []
  seconds = (result or {}).get('seconds')
  out = []
  for init, method in INITS.items():
    for t in tickets:
      run = run_name(init, t['budget'])
      if init == config.retrain.init or wd.was_finished(ctx.workdir, run):
        out.append(Candidate(NAME, run, f'b{t["budget"]}',
                             report={'budget': t['budget'], 'ticket_nonzeros': t['nonzeros'],
                                     'search_seconds': seconds},
                             info={'init': init, 'ticket': t}, series=method))
  return out


def build(ctx: Context, cand: Candidate) -> Stage:
  del cand
  return build_stage(ctx.config, ctx.data, 'masked')


def initial(ctx: Context, cand: Candidate, stage: Stage):
  """``V0 * mask`` (rewind) or a fresh random table times the mask; the mask as a constant."""
  config = ctx.config
  init = Checkpointer(wd.initial_state_dir(ctx.workdir), max_to_keep=None)
  if 0 not in init.steps():
    raise MissingError(f'{init.directory}/0 (the initial state V0) is missing: run the prune '
                       'stage first (config.stage=search or all)')
  state = stage.initial_state()
  pep_target = build_stage(config, ctx.data, 'pep', mesh=stage.mesh).abstract_state()
  pep_state, _ = init.restore(0, pep_target)
  init.close()
  params = rewind(state.params, pep_state.params)
  table = params['embedding']['table']
  if cand.info['init'] == 'random':
    key = jax.random.PRNGKey(config.seed + 7919)
    fresh = xavier_table_init(stage.embedding.num_rows)
    params['embedding']['table'] = jax.jit(lambda k: fresh(k, table.shape),
                                           out_shardings=table.sharding)(key)
  state = stage.with_params(state, params)
  mask = wd.load_ticket_mask(ctx.workdir, cand.info['ticket'],
                          jax.ShapeDtypeStruct(table.shape, jnp.bool_,
                                               sharding=stage.row_sharding))
  return state, {'ticket': {'embedding': {'mask': mask}}}


def rewind(params: dict, initial_params: dict) -> dict:
  """``params`` with every leaf that also exists in ``initial_params`` taken from it."""
  out = {}
  for key, value in params.items():
    if isinstance(value, dict):
      out[key] = rewind(value, initial_params.get(key, {}))
    else:
      out[key] = initial_params.get(key, value)
  return out


def size(ctx: Context, cand: Candidate, stage: Stage, state, constants) -> dict:
  """Non-zero entries of the retrained table."""
  del ctx
  return {'params': int(stage.embedding_call(state, 'nonzeros', constants)),
          'field_mean_size': cand.info['ticket']['field_mean_size']}


def compact(ctx: Context, cand: Candidate, stage: Stage, state, constants,
            layout: str | None) -> Compact:
  """The non-zero entries of ``table * mask`` (as the masked layer computes it)."""
  del cand
  return sparse_compact(ctx, stage, state, constants, layout)


def search_stage(ctx: Context):
  """The pruning stage (thresholds trained, the count read every step)."""
  return build_stage(ctx.config, ctx.data, 'pep'), None


def check(ctx: Context) -> None:
  resolve_budgets(ctx.config.prune.budgets, ctx.table_entries, 'prune.budgets')


METHOD = Method(
    name=NAME, labels={'pep': 'PEP', 'pep_random': 'PEP, random re-init'}, check=check,
    search=search, candidates=candidates, build=build, initial=initial, size=size,
    compact=compact, layouts=SPARSE_LAYOUTS, search_stage=search_stage, rows_mode=True,
    resumable_keys=('retrain.init',),
    floor=lambda config, field_dims: (0.0, 'no budget in this band was given, or the pruning '
                                      'did not reach it within prune.max_epochs'))
