"""SSEDS: single-shot embedding dimension search (Qu et al., SIGIR 2022).

1. Pre-train the uniform model at ``embedding.dim`` to its best validation state: the UE run
   ``ue_d<dim>``, reused when the work directory already has it.
2. Put a mask ``alpha`` (all ones) on the looked-up embeddings, ``e~ = alpha * e``: shape
   ``[fields, d]`` (``sseds.granularity='field'``, the paper) or one entry per table entry
   (``'feature'``, PEP's own granularity).
3. Saliency ``|dL/d alpha|`` at ``alpha = 1`` in eval mode (no dropout, running batch
   statistics), averaged over ``sseds.score_batches`` training batches.
4. Rank every slot globally (no per-field quota) and keep the best ones under each budget of
   ``sseds.budgets``, counted in stored parameters (``sum_n d_n * vocab_n``;
   ``sseds.budget_unit='slots'`` counts kept slots instead). ``sseds.rank``: by saliency (the
   paper) or by saliency over the parameters the slot stores. ``sseds.fill``: a strict prefix
   of the ranking that fits (the first slot that does not fit ends it), or greedy (a slot that
   does not fit is skipped, later cheaper ones are still taken). A field may end with no
   dimension; ``sseds.min_width`` keeps each field's best columns first.
5. Retrain the slim model: ``align='pad'`` keeps the kept columns in place and zeros elsewhere
   (a masked table, no extra parameters); ``align='projection'`` gives field ``n`` a
   ``[vocab_n, d_n]`` table and a ``d_n -> d`` projection. It starts from fresh values
   (``init='reinit'``), from the pre-trained model (``'warm'``) or from the pre-trained model's
   initial values (``'rewind'``, as PEP's tickets).

Stored as: the kept columns of each field and a bit per (field, dimension) (``fieldcols``,
``align='pad'``, field granularity); the kept entries (``bitmask``/``csr``, feature
granularity); per-field tables and projections (``fieldwidth``, ``align='projection'``).

Work directory: ``sseds/search/0/`` (scores and every budget's mask) and ``sseds/result.json``
(the search's done marker with its cost: pre-training seconds, scoring seconds and passes).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from pep_jax import workdir as wd
from pep_jax.errors import ConfigError, MissingError
from pep_jax.layers import compact as compact_lib
from pep_jax.layers.embedding import FieldWidthEmbedding, PlainEmbedding
from pep_jax.methods import ue
from pep_jax.methods.base import (SPARSE_LAYOUTS, Candidate, Compact, Context, Method,
                                  embedding_arrays, field_means, fit_candidate, resolve_budgets,
                                  sparse_compact)
from pep_jax.ops import threshold as th
from pep_jax.sharding.host import to_host
from pep_jax.train.batches import resumable_batches
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.setup import REPLICATED, ROWS, Stage, build_stage, make_stage
from pep_jax.train.steps import weighted_bce

NAME = 'sseds'
GRANULARITIES = ('field', 'feature')
UNITS = ('params', 'slots')
ALIGNS = ('pad', 'projection')
INITS = ('reinit', 'warm', 'rewind')
RANKS = ('saliency', 'saliency_per_param')
FILLS = ('prefix', 'greedy')
REINIT_SEED_OFFSET = 104_729  # a fresh model's seed, away from the pre-trained model's


class ProbedEmbedding(PlainEmbedding):
  """A plain table whose looked-up rows are multiplied by a probe ``alpha`` (the SSEDS mask).

  ``alpha`` lives in the ``'probe'`` collection: ``[F, D]`` per (field, dimension), or
  ``[rows, D]`` per table entry. Its parameters are a :class:`PlainEmbedding`'s, so a uniform
  model's checkpoint restores into it.
  """

  granularity: str = 'field'

  def setup(self):
    super().setup()
    shape = ((len(self.field_dims), self.dim) if self.granularity == 'field'
             else (self.table_rows, self.dim))
    self.alpha = self.variable('probe', 'alpha', jnp.ones, shape)

  def __call__(self, ids: jax.Array) -> jax.Array:
    rows = super().__call__(ids)  # [B, F, D]
    if self.granularity == 'field':
      return rows * self.alpha.value[None]
    return rows * self.take(self.alpha.value, self.global_ids(ids))


def check(ctx: Context) -> None:
  c = ctx.config.sseds
  for key, value, allowed in (('granularity', c.granularity, GRANULARITIES),
                              ('budget_unit', c.budget_unit, UNITS),
                              ('align', c.align, ALIGNS), ('init', c.init, INITS),
                              ('rank', c.rank, RANKS), ('fill', c.fill, FILLS)):
    if value not in allowed:
      raise ConfigError(f'config key sseds.{key}: got {value!r}, expected one of {allowed}')
  if c.align == 'projection' and c.granularity != 'field':
    raise ConfigError("config key sseds.align: 'projection' needs sseds.granularity='field' "
                     '(a per-feature mask has no per-field width to project from)')
  if not c.score_batches >= 1:
    raise ConfigError(f'config key sseds.score_batches: must be at least 1, got '
                     f'{c.score_batches!r}')
  if not 0 <= c.min_width <= ctx.config.embedding.dim:
    raise ConfigError(f'config key sseds.min_width: must be in 0..embedding.dim='
                     f'{ctx.config.embedding.dim}, got {c.min_width!r}')
  resolve_budgets(c.budgets, _total(ctx), 'sseds.budgets')


def _slot_params(ctx: Context) -> np.ndarray:
  """Parameters one kept slot of each mask row ``[N]`` stores: its field's vocabulary, or 1."""
  if ctx.config.sseds.granularity == 'feature':
    return np.ones(ctx.data.num_features, np.int64)  # an entry is a parameter and a slot
  return np.asarray(ctx.data.field_dims, np.int64)


