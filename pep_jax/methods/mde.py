"""Mixed-dimension embeddings (MDE, Ginart et al. 2021): popular features get wider rows.

Features are sorted by their training-split count and cut into ``B`` blocks of equal size, most
popular first. Block ``b`` stores ``w_b`` entries per feature,

    w_b = max(1, round(D * (p_b / p_0) ** alpha)),

with ``p_b`` the mean share of lookups of a feature in block ``b`` and ``p_0`` the most popular
block's; a projection ``[w_b, D]`` brings narrower blocks to the model's width ``D``. ``alpha = 0``
gives the uniform embedding, larger ``alpha`` narrower rare blocks.

The layout (which block and which row of it holds each feature) is data, not a parameter: the
layer reads it from the ``'layout'`` variable collection.
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
from pep_jax.layers.embedding import field_offsets, projection_init, xavier_table_init
from pep_jax.methods.base import (Candidate, Compact, Context, Method, embedding_arrays,
                                  field_means, no_search)
from pep_jax.train.setup import REPLICATED, Stage, make_stage


def block_layout(counts: np.ndarray, num_blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Cuts the features, most popular first, into ``num_blocks`` blocks of equal size.

  Rows are ordered by count, descending, ties by row; block sizes differ by at most one, the
  first blocks being the larger.

  Args:
    counts: ``[rows]`` training-split occurrences of every feature, in global row order.
    num_blocks: ``B``, ``1 <= B <= rows``.

  Returns:
    ``block_of_row [rows] int32``, ``row_in_block [rows] int32`` (the feature's row in its
    block's table) and ``block_sizes [B] int64``.
  """
  counts = np.asarray(counts, np.int64)
  rows = counts.shape[0]
  if not 1 <= num_blocks <= rows:
    raise ConfigError(f'config key mde.blocks: {num_blocks} blocks for {rows} features; expected '
                     f'1 <= blocks <= {rows}')
  order = np.argsort(-counts, kind='stable')  # most popular first, ties by row
  block_of_row = np.empty(rows, np.int32)
  row_in_block = np.empty(rows, np.int32)
  chunks = np.array_split(order, num_blocks)
  for b, chunk in enumerate(chunks):
    block_of_row[chunk] = b
    row_in_block[chunk] = np.arange(len(chunk))
  return block_of_row, row_in_block, np.array([len(c) for c in chunks], np.int64)


def block_popularity(counts: np.ndarray, block_of_row: np.ndarray, num_blocks: int) -> np.ndarray:
  """Mean share of lookups of a feature in each block, ``[B] float64``.

  ``p_b = mean over rows r of block b of counts_r / sum(counts)`` (zero where no feature was seen).
  """
  counts = np.asarray(counts, np.float64)
  share = counts / max(counts.sum(), 1.0)
  totals = np.bincount(block_of_row, weights=share, minlength=num_blocks)
  sizes = np.bincount(block_of_row, minlength=num_blocks)
  return totals / np.maximum(sizes, 1)


def block_widths(popularity: np.ndarray, dim: int, alpha: float) -> tuple[int, ...]:
  """``w_b = max(1, round(dim * (p_b / p_0) ** alpha))``, ``p_0 = max_b p_b``.

  A block whose features never occur (``p_b = 0``) gets width 1 for every ``alpha``: its rows
  get no gradient, so wider rows would store nothing learnt. When no block was seen at all every
  block keeps ``dim``. Rounding is Python's ``round`` (half to even).

  Args:
    popularity: ``[B]`` from :func:`block_popularity`.
    dim: the base width ``D``, the width of the most popular block.
    alpha: temperature in ``[0, 1]``; 0 is the uniform embedding.

  Returns:
    ``B`` widths in ``[1, dim]``.
  """
  if not 0.0 <= alpha <= 1.0:
    raise ConfigError(f'config key mde.alphas: alpha must be in [0, 1], got {alpha}')
  popularity = np.asarray(popularity, np.float64)
  top = popularity.max()
  if top <= 0:
    return tuple(int(dim) for _ in popularity)
  return tuple(max(1, int(round(dim * float(p / top) ** alpha))) if p > 0 else 1
               for p in popularity)


