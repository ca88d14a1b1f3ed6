"""Random masks: the control that tells what choosing entries is worth.

For each budget ``b`` of ``random.budgets`` the mask keeps exactly ``b`` entries of the real
table ``[N, D]``, drawn uniformly without replacement (:func:`draw`: numpy's ``Generator``
seeded with ``(config.seed mod 2**32, b)``, so every budget and every seed has its own mask and
the same pair always the same one). It is retrained as a PEP ticket is: the masked model's
initial values with ``config.seed`` times the mask (these are the uniform model's initial
values, so the rewound magnitude tickets start from the same table under another mask).

A method that chooses its entries (PEP, SSEDS at feature granularity, magnitude pruning) is
worth its search only where it beats this control at the same count. Stored like every masked
table (``bitmask`` up to 32 dimensions, else ``csr``).

Work directory: ``random/search/0/`` (every budget's mask) and ``random/result.json``.
"""

from __future__ import annotations

import time

import numpy as np

from pep_jax import workdir as wd
from pep_jax.errors import ConfigError
from pep_jax.methods import magnitude
from pep_jax.methods.base import (SPARSE_LAYOUTS, Candidate, Context, Method,
                                  resolve_budgets)
from pep_jax.train.setup import Stage

NAME = 'random'
SEARCH = (NAME,)  # the search's folder (pep_jax.workdir.search_dir)


def draw(rows: int, dim: int, budget: int, seed: int) -> np.ndarray:
  """A mask of exactly ``budget`` of the ``rows * dim`` entries, uniform without replacement.

  ``np.random.default_rng((seed mod 2**32, budget)).choice(rows * dim, budget,
  replace=False)``: positions in the row-major table.

  Returns:
    bool ``[rows, dim]``.
  """
  rng = np.random.default_rng((int(seed) % 2 ** 32, int(budget)))
  keep = np.zeros(rows * dim, bool)
  keep[rng.choice(rows * dim, size=int(budget), replace=False)] = True
  return keep.reshape(rows, dim)


def check(ctx: Context) -> None:
  if not ctx.config.random.budgets:
    raise ConfigError('config key random.budgets: give at least one budget')
  resolve_budgets(ctx.config.random.budgets, ctx.table_entries, 'random.budgets')


def search(ctx: Context) -> None:
  """Draws and writes each budget's mask; skipped once finished."""
  if wd.search_result(ctx.workdir, *SEARCH) is not None:
    return
  config = ctx.config
  budgets = resolve_budgets(config.random.budgets, ctx.table_entries, 'random.budgets')
  start = time.perf_counter()
  masks = {f'b{b}': draw(ctx.data.num_features, int(config.embedding.dim), b, config.seed)
           for b in budgets}
  seconds = time.perf_counter() - start
  magnitude.save_masks(ctx, SEARCH, masks)
  wd.finish_search(ctx.workdir, SEARCH, {'budgets': budgets, 'seed': int(config.seed),
                                         'draw_seconds': seconds})


def candidates(ctx: Context) -> list[Candidate]:
  result = magnitude.search_result(ctx, SEARCH, 'random-mask')
  return [Candidate(NAME, wd.run_name(NAME, f'b{b}'), f'b{b}',
                    report={'budget': b, 'search_seconds': result['draw_seconds']},
                    info={'budget': b})
          for b in result['budgets']]


def _mask(ctx: Context, cand: Candidate) -> np.ndarray:
  budgets = magnitude.search_result(ctx, SEARCH, 'random-mask')['budgets']
  return magnitude.load_mask(ctx, SEARCH, budgets, cand.info['budget'])


def initial(ctx: Context, cand: Candidate, stage: Stage):
  """The masked model's initial state (``config.seed``); the mask as a constant."""
  return stage.initial_state(), magnitude.ticket(stage, _mask(ctx, cand))


def size(ctx: Context, cand: Candidate, stage: Stage, state, constants) -> dict:
  """Non-zero entries of the retrained table (the budget, unless a kept entry is exactly 0)."""
  return magnitude.masked_size(ctx, _mask(ctx, cand), stage, state, constants)


METHOD = Method(
    name=NAME, labels={NAME: 'random mask'}, check=check, search=search,
    candidates=candidates, build=magnitude.build_masked, initial=initial, size=size,
    compact=magnitude.masked_compact, layouts=SPARSE_LAYOUTS)
