"""Embedding layers over all fields' vocabularies, one table with per-field offsets.

Three layers share the lookup and differ only in what they apply to the looked-up rows:

* :class:`PEPEmbedding` soft-thresholds them with learnable ``s`` (the pruning stage);
* :class:`MaskedEmbedding` multiplies them by a fixed binary mask (retraining a ticket);
* :class:`PlainEmbedding` returns them as they are (the uniform-embedding baseline).

Each takes per-field *local* indices ``[B, F]`` and returns ``[B, F, D]``, so any model written
against a plain embedding accepts any of them. The table may carry padding rows (so that it
splits evenly across devices); they are never looked up and never counted as parameters.
Given a ``mesh``, every lookup goes through :func:`pep_jax.sharding.take_rows`, which reads a
table split by rows over the devices without gathering it.

Every layer exposes ``effective_table()`` (the table as the model sees it) and
``nonzeros()``, the parameter count PEP reports: non-zero entries of the real rows.

A fourth layer has one table per field instead of one shared table:

* :class:`FieldWidthEmbedding` gives field ``f`` a table ``[vocab_f, w_f]`` and a projection
  ``[w_f, D]`` (no parameters and zero output where ``w_f = 0``), for retraining a model whose
  search chose one width per field.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pep_jax.ops import threshold as th
from pep_jax.sharding.lookup import take_rows


def field_offsets(field_dims: Sequence[int]) -> np.ndarray:
  """First table row of each field ``[F]``."""
  return np.concatenate([[0], np.cumsum(field_dims)[:-1]]).astype(np.int32)


def padded_rows(num_rows: int, multiple: int) -> int:
  """``num_rows`` rounded up to a multiple (tables split evenly over devices)."""
  return -(-num_rows // multiple) * multiple


def xavier_table_init(num_rows: int):
  """Xavier-uniform over the real ``[num_rows, D]`` table; padding rows are zero.

  The bound ``sqrt(6 / (N + D))`` uses the real row count and the values are drawn for the
  real rows only, so padding for sharding does not change the initial values.
  """

  def init(key, shape, dtype=jnp.float32):
    rows, dim = shape
    bound = np.sqrt(6.0 / (num_rows + dim))
    table = jax.random.uniform(key, (num_rows, dim), dtype, -bound, bound)
    return jnp.pad(table, ((0, rows - num_rows), (0, 0)))

  return init


class _TableEmbedding(nn.Module):
  """Shared part: the ``[rows, D]`` table, offsets and the lookup."""

  field_dims: Sequence[int]
  dim: int
  row_multiple: int = 1  # pad the table's rows to a multiple of this
  mesh: jax.sharding.Mesh | None = None  # rows split over its 'table' axis (None: one device)

  @property
  def num_rows(self) -> int:
    """Real rows: the number of features over all fields."""
    return int(sum(self.field_dims))

  @property
  def table_rows(self) -> int:
    return padded_rows(self.num_rows, self.row_multiple)

  def setup(self):
    self.table = self.param('table', xavier_table_init(self.num_rows),
                            (self.table_rows, self.dim))

  def take(self, table: jax.Array, gids: jax.Array) -> jax.Array:
    """Rows ``gids [B, F]`` of ``table`` or of an array shaped like it -> ``[B, F, ...]``."""
    return take_rows(table, gids, self.mesh)

  def global_ids(self, ids: jax.Array) -> jax.Array:
    """Per-field local indices ``[B, F]`` -> table rows ``[B, F]``."""
    return ids + jnp.asarray(field_offsets(self.field_dims))[None, :]

  def nonzeros(self) -> jax.Array:
    """Non-zero entries of the real rows of ``effective_table()`` (int32 scalar)."""
    table = self.effective_table()  # [rows, D]; rows masked by index, so a sharded table
    real = jnp.arange(table.shape[0])[:, None] < self.num_rows  # is never resliced
    return jnp.sum((table != 0) & real, dtype=jnp.int32)


class PlainEmbedding(_TableEmbedding):
  """A plain embedding: every feature has ``dim`` entries."""

  def __call__(self, ids: jax.Array) -> jax.Array:
    return self.take(self.table, self.global_ids(ids))  # [B, F, D]

  def effective_table(self) -> jax.Array:
    return self.table


class PEPEmbedding(_TableEmbedding):
  """An embedding reparameterised by PEP: ``S(V, s) = sign(V) relu(|V| - g(s))``.

  Only the looked-up rows are thresholded in the forward pass; ``nonzeros()`` and ``mask()``
  threshold the whole table.

  Attributes:
    granularity: shape of ``s`` (see :mod:`pep_jax.ops.threshold`).
    s_init: initial value of every threshold parameter.
    gate: name of ``g`` (``'sigmoid'`` in the paper).
    gate_scale: thresholds are ``gate_scale * g(s)`` (1 in the paper).
  """

  granularity: str = 'feature_dimension'
  s_init: float = -15.0
  gate: str = 'sigmoid'
  gate_scale: float = 1.0

  def setup(self):
    super().setup()
    shape = th.threshold_shape(self.granularity, self.table_rows, len(self.field_dims), self.dim)
    self.threshold = self.param('threshold', nn.initializers.constant(self.s_init), shape)

  def __call__(self, ids: jax.Array) -> jax.Array:
    gids = self.global_ids(ids)
    rows = self.take(self.table, gids)  # [B, F, D]
    gate = th.get_gate(self.gate, self.gate_scale)
    if not th.is_per_feature(self.granularity):
      s = th.lookup_thresholds(self.threshold, self.granularity, gids)
      return th.soft_threshold(rows, s, gate)
    if self.threshold.size <= gids.size * self.threshold.shape[-1]:
      # A table smaller than the batch's lookups (MovieLens-sized): gating every threshold
      # once and gathering the gated ones costs fewer sigmoids (and their derivatives).
      return th.threshold_values(rows, self.take(gate(self.threshold), gids))
    return th.soft_threshold(rows, self.take(self.threshold, gids), gate)  # [B, F, D]

  def effective_table(self) -> jax.Array:
    s = th.table_thresholds(self.threshold, self.granularity, self.field_dims, self.table_rows)
    return th.soft_threshold(self.table, s, th.get_gate(self.gate, self.gate_scale))  # [rows, D]

  def mask(self) -> jax.Array:
    """The ticket ``1{S != 0}`` of the whole table, bool ``[rows, D]``."""
    return self.effective_table() != 0

  def nonzeros(self) -> jax.Array:
    """``sum(mask())``, computed the way it is cheapest on every step.

    ``S != 0`` exactly where ``relu(|V| - t) > 0`` (the same float subtraction as
    :func:`~pep_jax.ops.threshold.threshold_values`), whose sign is 1.0 there and 0.0
    elsewhere: counting in float arithmetic avoids a compare-and-convert pass, which costs
    XLA:CPU about as much as the optimizer's update of the table. Column sums are exact while
    every partial sum is an integer under 2**24 (tables of fewer rows). Padding rows are zero,
    so never counted.
    """
    if self.table_rows >= 2 ** 24:
      return jnp.sum(self.mask(), dtype=jnp.int32)
    s = th.table_thresholds(self.threshold, self.granularity, self.field_dims, self.table_rows)
    t = th.get_gate(self.gate, self.gate_scale)(s)
    # -0.0, not 0.0: a zero the shape of the table would be merged with the gradient's zero
    # buffer, which the count would then read as a second input.
    kept = jnp.sign(jnp.maximum(jnp.abs(self.table) - t, -0.0))  # [rows, D]: 1.0 where S != 0
    return jnp.sum(jnp.sum(kept, axis=0).astype(jnp.int32))


class MaskedEmbedding(_TableEmbedding):
  """A table multiplied by a fixed binary mask (a PEP ticket) while it is retrained.

  The mask lives in the ``'ticket'`` variable collection, not in ``'params'``, so it is never
  trained; entries outside it get no loss gradient and never reach the model.
  """

  def setup(self):
    super().setup()
    self.ticket_mask = self.variable('ticket', 'mask', jnp.ones, (self.table_rows, self.dim),
                                     jnp.bool_)

  def __call__(self, ids: jax.Array) -> jax.Array:
    gids = self.global_ids(ids)
    rows = self.take(self.table, gids)  # [B, F, D]
    mask = self.take(self.ticket_mask.value, gids)  # [B, F, D]
    return rows * mask.astype(rows.dtype)

  def effective_table(self) -> jax.Array:
    return self.table * self.ticket_mask.value.astype(self.table.dtype)


def projection_init(key, shape, dtype=jnp.float32) -> jax.Array:
  """PyTorch's ``nn.Linear`` weight init for a ``[..., w, D]`` kernel: U(+-1/sqrt(w)).

  Leading axes (one projection per field) are independent kernels, each with fan-in ``w``.
  """
  bound = 1.0 / np.sqrt(shape[-2])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class FieldWidthEmbedding(nn.Module):
  """Field ``f``'s features get ``w_f`` entries, projected to the common width ``dim``.

  ``e_f = table_f[x_f] @ proj_f`` with ``table_f [vocab_f, w_f]`` (Xavier-uniform over the
  field's own table) and ``proj_f [w_f, dim]`` (U(+-1/sqrt(w_f))); a field with ``w_f = 0`` has
  neither and its embedding is zero.

  Attributes:
    field_dims: vocabulary size of each field.
    dim: output width ``D``.
    widths: stored width of each field, ``0 <= w_f``.
  """

  field_dims: Sequence[int]
  dim: int
  widths: Sequence[int]
  # Layout of the model's other per-feature arrays (the first-order weights): padded to a
  # multiple of ``row_multiple`` rows and split over ``mesh``, as a uniform table's would be.
  row_multiple: int = 1
  mesh: jax.sharding.Mesh | None = None

  def setup(self):
    if len(self.widths) != len(self.field_dims):
      raise ValueError(f'FieldWidthEmbedding: {len(self.widths)} widths for '
                       f'{len(self.field_dims)} fields')
    if any(int(w) < 0 for w in self.widths):
      raise ValueError(f'FieldWidthEmbedding: widths must be >= 0, got {tuple(self.widths)}')
    tables, projections = {}, {}
    for f, (vocab, width) in enumerate(zip(self.field_dims, self.widths)):
      if int(width) > 0:
        tables[f] = self.param(f'field_{f}', xavier_table_init(int(vocab)),
                               (int(vocab), int(width)))
        projections[f] = self.param(f'proj_{f}', projection_init, (int(width), self.dim))
    self.tables, self.projections = tables, projections

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Per-field local ids ``[B, F]`` -> ``[B, F, dim]``."""
    fields = []
    for f in range(len(self.field_dims)):
      if f in self.tables:
        rows = jnp.take(self.tables[f], ids[:, f], axis=0)  # [B, w_f]
        fields.append(rows @ self.projections[f])  # [B, D]
      else:
        fields.append(jnp.zeros((ids.shape[0], self.dim), jnp.float32))
    return jnp.stack(fields, axis=1)  # [B, F, D]


EMBEDDINGS = ('pep', 'masked', 'plain')


def make_embedding(kind: str, embedding_config, field_dims: Sequence[int], *,
                   dim: int | None = None, row_multiple: int = 1,
                   mesh: jax.sharding.Mesh | None = None) -> _TableEmbedding:
  """The embedding layer of a stage from ``config.embedding``.

  Args:
    kind: 'pep' (prune), 'masked' (retrain a ticket) or 'plain' (uniform baseline).
    embedding_config: the ``config.embedding`` section.
    field_dims: vocabulary size of each field.
    dim: width; ``embedding_config.dim`` by default.
    row_multiple: pad the table's rows to a multiple of this (device count of the table axis).
    mesh: the mesh whose ``'table'`` axis splits the table's rows (None: one device).
  """
  dims = tuple(int(d) for d in field_dims)
  width = int(dim or embedding_config.dim)
  if kind == 'pep':
    return PEPEmbedding(dims, width, row_multiple, mesh, granularity=embedding_config.granularity,
                        s_init=float(embedding_config.s_init), gate=embedding_config.gate,
                        gate_scale=float(embedding_config.gate_scale))
  if kind == 'masked':
    return MaskedEmbedding(dims, width, row_multiple, mesh)
  if kind == 'plain':
    return PlainEmbedding(dims, width, row_multiple, mesh)
  raise ValueError(f'unknown embedding kind {kind!r}; expected one of {EMBEDDINGS}')