def _slot_costs(ctx: Context) -> np.ndarray:
  """Cost of one kept slot of each mask row ``[N]`` in the budget's unit."""
  if ctx.config.sseds.budget_unit == 'slots' and ctx.config.sseds.granularity == 'field':
    return np.ones(ctx.data.num_fields, np.int64)
  return _slot_params(ctx)


def _total(ctx: Context) -> int:
  return int(_slot_costs(ctx).sum()) * int(ctx.config.embedding.dim)


def select(scores: np.ndarray, costs: np.ndarray, budget: int, min_width: int = 0,
           rank: str = 'saliency', fill: str = 'prefix',
           params: np.ndarray | None = None) -> np.ndarray:
  """The kept slots: the best-ranked ones that fit ``budget``.

  Slots are ordered by ``scores[n, j]`` (``rank='saliency'``) or by ``scores[n, j] /
  params[n]`` (``'saliency_per_param'``), best first, ties broken by position (row-major), so
  the result is deterministic. ``fill='prefix'`` keeps them in that order while the total cost
  fits and stops at the first one that does not; ``'greedy'`` skips a slot that does not fit
  the budget left and goes on down the order, so it keeps the prefix and possibly more.

  Args:
    scores: ``[N, D]`` saliency of every slot (rows: fields or features).
    costs: ``[N]`` cost of one slot of each row in the budget's unit (its vocabulary size, or 1).
    budget: the most the kept slots may cost in all.
    min_width: every row first keeps its ``min_width`` best-scored slots.
    rank: ``'saliency'`` or ``'saliency_per_param'``.
    fill: ``'prefix'`` or ``'greedy'``.
    params: ``[N]`` parameters one slot of each row stores, for ``'saliency_per_param'``;
      ``costs`` when None.

  Returns:
    bool ``[N, D]``.

  Raises:
    ConfigError: naming ``sseds.min_width`` when the forced slots alone exceed the budget.
    ValueError: for a ``rank`` or ``fill`` not in :data:`RANKS` or :data:`FILLS`.
  """
  if rank not in RANKS or fill not in FILLS:
    raise ValueError(f'rank={rank!r}, fill={fill!r}: expected one of {RANKS} and of {FILLS}')
  n, d = scores.shape
  slot_cost = np.repeat(costs, d)
  keep = np.zeros(n * d, bool)
  if min_width:
    best_in_row = np.argsort(-scores, axis=1, kind='stable')[:, :min_width]  # [N, m]
    keep[(np.arange(n)[:, None] * d + best_in_row).ravel()] = True
  spent = int(slot_cost[keep].sum())
  if spent > budget:
    raise ConfigError(f'config key sseds.min_width: keeping {min_width} dimension(s) in every '
                     f'field costs {spent}, more than the budget {budget} (sseds.budgets)')
  key = scores.ravel()
  if rank == 'saliency_per_param':
    key = key / np.repeat(costs if params is None else params, d)
  order = np.lexsort((np.arange(n * d), -key))  # best first, ties by position
  order = order[~keep[order]]
  if fill == 'prefix':
    fits = spent + np.cumsum(slot_cost[order]) <= budget
    count = int(np.argmin(fits)) if not fits.all() else len(order)
    keep[order[:count]] = True
    return keep.reshape(n, d)
  left = budget - spent
  cheapest = int(slot_cost.min()) if len(slot_cost) else 0
  for i in order:
    if left < cheapest:
      break
    if slot_cost[i] <= left:
      keep[i] = True
      left -= int(slot_cost[i])
  return keep.reshape(n, d)


