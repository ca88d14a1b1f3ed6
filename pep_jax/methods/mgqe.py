"""Multi-granular quantized embeddings (MGQE, Kang et al. 2020), trained DPQ-style.

Every feature keeps a query vector ``q [D]`` while training. Split into ``S`` sub-vectors of
width ``D / S``, sub-vector ``s`` is replaced by the nearest of ``K`` centroids shared by all
features in subspace ``s``; frequent features may choose among all ``K`` centroids, rare ones only
among the first ``K_r`` (their code needs fewer bits). After training only the codes
``[rows, S]`` and the centroids ``[S, K, D / S]`` are stored.

The code choice has no gradient, so training follows VQ-VAE: the forward value is the chosen
centroid, the task gradient passes straight through to the query, and the centroids learn from
the codebook loss ``||sg(q) - c||^2``, with a commitment term ``beta ||q - sg(c)||^2`` pulling the
queries toward them.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pep_jax import workdir as wd
from pep_jax.errors import ConfigError
from pep_jax.layers import compact as compact_lib
from pep_jax.layers.embedding import field_offsets, padded_rows, xavier_table_init
from pep_jax.methods.base import (Candidate, Compact, Context, Method, embedding_arrays,
                                  no_search)
from pep_jax.sharding.lookup import take_rows
from pep_jax.train.setup import ROWS, Stage, make_stage

_CODE_CHUNK = 4096  # rows quantised at a time by codes(): distances [chunk, S, K]


def centroid_limits(counts: np.ndarray, num_centroids: int, frequent_fraction: float,
                    rare_centroids: int) -> np.ndarray:
  """How many centroids each feature may choose from, ``[rows] int32``.

  The ``round(frequent_fraction * rows)`` features with the highest counts (ties: lower row
  first) get ``num_centroids``; every other feature ``rare_centroids``.

  Args:
    counts: ``[rows]`` training-split occurrences of every feature, in global row order.
    num_centroids: ``K``.
    frequent_fraction: share of the features in the frequent tier, in ``[0, 1]``.
    rare_centroids: ``K_r``, ``1 <= K_r <= K``.
  """
  if num_centroids < 1:
    raise ConfigError(f'config key mgqe.centroids: must be >= 1, got {num_centroids}')
  if not 0.0 <= frequent_fraction <= 1.0:
    raise ConfigError(f'config key mgqe.frequent_fraction: must be in [0, 1], got '
                     f'{frequent_fraction}')
  if not 1 <= rare_centroids <= num_centroids:
    raise ConfigError(f'config key mgqe.rare_centroids: must be in [1, {num_centroids}], got '
                     f'{rare_centroids}')
  counts = np.asarray(counts, np.int64)
  order = np.argsort(-counts, kind='stable')  # most frequent first, ties by row
  limits = np.full(counts.shape[0], rare_centroids, np.int32)
  limits[order[:int(round(frequent_fraction * counts.shape[0]))]] = num_centroids
  return limits


def quantize(queries: jax.Array, centroids: jax.Array, limits: jax.Array) -> jax.Array:
  """Nearest allowed centroid of every sub-vector.

  ``code_s = argmin_{k < limit} ||q_s - c_{s,k}||^2`` (ties: the lower ``k``), the squared
  differences summed in order of the sub-vector's entries. The argmin is taken as the lowest
  ``k`` whose distance equals the minimum, two plain reductions that XLA:CPU vectorises where
  its arg-min reduction runs one element at a time; for finite distances it is ``jnp.argmin``.

  Args:
    queries: ``[..., D]`` query vectors, ``D = S * D_s``.
    centroids: ``[S, K, D_s]``.
    limits: ``[...]`` int, centroids each query may use (``1 <= limit <= K``).

  Returns:
    ``[..., S]`` int32 codes. Under ``jit`` the distances ``[..., S, K]`` are the one large
    intermediate: the sum over ``D_s`` is written out entry by entry, so each term is a
    ``[..., S, K]`` array with ``K`` minor (an XLA:CPU reduction over a minor axis of ``D_s``
    entries is not vectorised across ``K``).
  """
  num_subspaces, num_centroids, sub_dim = centroids.shape
  subs = queries.reshape(queries.shape[:-1] + (num_subspaces, sub_dim, 1))  # [..., S, D_s, 1]
  columns = jnp.transpose(centroids, (0, 2, 1))  # [S, D_s, K]
  dist = jnp.square(subs[..., 0, :] - columns[:, 0, :])  # [..., S, K]
  for d in range(1, sub_dim):
    dist = dist + jnp.square(subs[..., d, :] - columns[:, d, :])
  k = jnp.arange(num_centroids, dtype=jnp.int32)
  dist = jnp.where(k < limits[..., None, None], dist, jnp.inf)  # [..., S, K]
  nearest = jnp.min(dist, axis=-1, keepdims=True)  # [..., S, 1]
  return jnp.min(jnp.where(dist == nearest, k, num_centroids - 1), axis=-1)


def dequantize(centroids: jax.Array, codes: jax.Array) -> jax.Array:
  """The chosen centroids, concatenated: ``codes [..., S]`` -> ``[..., S * D_s]``."""
  num_subspaces = centroids.shape[0]
  chosen = centroids[jnp.arange(num_subspaces), codes]  # [..., S, D_s]
  return chosen.reshape(codes.shape[:-1] + (-1,))


class MGQEEmbedding(nn.Module):
  """Product-quantised embedding with per-feature centroid limits (multi-granular).

  Params: ``table [rows_padded, dim]`` (the queries, Xavier-uniform like every table here) and
  ``centroids [S, K, dim / S]``, initialised from the queries of ``K`` features spread evenly over
  the table (``k * rows // K``; with fewer features than centroids some start equal and the
  higher-numbered copy is never chosen). ``limit [rows_padded] int32`` (from
  :func:`centroid_limits`) lives in the ``'layout'`` collection.

  The forward value is exactly ``reconstruct(codes())[gid]``: a table of no more rows than the
  batch has lookups is quantised whole and the codes gathered, a larger one quantises the
  looked-up queries. The loss sown as
  ``'losses'/'vq'`` is

      mean over looked-up (row, entry) of (sg(q) - c)^2 + commitment * (q - sg(c))^2.

  Its weight is 1 (``commitment`` inside) on a mean over embedding *entries*, not a sum over
  them: the term is the per-entry squared quantisation error and does not grow with ``dim``.
  Xavier tables start with entry variance ``2 / (rows + dim)``, so at initialisation the term is
  far below 1e-2 of a logloss near ``log 2`` for any table of more than a few hundred features
  (tested on 20,000 rows), and the codebook part pushes it down as the centroids follow the
  queries. Under Adam the scale of the centroids' gradient, which comes only from this term,
  hardly matters: they still move at the learning rate. Nothing is sown while the layer is
  initialised.

  Attributes:
    field_dims: vocabulary size of each field.
    dim: width ``D``.
    num_subspaces: ``S``, divides ``dim``.
    num_centroids: ``K``, centroids per subspace.
    row_multiple: pad the query table's rows to a multiple of this.
    commitment: ``beta`` of the commitment term.
    mesh: the mesh whose ``'table'`` axis splits the query table's rows (None: one device).
  """

  field_dims: Sequence[int]
  dim: int
  num_subspaces: int
  num_centroids: int
  row_multiple: int = 1
  commitment: float = 0.25
  mesh: jax.sharding.Mesh | None = None

  @property
  def num_rows(self) -> int:
    return int(sum(self.field_dims))

  def setup(self):
    if self.num_subspaces < 1 or self.dim % self.num_subspaces:
      raise ConfigError(f'config key mgqe.subspaces: {self.num_subspaces} subspaces do not divide '
                       f'dim {self.dim}')
    if self.num_centroids < 1:
      raise ConfigError(f'config key mgqe.centroids: must be >= 1, got {self.num_centroids}')
    rows = padded_rows(self.num_rows, self.row_multiple)
    self.table = self.param('table', xavier_table_init(self.num_rows), (rows, self.dim))
    seeds = np.arange(self.num_centroids) * self.num_rows // self.num_centroids
    sub_dim = self.dim // self.num_subspaces

    def centroid_init(key, shape):
      del key
      first = self.table[seeds].reshape(self.num_centroids, self.num_subspaces, sub_dim)
      return jnp.transpose(first, (1, 0, 2)).reshape(shape)  # [S, K, D_s]

    self.centroids = self.param('centroids', centroid_init,
                                (self.num_subspaces, self.num_centroids, sub_dim))
    self.limit = self.variable('layout', 'limit', jnp.full, (rows,), self.num_centroids,
                               jnp.int32)  # every feature may use all K until the layout is given

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Per-field local ids ``[B, F]`` -> ``[B, F, dim]``; sows the VQ loss into ``'losses'``."""
    gids = ids + jnp.asarray(field_offsets(self.field_dims))[None, :]  # [B, F]
    query = take_rows(self.table, gids, self.mesh)  # [B, F, D]
    if self.table.shape[0] <= gids.size:
      # No more rows than lookups: every row quantised once (the same distances, fewer of
      # them), its codes gathered; on one device the padding rows are left out.
      split = self.mesh is not None and self.mesh.size > 1
      rows = self.table.shape[0] if split else self.num_rows
      every = quantize(jax.lax.stop_gradient(self.table[:rows]), self.centroids,
                       self.limit.value[:rows])
      codes = take_rows(every, gids, self.mesh)  # [B, F, S]
    else:
      limit = take_rows(self.limit.value, gids, self.mesh)  # [B, F]
      codes = quantize(jax.lax.stop_gradient(query), self.centroids, limit)  # [B, F, S]
    chosen = dequantize(self.centroids, codes)  # [B, F, D]
    codebook = jnp.mean(jnp.square(jax.lax.stop_gradient(query) - chosen))
    commit = jnp.mean(jnp.square(query - jax.lax.stop_gradient(chosen)))
    if not self.is_initializing():  # the loss of a step, not a variable to keep
      self.sow('losses', 'vq', codebook + self.commitment * commit)
    # Value: exactly the chosen centroids (q - sg(q) is 0); gradient: straight to the query.
    return jax.lax.stop_gradient(chosen) + (query - jax.lax.stop_gradient(query))

  def codes(self) -> jax.Array:
    """Codes of every real row, ``[rows, S]`` int32 (quantised in chunks of rows)."""
    queries = self.table[:self.num_rows]  # [rows, D]
    limits = self.limit.value[:self.num_rows]  # [rows]
    return jax.lax.map(lambda ql: quantize(ql[0], self.centroids, ql[1]), (queries, limits),
                       batch_size=_CODE_CHUNK)

  def reconstruct(self, codes: jax.Array) -> jax.Array:
    """The embeddings that ``codes [rows, S]`` stand for, ``[rows, dim]``."""
    return dequantize(self.centroids, codes)