class MDEEmbedding(nn.Module):
  """Block tables of widths ``w_b`` with projections to ``dim``.

  Row ``r`` is ``block_b[local[r]] @ proj_b`` for ``b = block[r]``; blocks of full width have no
  projection. ``block`` and ``local`` (``[rows] int32``, from :func:`block_layout`) live in the
  ``'layout'`` collection. Each lookup reads its feature's own block once:

  * a table of no more rows than the batch has lookups (MovieLens-sized) is projected whole,
    ``[rows, dim]`` (``rows * w_b * dim`` multiply-adds per block, fewer than projecting every
    lookup), and each lookup gathers its projected row;
  * a larger table is never projected whole: the blocks are laid end to end in one flat
    buffer, each lookup gathers the ``dim`` entries from its row's start and keeps its block's
    first ``w_b``, and the looked-up rows are projected (``[lookups, w_b] @ proj_b`` per block).

  Attributes:
    field_dims: vocabulary size of each field.
    dim: output width ``D``.
    block_sizes: features in each block.
    widths: stored width of each block, ``1 <= w_b <= dim``.
  """

  field_dims: Sequence[int]
  dim: int
  block_sizes: Sequence[int]
  widths: Sequence[int]
  # Layout of the model's other per-feature arrays (the first-order weights): padded to a
  # multiple of ``row_multiple`` rows and split over ``mesh``, as a uniform table's would be.
  row_multiple: int = 1
  mesh: jax.sharding.Mesh | None = None

  def setup(self):
    if len(self.block_sizes) != len(self.widths):
      raise ValueError(f'MDEEmbedding: {len(self.widths)} widths for {len(self.block_sizes)} '
                       'blocks')
    num_rows = int(sum(self.field_dims))
    if int(sum(self.block_sizes)) != num_rows:
      raise ValueError(f'MDEEmbedding: blocks hold {int(sum(self.block_sizes))} features, the '
                       f'fields {num_rows}')
    if not all(1 <= int(w) <= self.dim for w in self.widths):
      raise ValueError(f'MDEEmbedding: widths {tuple(self.widths)} must lie in [1, {self.dim}]')
    blocks, projections = [], []
    for b, (size, width) in enumerate(zip(self.block_sizes, self.widths)):
      size, width = int(size), int(width)
      blocks.append(self.param(f'block_{b}', xavier_table_init(size), (size, width)))
      projections.append(self.param(f'proj_{b}', projection_init, (width, self.dim))
                         if width < self.dim else None)
    self.blocks, self.projections = blocks, projections
    self.block = self.variable('layout', 'block', jnp.zeros, (num_rows,), jnp.int32)
    self.local = self.variable('layout', 'local', jnp.zeros, (num_rows,), jnp.int32)

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Per-field local ids ``[B, F]`` -> ``[B, F, dim]``."""
    gids = ids + jnp.asarray(field_offsets(self.field_dims))[None, :]  # [B, F]
    block = jnp.take(self.block.value, gids)  # [B, F]
    local = jnp.take(self.local.value, gids)  # [B, F]
    if sum(self.field_dims) <= ids.size:
      return jnp.take(self.projected_table(), _starts(self.block_sizes)[block] + local, axis=0)
    return self.project_rows(self.block_rows(block, local), block)

  def projected_table(self) -> jax.Array:
    """Every block's rows projected to ``dim``, block after block: ``[rows, dim]``."""
    return jnp.concatenate([table if proj is None else table @ proj
                            for table, proj in zip(self.blocks, self.projections)], axis=0)

  def block_rows(self, block: jax.Array, local: jax.Array) -> jax.Array:
    """``dim`` consecutive entries from row ``local`` of block ``block`` on: ``[..., dim]``.

    One gather per lookup from the blocks laid end to end (and ``dim`` zeros after the last, so
    no window runs past the end); the first ``w_b`` entries are the row, the rest belong to the
    rows after it and are dropped by :meth:`project_rows`.
    """
    widths = jnp.asarray(self.widths, jnp.int32)
    flat = jnp.concatenate([t.reshape(-1) for t in self.blocks] + [jnp.zeros(self.dim)])
    sizes = [int(n) * int(w) for n, w in zip(self.block_sizes, self.widths)]
    start = _starts(sizes)[block] + local * widths[block]  # [...]
    numbers = jax.lax.GatherDimensionNumbers(offset_dims=(start.ndim,), collapsed_slice_dims=(),
                                             start_index_map=(0,))
    return jax.lax.gather(flat, start[..., None], numbers, (self.dim,),
                          mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)  # [..., dim]

  def project_rows(self, rows: jax.Array, block: jax.Array) -> jax.Array:
    """``rows [..., dim]`` of :meth:`block_rows`: their first ``w_b`` entries times their
    blocks' ``proj_b``."""
    out = rows  # rows of full-width blocks are their embeddings
    for b, (proj, width) in enumerate(zip(self.projections, self.widths)):
      if proj is not None:
        out = jnp.where((block == b)[..., None], rows[..., :int(width)] @ proj, out)
    return out


def _starts(sizes: Sequence[int]) -> jax.Array:
  """Where each of consecutive pieces of ``sizes`` starts, ``[len(sizes)] int32``."""
  return jnp.asarray(np.concatenate([[0], np.cumsum(sizes)[:-1]]), jnp.int32)


def accounting(block_sizes: Sequence[int], widths: Sequence[int], dim: int,
               num_rows: int) -> dict[str, int]:
  """Stored size of an MDE embedding.

  ``params = sum_b n_b w_b + sum_{b: w_b < dim} w_b dim`` (tables and projections);
  ``bytes = 4 params + 4 num_rows`` (float32 entries and one int32 per feature locating its row:
  block and row within it, packed).
  """
  tables = sum(int(n) * int(w) for n, w in zip(block_sizes, widths))
  projections = sum(int(w) * int(dim) for w in widths if int(w) < dim)
  params = tables + projections
  return dict(params=params, bytes=4 * params + 4 * int(num_rows))