def score_fn(stage: Stage):
  """``(alpha, state, batch) -> dL/d alpha`` in eval mode, jitted for the stage's mesh."""
  model = stage.model

  def grad(alpha, state, batch):
    def loss(a):
      variables = {'params': state.params, 'batch_stats': state.batch_stats,
                   'probe': {'embedding': {'alpha': a}}}
      logits = model.apply(variables, batch['ids'], batch['weights'], train=False)
      return weighted_bce(logits, batch['labels'], batch['weights'])
    return jax.grad(loss)(alpha)

  alpha_sharding = stage.shardings.constants['probe']['embedding']['alpha']
  return jax.jit(grad, in_shardings=(alpha_sharding, stage.shardings.state,
                                     stage.shardings.batch),
                 out_shardings=alpha_sharding)


def probe_stage(ctx: Context) -> Stage:
  config, data = ctx.config, ctx.data
  granularity = config.sseds.granularity

  def layer(row_multiple, mesh):
    return ProbedEmbedding(tuple(int(x) for x in data.field_dims), int(config.embedding.dim),
                           row_multiple, mesh, granularity=granularity)

  place = REPLICATED if granularity == 'field' else ROWS
  return make_stage(config, data, layer, constants={'probe': {'embedding': {'alpha': place}}})


def ones_alpha(ctx: Context, stage: Stage) -> jax.Array:
  """The probe's mask at 1 (``[F, D]`` or ``[table rows, D]``), placed as the stage keeps it."""
  config = ctx.config
  shape = stage.shardings.constants['probe']['embedding']['alpha']
  rows = ctx.data.num_fields if config.sseds.granularity == 'field' else stage.embedding.table_rows
  return jax.jit(lambda: jnp.ones((rows, config.embedding.dim)), out_shardings=shape)()