def _bits(n: int) -> int:
  """Bits of an index into ``n`` values: ``ceil(log2(n))`` (0 for a single value)."""
  return (int(n) - 1).bit_length()


def accounting(num_rows: int, dim: int, num_subspaces: int, num_centroids: int,
               limits: np.ndarray) -> dict[str, int]:
  """Stored size of a trained MGQE embedding (the queries are dropped after training).

  ``params = K * dim + rows * S`` (centroid entries and codes); ``bytes`` counts float32
  centroids, each code in ``ceil(log2(limit_r))`` bits, and each feature's tier (which limit it
  has) in ``ceil(log2(number of distinct limits))`` bits, each bit stream rounded up to bytes,
  and one byte per tier for its bits per code: the ``codes`` layout of
  :mod:`pep_jax.layers.compact` that the artifact stores (the summary's bytes are that layout's).

  Args:
    num_rows: features ``rows``.
    dim: width ``D``.
    num_subspaces: ``S``.
    num_centroids: ``K``.
    limits: ``[rows]`` centroids each feature may use.
  """
  limits = np.asarray(limits)
  if limits.shape != (num_rows,):
    raise ValueError(f'mgqe accounting: limits has shape {limits.shape}, expected ({num_rows},)')
  code_bits = sum(num_subspaces * _bits(limit) * int(n)
                  for limit, n in zip(*np.unique(limits, return_counts=True)))
  tier_bits = num_rows * _bits(len(np.unique(limits)))
  params = num_centroids * dim + num_rows * num_subspaces
  tiers = len(np.unique(limits))  # each tier's bits per code, one byte each
  return dict(params=int(params),
              bytes=int(4 * num_centroids * dim + -(-code_bits // 8) + -(-tier_bits // 8)
                        + tiers))


# ----------------------------------------------------------------------------- the method
# No search: every point of the grid mgqe.dims x mgqe.subspaces x mgqe.centroids is one
# candidate, trained with its quantiser in the loop; what is stored are the codes and centroids.

NAME = 'mgqe'


def check(ctx: Context) -> None:
  c = ctx.config.mgqe
  for key, values in (('dims', c.dims), ('subspaces', c.subspaces), ('centroids', c.centroids)):
    if not values:
      raise ConfigError(f'config key mgqe.{key}: give at least one value')
  for d in c.dims:
    for s in c.subspaces:
      if int(s) < 1 or int(d) % int(s):
        raise ConfigError(f'config key mgqe.subspaces: {s} does not divide the width {d} '
                         '(mgqe.dims)')
  if any(int(k) < 2 for k in c.centroids):
    raise ConfigError(f'config key mgqe.centroids: need at least 2, got {c.centroids}')
  if not 0 < c.frequent_fraction <= 1:
    raise ConfigError(f'config key mgqe.frequent_fraction: must be in (0, 1], got '
                     f'{c.frequent_fraction!r}')
  if not 0 < c.rare_centroid_fraction <= 1:
    raise ConfigError(f'config key mgqe.rare_centroid_fraction: must be in (0, 1], got '
                     f'{c.rare_centroid_fraction!r}')


def candidates(ctx: Context) -> list[Candidate]:
  c = ctx.config.mgqe
  return [Candidate(NAME, wd.run_name(NAME, f'd{int(d)}_s{int(s)}_k{int(k)}'),
                    f'd={int(d)} S={int(s)} K={int(k)}',
                    report={'dim': int(d), 'search_seconds': 0.0},
                    info={'dim': int(d), 'subspaces': int(s), 'centroids': int(k)})
          for d in c.dims for s in c.subspaces for k in c.centroids]


def _limits(ctx: Context, num_centroids: int) -> np.ndarray:
  c = ctx.config.mgqe
  rare = max(2, int(round(c.rare_centroid_fraction * num_centroids)))
  return centroid_limits(ctx.train_counts(), num_centroids, float(c.frequent_fraction),
                         rare)


def build(ctx: Context, cand: Candidate) -> Stage:
  dims = tuple(int(x) for x in ctx.data.field_dims)
  info = cand.info
  return make_stage(ctx.config, ctx.data, lambda rm, mesh: MGQEEmbedding(
      dims, info['dim'], info['subspaces'], info['centroids'], row_multiple=rm, mesh=mesh),
      constants={'layout': {'embedding': {'limit': ROWS}}})


def initial(ctx: Context, cand: Candidate, stage: Stage):
  limits = _limits(ctx, cand.info['centroids'])
  emb = stage.embedding
  padded = np.full(padded_rows(emb.num_rows, emb.row_multiple), limits.max(), np.int32)
  padded[:len(limits)] = limits
  place = stage.shardings.constants['layout']['embedding']['limit']
  return stage.initial_state(), {'layout': {'embedding': {'limit': jax.device_put(padded, place)}}}


def size(ctx: Context, cand: Candidate, stage: Stage, state, constants) -> dict:
  del stage, state, constants
  info = cand.info
  params = accounting(ctx.data.num_features, info['dim'], info['subspaces'], info['centroids'],
                      _limits(ctx, info['centroids']))['params']
  return {'params': params, 'field_mean_size': None}


def compact(ctx: Context, cand: Candidate, stage: Stage, state, constants,
            layout: str | None) -> Compact:
  """The centroids and every feature's codes, packed in the bits its tier needs; the query
  table is not kept."""
  del cand, layout
  params, consts = embedding_arrays(stage, state, constants)
  rows = ctx.data.num_features
  limits = consts['limit'][:rows]
  codes = np.asarray(jax.jit(quantize)(params['table'][:rows], params['centroids'], limits))
  return Compact('codes', compact_lib.encode_codes(codes, params['centroids'], limits))


METHOD = Method(
    name=NAME, labels={NAME: 'MGQE'}, check=check, search=no_search, candidates=candidates,
    build=build, initial=initial, size=size, compact=compact,
    layouts={'codes': compact_lib.CODES},
    floor=lambda config, field_dims: (
        (sum(field_dims) + min(config.mgqe.centroids) * min(config.mgqe.dims))
        / (sum(field_dims) * int(config.embedding.dim)),
        'every feature stores at least one code, counted as a parameter, beside the centroids '
        '(in bytes, a few bits per code, it goes far lower)'))
