"""UE: uniform embeddings, every feature ``d`` entries, at each width of ``ue.dims``.

No search. SSEDS pre-trains its base model as the UE run at ``embedding.dim`` and reuses it when
it is finished (:func:`candidate`). Stored as the dense table of its real rows.
"""

from __future__ import annotations

from pep_jax import workdir as wd
from pep_jax.errors import ConfigError
from pep_jax.layers import compact as compact_lib
from pep_jax.methods.base import (Candidate, Compact, Context, Method, embedding_arrays,
                                  no_search)
from pep_jax.train.setup import Stage, build_stage

NAME = 'ue'


def candidate(dim: int) -> Candidate:
  """The uniform model of width ``dim``."""
  return Candidate(NAME, wd.run_name(NAME, f'd{int(dim)}'), f'd={int(dim)}',
                   report={'dim': int(dim), 'search_seconds': 0.0}, info={'dim': int(dim)})


def candidates(ctx: Context) -> list[Candidate]:
  return [candidate(d) for d in ctx.config.ue.dims]


def build(ctx: Context, cand: Candidate) -> Stage:
  return build_stage(ctx.config, ctx.data, 'plain', dim=cand.info['dim'])


def initial(ctx: Context, cand: Candidate, stage: Stage):
  del ctx, cand
  return stage.initial_state(), {}


def size(ctx: Context, cand: Candidate, stage: Stage, state, constants) -> dict:
  del stage, state, constants
  dim = cand.info['dim']
  return {'params': ctx.data.num_features * dim,
          'field_mean_size': [float(dim)] * ctx.data.num_fields}


def compact(ctx: Context, cand: Candidate, stage: Stage, state, constants,
            layout: str | None) -> Compact:
  """The table's real rows, dense."""
  del cand, layout
  params, _ = embedding_arrays(stage, state, constants)
  return Compact('dense', compact_lib.encode_dense(params['table'][:ctx.data.num_features]))


def check(ctx: Context) -> None:
  if any(int(d) <= 0 for d in ctx.config.ue.dims):
    raise ConfigError(f'config key ue.dims: widths must be positive, got {ctx.config.ue.dims}')


METHOD = Method(
    name=NAME, labels={NAME: 'UE'}, check=check, search=no_search, candidates=candidates,
    build=build, initial=initial, size=size, compact=compact,
    layouts={'dense': compact_lib.DENSE}, rows_mode=True, resumable_keys=('ue.dims',),
    floor=lambda config, field_dims: (1 / int(config.embedding.dim),
                                      'one entry per feature at d=1'))