def saliency(ctx: Context, stage: Stage, state) -> np.ndarray:
  """Mean over ``sseds.score_batches`` training batches of ``|dL/d alpha|`` at alpha = 1.

  Returns:
    float64 ``[F, D]`` (field granularity) or ``[num_features, D]`` (feature granularity).
  """
  config = ctx.config
  alpha = ones_alpha(ctx, stage)
  grad = score_fn(stage)
  n = int(config.sseds.score_batches)
  per_epoch = -(-len(ctx.data.train) // config.train.batch_size)
  batches = resumable_batches(ctx.data.train, config.train.batch_size, seed=config.seed,
                              start_step=0, max_epochs=-(-n // per_epoch),
                              sharding=stage.batch_sharding)
  total = None
  for _, (_, _, batch) in zip(range(n), batches):
    g = jnp.abs(grad(alpha, state, batch))
    total = g if total is None else total + g
  batches.close()  # stops the prefetching thread
  scores = np.asarray(total, np.float64) / n
  return scores[:ctx.data.num_features] if config.sseds.granularity == 'feature' else scores


SEARCH = (NAME,)  # the search's folder (pep_jax.workdir.search_dir)


def search(ctx: Context) -> None:
  """Pre-trains (or reuses) the base model, scores it once and writes each budget's mask."""
  if wd.search_result(ctx.workdir, *SEARCH) is not None:
    return
  config = ctx.config
  dim = int(config.embedding.dim)
  base = ue.candidate(dim)
  pretrained = fit_candidate(ctx, ue.METHOD, base)
  stage = probe_stage(ctx)
  state = wd.restore_best(ctx.workdir, base.run, stage.abstract_state())

  start = time.perf_counter()
  scores = saliency(ctx, stage, state)
  costs = _slot_costs(ctx)
  budgets = resolve_budgets(config.sseds.budgets, _total(ctx), 'sseds.budgets')
  c = config.sseds
  masks = {f'b{b}': select(scores, costs, b, int(c.min_width), c.rank, c.fill, _slot_params(ctx))
           for b in budgets}
  seconds = time.perf_counter() - start

  ckpt = Checkpointer(wd.search_dir(ctx.workdir, *SEARCH, 'search'), max_to_keep=None)
  ckpt.save(0, {'scores': scores, 'masks': masks})
  ckpt.close()
  result = {
      'budgets': budgets, 'unit': config.sseds.budget_unit,
      'granularity': config.sseds.granularity, 'rank': c.rank, 'fill': c.fill,
      'cost': {b: int((masks[f'b{b}'] * costs[:, None]).sum()) for b in budgets},
      'pretrain_run': base.run, 'pretrain_seconds': pretrained['train_seconds'],
      'score_seconds': seconds, 'score_passes': int(config.sseds.score_batches),
  }
  wd.finish_search(ctx.workdir, SEARCH, result)


def _result(ctx: Context) -> dict:
  result = wd.search_result(ctx.workdir, *SEARCH)
  if result is None:
    raise MissingError(f'{wd.search_dir(ctx.workdir, *SEARCH)}/{wd.RESULT} is missing: run the '
                       'SSEDS search first (config.stage=search or all)')
  return result


def candidates(ctx: Context) -> list[Candidate]:
  result = _result(ctx)
  seconds = result['pretrain_seconds'] + result['score_seconds']
  return [Candidate(NAME, wd.run_name(NAME, f'b{b}'), f'b{b}',
                    report={'budget': b, 'search_seconds': seconds,
                            'score_seconds': result['score_seconds'],
                            'score_passes': result['score_passes']},
                    info={'budget': b})
          for b in result['budgets']]


def load_mask(ctx: Context, budget: int) -> np.ndarray:
  """The kept slots of a budget: bool ``[F, D]`` or ``[num_features, D]``."""
  result = _result(ctx)
  ckpt = Checkpointer(wd.search_dir(ctx.workdir, *SEARCH, 'search'), max_to_keep=None)
  rows = ctx.data.num_fields if result['granularity'] == 'field' else ctx.data.num_features
  shape = (rows, int(ctx.config.embedding.dim))
  target = {'scores': np.zeros(shape, np.float64),
            'masks': {f'b{b}': np.zeros(shape, bool) for b in result['budgets']}}
  state, _ = ckpt.restore(0, target)
  ckpt.close()
  return np.asarray(state['masks'][f'b{budget}'])


def widths(mask: np.ndarray) -> list[int]:
  """Kept dimensions of each field of a field-granularity mask."""
  return [int(x) for x in mask.sum(axis=1)]


def build(ctx: Context, cand: Candidate) -> Stage:
  if ctx.config.sseds.align == 'pad':
    return build_stage(ctx.config, ctx.data, 'masked')
  kept = tuple(widths(load_mask(ctx, cand.info['budget'])))
  dims = tuple(int(x) for x in ctx.data.field_dims)
  return make_stage(ctx.config, ctx.data, lambda rm, mesh: FieldWidthEmbedding(
      dims, int(ctx.config.embedding.dim), kept, rm, mesh))


def _row_mask(ctx: Context, mask: np.ndarray, stage: Stage) -> jax.Array:
  """The kept slots as a table-shaped mask ``[table_rows, D]``, split like the table."""
  table_rows = stage.embedding.table_rows
  if ctx.config.sseds.granularity == 'feature':
    full = np.zeros((table_rows, mask.shape[1]), bool)
    full[:len(mask)] = mask
    return jax.device_put(full, stage.row_sharding)
  field_mask = jnp.asarray(mask)
  num_rows = stage.embedding.num_rows

  def expand():
    rows = th.row_fields(ctx.data.field_dims, table_rows)
    real = jnp.arange(table_rows) < num_rows
    return field_mask[rows] & real[:, None]

  return jax.jit(expand, out_shardings=stage.row_sharding)()


def _uniform_start(ctx: Context, init: str):
  """The uniform model's state to start from: trained (``warm``) or initial (``rewind``)."""
  plain = build_stage(ctx.config, ctx.data, 'plain')
  if init == 'rewind':
    return plain.initial_state()
  return wd.restore_best(ctx.workdir, _result(ctx)['pretrain_run'], plain.abstract_state())


def _projected(params: dict, table: np.ndarray, field_mask: np.ndarray, field_dims) -> dict:
  """Per-field tables and projections that reproduce ``table * mask`` exactly.

  Field ``n`` keeps the kept columns of its rows; its projection scatters them back to their
  positions (rows of the identity), so the slim model starts as the masked one.
  """
  out = dict(params)
  offsets = np.concatenate([[0], np.cumsum(field_dims)])
  dim = field_mask.shape[1]
  for n, keep in enumerate(field_mask):
    cols = np.flatnonzero(keep)
    if len(cols):
      out[f'field_{n}'] = jnp.asarray(table[offsets[n]:offsets[n + 1]][:, cols])
      out[f'proj_{n}'] = jnp.asarray(np.eye(dim, dtype=np.float32)[cols])
  return out


def initial(ctx: Context, cand: Candidate, stage: Stage):
  config = ctx.config
  mask = load_mask(ctx, cand.info['budget'])
  pad = config.sseds.align == 'pad'
  if config.sseds.init == 'reinit':
    state = stage.initial_state(seed=config.seed + REINIT_SEED_OFFSET)
  else:
    start = _uniform_start(ctx, config.sseds.init)
    params = start.params
    if not pad:
      table = to_host(params['embedding']['table'])  # whole, also across processes
      params = {**params, 'embedding': _projected(stage.initial_state().params['embedding'],
                                                  table, mask, ctx.data.field_dims)}
    state = stage.with_params(stage.initial_state(), params)
    state = state.replace(batch_stats=start.batch_stats)
  if not pad:
    return state, {}
  return state, {'ticket': {'embedding': {'mask': _row_mask(ctx, mask, stage)}}}


def size(ctx: Context, cand: Candidate, stage: Stage, state, constants) -> dict:
  """Kept entries (feature granularity) or kept columns times vocabularies, projections
  included."""
  del stage, state, constants
  mask = load_mask(ctx, cand.info['budget'])
  if ctx.config.sseds.granularity == 'feature':
    return {'params': int(mask.sum()),
            'field_mean_size': field_means(mask.sum(axis=1), ctx.data.field_dims)}
  kept = np.asarray(widths(mask))
  params = int((kept * np.asarray(ctx.data.field_dims, np.int64)).sum())
  if ctx.config.sseds.align == 'projection':
    params += int(kept.sum()) * int(ctx.config.embedding.dim)  # a d_n x d projection per field
  return {'params': params, 'field_mean_size': [float(k) for k in kept]}


def compact(ctx: Context, cand: Candidate, stage: Stage, state, constants,
            layout: str | None) -> Compact:
  """``fieldcols`` (pad, field), the kept entries (pad, feature) or ``fieldwidth``."""
  c = ctx.config.sseds
  if c.align == 'projection':
    params, _ = embedding_arrays(stage, state, constants)
    return Compact('fieldwidth', compact_lib.encode_fieldwidth(params))
  if c.granularity == 'feature':
    return sparse_compact(ctx, stage, state, constants, layout)
  params, _ = embedding_arrays(stage, state, constants)
  table = params['table'][:ctx.data.num_features]
  mask = load_mask(ctx, cand.info['budget'])
  return Compact('fieldcols', compact_lib.encode_fieldcols(table, mask, ctx.data.field_dims))


METHOD = Method(
    name=NAME, labels={NAME: 'SSEDS'}, check=check, search=search, candidates=candidates,
    build=build, initial=initial, size=size, compact=compact,
    layouts={**SPARSE_LAYOUTS, 'fieldcols': compact_lib.FIELDCOLS,
             'fieldwidth': compact_lib.FIELDWIDTH})
