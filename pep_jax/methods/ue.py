"""UE: uniform embeddings, every feature ``d`` entries, at each width of ``ue.dims``.

No search. SSEDS pre-trains its base model as the UE run at ``embedding.dim`` and reuses it when
it is finished (:func:`train_base`).
"""

from __future__ import annotations

from pep_jax.methods.base import Candidate, Context, dense_bytes
from pep_jax.train.setup import Stage, build_stage

NAME = 'ue'


def run_name(dim: int) -> str:
  return f'ue_d{int(dim)}'


def candidate(dim: int) -> Candidate:
  return Candidate(NAME, run_name(dim), f'd={int(dim)}',
                   report={'dim': int(dim), 'search_seconds': 0.0}, info={'dim': int(dim)})


def candidates(ctx: Context, search: bool = True) -> list[Candidate]:
  del search  # nothing to search
  return [candidate(d) for d in ctx.config.ue.dims]


def build(ctx: Context, cand: Candidate) -> Stage:
  return build_stage(ctx.config, ctx.data, 'plain', dim=cand.info['dim'])


def initial(ctx: Context, cand: Candidate, stage: Stage):
  del ctx, cand
  return stage.initial_state(), {}


def account(ctx: Context, cand: Candidate, stage: Stage, state, constants) -> dict:
  del stage, state, constants
  dim = cand.info['dim']
  params = ctx.data.num_features * dim
  return {'params': params, 'bytes': dense_bytes(params),
          'field_mean_size': [float(dim)] * ctx.data.num_fields}


def check(ctx: Context) -> None:
  if any(int(d) <= 0 for d in ctx.config.ue.dims):
    raise ValueError(f'config key ue.dims: widths must be positive, got {ctx.config.ue.dims}')
