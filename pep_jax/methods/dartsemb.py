"""DartsEmb: a differentiable (DARTS) search over candidate widths for every field.

During the search each field's embedding is a softmax-weighted mixture over the candidates,

    e_f = sum_c softmax(arch_f)_c * (table_c[x_f] @ proj_c[f]),

with one table ``[rows, w_c]`` per candidate width, one projection ``[w_c, D]`` per field and
candidate, and architecture logits ``arch [F, C]``. Each field then keeps the candidate of
largest weight, and the slim model (:class:`pep_jax.layers.embedding.FieldWidthEmbedding`) is
retrained from scratch with those widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pep_jax.layers.embedding import field_offsets, projection_init, xavier_table_init


def check_candidates(candidates: Sequence[int], dim: int) -> tuple[int, ...]:
  """The candidate widths as a tuple; ValueError unless distinct and in ``[1, dim]``."""
  widths = tuple(int(w) for w in candidates)
  if not widths or len(set(widths)) != len(widths) or not all(1 <= w <= dim for w in widths):
    raise ValueError(f'config key dartsemb.candidate_sets: candidates {widths} must be distinct '
                     f'widths in [1, embedding.dim={dim}]')
  return widths


class DartsEmbedding(nn.Module):
  """The search-stage embedding: a softmax mixture over candidate widths per field.

  Params: ``table_w{w} [rows, w]`` (Xavier-uniform), ``proj_w{w} [F, w, dim]`` (U(+-1/sqrt(w)))
  for every candidate ``w``, and ``arch [F, C]`` (zeros: the uniform mixture).

  Attributes:
    field_dims: vocabulary size of each field.
    dim: output width ``D``.
    candidates: candidate widths ``C``, distinct, each in ``[1, dim]``.
  """

  field_dims: Sequence[int]
  dim: int
  candidates: Sequence[int]

  def setup(self):
    widths = check_candidates(self.candidates, self.dim)
    num_rows, num_fields = int(sum(self.field_dims)), len(self.field_dims)
    self.tables = [self.param(f'table_w{w}', xavier_table_init(num_rows), (num_rows, w))
                   for w in widths]
    self.projections = [self.param(f'proj_w{w}', projection_init, (num_fields, w, self.dim))
                        for w in widths]
    self.arch = self.param('arch', nn.initializers.zeros, (num_fields, len(widths)))

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Per-field local ids ``[B, F]`` -> ``[B, F, dim]``."""
    gids = ids + jnp.asarray(field_offsets(self.field_dims))[None, :]  # [B, F]
    weights = jax.nn.softmax(self.arch, axis=-1)  # [F, C]
    out = jnp.zeros(ids.shape + (self.dim,), jnp.float32)
    for c, (table, proj) in enumerate(zip(self.tables, self.projections)):
      rows = jnp.take(table, gids, axis=0)  # [B, F, w_c]
      out += weights[None, :, c, None] * jnp.einsum('bfw,fwd->bfd', rows, proj)  # [B, F, D]
    return out

  def chosen_widths(self) -> jax.Array:
    """Width of each field's largest architecture weight, ``[F]`` int32."""
    widths = jnp.asarray(check_candidates(self.candidates, self.dim), jnp.int32)
    return widths[jnp.argmax(self.arch, axis=-1)]


def accounting(field_dims: Sequence[int], widths: Sequence[int], dim: int) -> dict[str, int]:
  """Stored size of the retrained slim model, field ``f`` with width ``w_f``.

  ``params = sum_f w_f vocab_f + sum_{f: w_f > 0} w_f dim`` (tables and projections);
  ``bytes = 4 params``.
  """
  vocab = np.asarray(field_dims, np.int64)
  widths = np.asarray(widths, np.int64)
  params = int(np.sum(widths * vocab) + np.sum(widths[widths > 0]) * int(dim))
  return dict(params=params, bytes=4 * params)
