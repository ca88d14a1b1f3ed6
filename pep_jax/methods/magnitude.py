"""Magnitude pruning: the largest entries of a trained uniform table, retrained under a mask.

The baseline every learned selection must beat: no thresholds, no saliency, only ``|v|``.

1. Pre-train the uniform model at ``embedding.dim`` to its best validation state: the UE run
   ``ue_d<dim>``, reused when the work directory already has it (as SSEDS reuses it).
2. For each budget ``b`` of ``magnitude.budgets`` keep exactly ``b`` entries of its real table
   ``V [N, D]``, those of largest ``|v|`` (:func:`select`):

   * ``magnitude.scope='global'``: the first ``b`` entries of one ranking of the whole table;
   * ``'field'``: field ``f`` keeps its own best ``q_f`` entries, ``q_f`` its share of the
     budget in proportion to its entries (:func:`field_quotas`).

   Ties in ``|v|`` are broken by position, row-major (the earlier entry first), so the
   selection is that of ``np.argsort(-|V|.ravel(), kind='stable')``.
3. Retrain the masked table (:class:`pep_jax.layers.embedding.MaskedEmbedding`, as PEP's
   tickets): from the uniform model's initial values with ``config.seed`` times the mask
   (``magnitude.init='rewind'``, lottery-ticket rewinding: every other parameter is rewound
   too), or from its trained state (``'finetune'``: its trained values, batch statistics
   included, with a fresh optimizer state).

Stored as the retrained table's non-zero entries (``bitmask`` up to 32 dimensions, else
``csr``), like PEP's tickets.

Work directory: ``magnitude/search/0/`` (every budget's mask) and ``magnitude/result.json`` (the
search's done marker with its cost: pre-training and selection seconds). The random-mask control
(:mod:`pep_jax.methods.random`) stores and retrains its masks through the helpers here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import numpy as np

from pep_jax import workdir as wd
from pep_jax.errors import ConfigError, MissingError
from pep_jax.methods import ue
from pep_jax.methods.base import (SPARSE_LAYOUTS, Candidate, Compact, Context, Method,
                                  field_means, fit_candidate, resolve_budgets, sparse_compact)
from pep_jax.sharding.host import to_host
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.setup import Stage, build_stage

NAME = 'magnitude'
SCOPES = ('global', 'field')
INITS = ('rewind', 'finetune')


# ----------------------------------------------------------------------------- selection


def field_quotas(budget: int, sizes: Sequence[int]) -> np.ndarray:
  """Each field's share of ``budget`` in proportion to its entries, summing to ``budget``.

  With ``E_f`` entries in field ``f`` (``vocab_f * D``) and ``T = sum_f E_f``, field ``f``
  first gets ``floor(budget * E_f / T)``; the ``budget - sum_f floor(.)`` units left (fewer
  than ``F``) go one each to the fields of largest remainder ``budget * E_f mod T``, the
  earlier field first among equal remainders (the largest-remainder method, in exact integer
  arithmetic). So the quotas sum to ``budget`` exactly, and ``q_f <= E_f`` when
  ``budget <= T`` (a field only gets a unit above its floor when ``budget * E_f / T`` is not
  a whole number, hence below ``E_f``).

  Args:
    budget: entries to keep, ``0 <= budget <= T``.
    sizes: ``E_f``, the entries of each field ``[F]``.

  Returns:
    int64 ``[F]``, the fields' quotas.
  """
  budget, sizes = int(budget), [int(v) for v in sizes]
  total = sum(sizes)
  floors = [budget * v // total for v in sizes]
  remainders = [budget * v % total for v in sizes]
  left = budget - sum(floors)
  for f in sorted(range(len(sizes)), key=lambda f: (-remainders[f], f))[:left]:
    floors[f] += 1
  return np.asarray(floors, np.int64)


def _best(magnitudes: np.ndarray, count: int) -> np.ndarray:
  """Positions of the ``count`` largest values of a flat array, ties by position."""
  return np.argsort(-magnitudes, kind='stable')[:count]


def select(table: np.ndarray, budget: int, field_dims: Sequence[int],
           scope: str = 'global') -> np.ndarray:
  """The ``budget`` entries of largest ``|v|``: the kept entries of a magnitude ticket.

  ``global``: ``keep = top_budget(|V|)`` over all ``N * D`` entries. ``field``: field ``f``
  keeps the top ``q_f`` entries of its own rows, ``q_f`` from :func:`field_quotas` over the
  fields' entries ``vocab_f * D``. In both, ties in ``|v|`` go to the earlier entry in
  row-major order.

  Args:
    table: ``[N, D]`` the real rows of the trained table, fields one after another.
    budget: entries to keep, ``0 <= budget <= N * D``.
    field_dims: ``vocab_f`` of each field, ``sum = N``.
    scope: ``'global'`` or ``'field'``.

  Returns:
    bool ``[N, D]`` with exactly ``budget`` entries set.
  """
  magnitudes = np.abs(np.asarray(table))
  rows, dim = magnitudes.shape
  keep = np.zeros(rows * dim, bool)
  if scope == 'global':
    keep[_best(magnitudes.ravel(), budget)] = True
    return keep.reshape(rows, dim)
  if scope != 'field':
    raise ConfigError(f'config key magnitude.scope: got {scope!r}, expected one of {SCOPES}')
  entries = [int(v) * dim for v in field_dims]
  start = 0
  for size, quota in zip(entries, field_quotas(budget, entries)):
    # A field's rows are a contiguous block of the row-major table.
    keep[start + _best(magnitudes.ravel()[start:start + size], int(quota))] = True
    start += size
  return keep.reshape(rows, dim)


# ----------------------------------------------------------------------------- masks on disk
# Shared with the random-mask control: a search writes every budget's mask [N, D] at step 0 of
# a checkpoint folder in its search folder, then its result.json (the done marker).


def save_masks(ctx: Context, search: tuple[str, ...], masks: dict[str, np.ndarray]) -> None:
  """Writes ``{'b<budget>': bool [N, D]}`` to ``<search>/search/0`` (kept when it exists)."""
  ckpt = Checkpointer(wd.search_dir(ctx.workdir, *search, 'search'), max_to_keep=None)
  ckpt.save(0, {'masks': masks})
  ckpt.close()


def search_result(ctx: Context, search: tuple[str, ...], label: str) -> dict:
  """A finished search's ``result.json``.

  Raises:
    MissingError: naming the file, when the search has not finished.
  """
  result = wd.search_result(ctx.workdir, *search)
  if result is None:
    raise MissingError(f'{wd.search_dir(ctx.workdir, *search)}/{wd.RESULT} is missing: run '
                       f'the {label} search first (config.stage=search or all)')
  return result


def load_mask(ctx: Context, search: tuple[str, ...], budgets: Sequence[int],
              budget: int) -> np.ndarray:
  """The kept entries of one budget, bool ``[N, D]``, from a search of ``budgets``."""
  shape = (ctx.data.num_features, int(ctx.config.embedding.dim))
  ckpt = Checkpointer(wd.search_dir(ctx.workdir, *search, 'search'), max_to_keep=None)
  state, _ = ckpt.restore(0, {'masks': {f'b{b}': np.zeros(shape, bool) for b in budgets}})
  ckpt.close()
  return np.asarray(state['masks'][f'b{budget}'])


def ticket(stage: Stage, mask: np.ndarray) -> dict:
  """The masked layer's constants: ``mask [N, D]`` padded to the table's rows, split like it."""
  full = np.zeros((stage.embedding.table_rows, mask.shape[1]), bool)
  full[:len(mask)] = mask
  return {'ticket': {'embedding': {'mask': jax.device_put(full, stage.row_sharding)}}}


def build_masked(ctx: Context, cand: Candidate) -> Stage:
  """The masked table inside the configured model (PEP's retraining stage)."""
  del cand
  return build_stage(ctx.config, ctx.data, 'masked')


def masked_size(ctx: Context, mask: np.ndarray, stage: Stage, state, constants) -> dict:
  """Non-zero entries of the retrained ``table * mask`` and each field's mean kept width."""
  return {'params': int(stage.embedding_call(state, 'nonzeros', constants)),
          'field_mean_size': field_means(mask.sum(axis=1), ctx.data.field_dims)}


def masked_compact(ctx: Context, cand: Candidate, stage: Stage, state, constants,
                   layout: str | None) -> Compact:
  """The non-zero entries of ``table * mask`` (``bitmask``, or ``csr`` above 32 dimensions)."""
  del cand
  return sparse_compact(ctx, stage, state, constants, layout)


# ----------------------------------------------------------------------------- the method

SEARCH = (NAME,)  # the search's folder (pep_jax.workdir.search_dir)


def check(ctx: Context) -> None:
  c = ctx.config.magnitude
  for key, value, allowed in (('scope', c.scope, SCOPES), ('init', c.init, INITS)):
    if value not in allowed:
      raise ConfigError(f'config key magnitude.{key}: got {value!r}, expected one of {allowed}')
  if not c.budgets:
    raise ConfigError('config key magnitude.budgets: give at least one budget')
  resolve_budgets(c.budgets, ctx.table_entries, 'magnitude.budgets')


def search(ctx: Context) -> None:
  """Pre-trains (or reuses) the uniform model and writes each budget's mask; skipped once
  finished."""
  if wd.search_result(ctx.workdir, *SEARCH) is not None:
    return
  config = ctx.config
  base = ue.candidate(int(config.embedding.dim))
  pretrained = fit_candidate(ctx, ue.METHOD, base)
  plain = build_stage(config, ctx.data, 'plain')
  state = wd.restore_best(ctx.workdir, base.run, plain.abstract_state())

  start = time.perf_counter()
  table = to_host(state.params['embedding']['table'])  # whole, also across processes
  table = table[:ctx.data.num_features]
  budgets = resolve_budgets(config.magnitude.budgets, ctx.table_entries, 'magnitude.budgets')
  masks = {f'b{b}': select(table, b, ctx.data.field_dims, config.magnitude.scope)
           for b in budgets}
  seconds = time.perf_counter() - start

  save_masks(ctx, SEARCH, masks)
  wd.finish_search(ctx.workdir, SEARCH, {
      'budgets': budgets, 'scope': config.magnitude.scope, 'pretrain_run': base.run,
      'pretrain_seconds': pretrained['train_seconds'], 'select_seconds': seconds})


def candidates(ctx: Context) -> list[Candidate]:
  result = search_result(ctx, SEARCH, 'magnitude')
  seconds = result['pretrain_seconds'] + result['select_seconds']
  return [Candidate(NAME, wd.run_name(NAME, f'b{b}'), f'b{b}',
                    report={'budget': b, 'search_seconds': seconds}, info={'budget': b})
          for b in result['budgets']]


def _mask(ctx: Context, cand: Candidate) -> np.ndarray:
  budgets = search_result(ctx, SEARCH, 'magnitude')['budgets']
  return load_mask(ctx, SEARCH, budgets, cand.info['budget'])


def initial(ctx: Context, cand: Candidate, stage: Stage):
  """The uniform model's initial (``rewind``) or trained (``finetune``) state; the mask as a
  constant."""
  config = ctx.config
  plain = build_stage(config, ctx.data, 'plain', mesh=stage.mesh)
  if config.magnitude.init == 'rewind':
    start = plain.initial_state()
  else:
    run = search_result(ctx, SEARCH, 'magnitude')['pretrain_run']
    start = wd.restore_best(ctx.workdir, run, plain.abstract_state())
  state = stage.with_params(stage.initial_state(), start.params)
  state = state.replace(batch_stats=start.batch_stats)
  return state, ticket(stage, _mask(ctx, cand))


def size(ctx: Context, cand: Candidate, stage: Stage, state, constants) -> dict:
  """Non-zero entries of the retrained table (the budget, unless a kept entry is exactly 0)."""
  return masked_size(ctx, _mask(ctx, cand), stage, state, constants)


METHOD = Method(
    name=NAME, labels={NAME: 'magnitude'}, check=check, search=search, candidates=candidates,
    build=build_masked, initial=initial, size=size, compact=masked_compact,
    layouts=SPARSE_LAYOUTS)