# ----------------------------------------------------------------------------- the method
# No search: every point of the grid mde.dims x mde.blocks x mde.alphas is one candidate, its
# blocks cut from the training split's feature counts.

NAME = 'mde'


def check(ctx: Context) -> None:
  c = ctx.config.mde
  for key, values in (('dims', c.dims), ('blocks', c.blocks), ('alphas', c.alphas)):
    if not values:
      raise ConfigError(f'config key mde.{key}: give at least one value')
  if any(int(d) < 1 for d in c.dims):
    raise ConfigError(f'config key mde.dims: widths must be positive, got {c.dims}')
  if any(not 1 <= int(b) <= ctx.data.num_features for b in c.blocks):
    raise ConfigError(f'config key mde.blocks: must be in 1..{ctx.data.num_features} (features), '
                     f'got {c.blocks}')
  if any(not 0 <= float(a) <= 1 for a in c.alphas):
    raise ConfigError(f'config key mde.alphas: temperatures must be in [0, 1], got {c.alphas}')


def _layout(ctx: Context, num_blocks: int, dim: int, alpha: float):
  counts = ctx.train_counts()
  block_of_row, row_in_block, sizes = block_layout(counts, num_blocks)
  widths = block_widths(block_popularity(counts, block_of_row, num_blocks), dim, alpha)
  return block_of_row, row_in_block, tuple(int(n) for n in sizes), widths


def candidates(ctx: Context) -> list[Candidate]:
  c = ctx.config.mde
  return [Candidate(NAME, wd.run_name(NAME, f'd{int(d)}_b{int(b)}_a{float(a):g}'),
                    f'd={int(d)} B={int(b)} a={float(a):g}',
                    report={'dim': int(d), 'search_seconds': 0.0},
                    info={'dim': int(d), 'blocks': int(b), 'alpha': float(a)})
          for d in c.dims for b in c.blocks for a in c.alphas]


def build(ctx: Context, cand: Candidate) -> Stage:
  _, _, sizes, widths = _layout(ctx, cand.info['blocks'], cand.info['dim'], cand.info['alpha'])
  dims = tuple(int(x) for x in ctx.data.field_dims)
  layout = {'layout': {'embedding': {'block': REPLICATED, 'local': REPLICATED}}}
  def layer(row_multiple, mesh):
    return MDEEmbedding(dims, cand.info['dim'], sizes, widths, row_multiple, mesh)

  return make_stage(ctx.config, ctx.data, layer, constants=layout)


def initial(ctx: Context, cand: Candidate, stage: Stage):
  block_of_row, row_in_block, _, _ = _layout(ctx, cand.info['blocks'], cand.info['dim'],
                                             cand.info['alpha'])
  place = stage.shardings.constants['layout']['embedding']
  layout = {'block': jax.device_put(block_of_row.astype(np.int32), place['block']),
            'local': jax.device_put(row_in_block.astype(np.int32), place['local'])}
  return stage.initial_state(), {'layout': {'embedding': layout}}


def size(ctx: Context, cand: Candidate, stage: Stage, state, constants) -> dict:
  del stage, state, constants
  block_of_row, _, sizes, widths = _layout(ctx, cand.info['blocks'], cand.info['dim'],
                                           cand.info['alpha'])
  params = accounting(sizes, widths, cand.info['dim'], ctx.data.num_features)['params']
  row_widths = np.asarray(widths)[block_of_row]
  return {'params': params, 'field_mean_size': field_means(row_widths, ctx.data.field_dims)}


def compact(ctx: Context, cand: Candidate, stage: Stage, state, constants,
            layout: str | None) -> Compact:
  """The blocks, their projections and one packed int32 per feature locating its row."""
  del ctx, cand, layout
  params, consts = embedding_arrays(stage, state, constants)
  return Compact('mde', compact_lib.encode_mde(params, consts['block'], consts['local']))


def _floor(config, field_dims) -> tuple[float, str]:
  """The narrowest of ``mde.dims`` cut into the most of ``mde.blocks`` blocks, every block
  but the most popular at width 1 (and its projection), over the uniform table at
  ``embedding.dim``."""
  rows, blocks = sum(field_dims), max(config.mde.blocks)
  dim = min(int(d) for d in config.mde.dims)
  first = -(-rows // blocks)
  return ((first * dim + rows - first + (blocks - 1) * dim) / (rows * int(config.embedding.dim)),
          'every feature keeps at least one entry, the most popular block the whole width')


METHOD = Method(
    name=NAME, labels={NAME: 'MDE'}, check=check, search=no_search, candidates=candidates,
    build=build, initial=initial, size=size, compact=compact,
    layouts={'mde': compact_lib.MDE},
    floor=_floor)
