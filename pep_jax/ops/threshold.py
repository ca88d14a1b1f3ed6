"""The PEP reparameterisation as pure functions.

PEP (Liu et al., ICLR 2021) replaces an embedding table ``V`` by its soft-thresholded version

    S(V, s) = sign(V) * relu(|V| - g(s)),

with learnable thresholds ``s`` and a gate ``g`` (sigmoid in the paper). Entries whose magnitude
falls under their threshold are exactly zero, so each feature ends with its own embedding size.

Sub-gradients (the paper's Eq. 11), with ``keep = 1{S != 0}``:

    dS/dV = keep,        dS/dt = -sign(V) * keep,   t = g(s),

and ``s`` receives ``dS/dt * g'(s)`` through ordinary autodiff of the gate. They are written as
a ``jax.custom_jvp`` so the edges (``V == 0``, ``|V| == t``, ``t == 0``) follow the paper rather
than whatever the composition of ``sign``, ``abs`` and ``relu`` happens to give, and so
the same mask defines the value, the gradient and the parameter count.

Granularities of ``s`` (shapes for a table of ``N`` rows, ``F`` fields, width ``D``):

    global             [1, 1]       one threshold for the whole table
    dimension          [1, D]       one per embedding column
    feature            [N, 1]       one per feature (row)
    feature_dimension  [N, D]       one per entry (the paper's default)
    field              [F, 1]       one per field
    field_dimension    [F, D]       one per (field, column)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pep_jax.errors import ConfigError

Gate = Callable[[jax.Array], jax.Array]

GRANULARITIES = ('global', 'dimension', 'feature', 'feature_dimension', 'field',
                 'field_dimension')

GATES: dict[str, Gate] = {
    'sigmoid': jax.nn.sigmoid,
    # Valid alternatives: positive, -> 0 at -inf, bounded positive derivative.
    'softplus': jax.nn.softplus,
    'exp': jnp.exp,
}


def get_gate(name: str, scale: float = 1.0) -> Gate:
  """The gate ``t = scale * g(s)`` for ``g`` named ``name`` (config key ``embedding.gate``).

  ``scale`` is ``embedding.gate_scale`` (the public code's ``gk``): with a sigmoid, thresholds
  are bounded by ``scale`` instead of 1, which decides how small a table pruning can reach.
  """
  if name not in GATES:
    raise ConfigError(f'config key embedding.gate: unknown gate {name!r}; expected one of '
                      f'{sorted(GATES)}')
  if not scale > 0:
    raise ConfigError(f'config key embedding.gate_scale: must be positive, got {scale!r}')
  gate = GATES[name]
  return gate if scale == 1.0 else lambda s: scale * gate(s)


@jax.custom_jvp
def threshold_values(v: jax.Array, t: jax.Array) -> jax.Array:
  """``sign(v) * relu(|v| - t)`` for a non-negative threshold ``t``.

  Args:
    v: embedding entries, any shape.
    t: thresholds ``g(s)``, broadcastable to ``v``.

  Returns:
    The soft-thresholded entries, shaped like ``v``.
  """
  return jnp.sign(v) * jnp.maximum(jnp.abs(v) - t, 0.0)


@threshold_values.defjvp
def _threshold_values_jvp(primals, tangents):
  v, t = primals
  dv, dt = tangents
  out = threshold_values(v, t)
  keep = (out != 0).astype(v.dtype)  # 1{S != 0}: Eq. 11
  return out, keep * dv - jnp.sign(v) * keep * dt


def soft_threshold(v: jax.Array, s: jax.Array, gate: Gate = jax.nn.sigmoid) -> jax.Array:
  """PEP's reparameterisation ``S(V, s) = sign(V) * relu(|V| - g(s))``.

  Args:
    v: embedding entries, e.g. a table ``[N, D]`` or looked-up rows ``[B, F, D]``.
    s: thresholds, broadcastable to ``v``.
    gate: ``g``; sigmoid by default (every experiment of the paper).

  Returns:
    ``S``, shaped like ``v``; exactly zero where ``|v| <= g(s)``.
  """
  return threshold_values(v, gate(s))


def keep_mask(v: jax.Array, s: jax.Array, gate: Gate = jax.nn.sigmoid) -> jax.Array:
  """The binary mask ``1{S(v, s) != 0}`` (bool, shaped like ``v``)."""
  return soft_threshold(v, s, gate) != 0


def count_nonzero(v: jax.Array, s: jax.Array, gate: Gate = jax.nn.sigmoid,
                  num_rows: int | None = None) -> jax.Array:
  """Number of non-zero entries of ``S(v, s)`` over the first ``num_rows`` rows (int32)."""
  mask = keep_mask(v, s, gate)
  if num_rows is not None:
    mask = mask[:num_rows]
  return jnp.sum(mask, dtype=jnp.int32)


def row_sizes(mask: jax.Array) -> jax.Array:
  """Per-feature embedding size: the non-zero count of each row of a ``[N, D]`` mask."""
  return jnp.sum(mask, axis=-1, dtype=jnp.int32)


def threshold_shape(granularity: str, num_rows: int, num_fields: int, dim: int) -> tuple[int, int]:
  """Shape of ``s`` for a granularity (see the module docstring)."""
  shapes = {
      'global': (1, 1),
      'dimension': (1, dim),
      'feature': (num_rows, 1),
      'feature_dimension': (num_rows, dim),
      'field': (num_fields, 1),
      'field_dimension': (num_fields, dim),
  }
  if granularity not in shapes:
    raise ConfigError(f'config key embedding.granularity: unknown granularity {granularity!r}; '
                      f'expected one of {list(GRANULARITIES)}')
  return shapes[granularity]


def is_per_feature(granularity: str) -> bool:
  """True when ``s`` has one row per table row (and is sharded like the table)."""
  return granularity in ('feature', 'feature_dimension')


def is_per_field(granularity: str) -> bool:
  return granularity in ('field', 'field_dimension')


def row_fields(field_dims: np.ndarray | list[int], num_rows: int) -> jax.Array:
  """Field index of every table row ``[num_rows]``; padding rows get the last field.

  Computed from the row index, so it never needs a host array the size of the table.
  """
  offsets = jnp.asarray(np.cumsum(field_dims)[:-1], jnp.int32)  # [F - 1]
  rows = jnp.arange(num_rows, dtype=jnp.int32)
  return jnp.searchsorted(offsets, rows, side='right').astype(jnp.int32)


def lookup_thresholds(s: jax.Array, granularity: str, global_ids: jax.Array) -> jax.Array:
  """Thresholds of looked-up rows, broadcastable to ``[B, F, D]``.

  Args:
    s: thresholds in the granularity's shape.
    granularity: one of ``GRANULARITIES``.
    global_ids: ``[B, F]`` table rows of the batch.
  """
  if is_per_feature(granularity):
    return jnp.take(s, global_ids, axis=0)  # [B, F, 1|D]
  if is_per_field(granularity):
    return s[None]  # [1, F, 1|D]
  return s[None]  # [1, 1, 1|D]


def table_thresholds(s: jax.Array, granularity: str, field_dims, num_rows: int) -> jax.Array:
  """Thresholds of every table row, broadcastable to ``[num_rows, D]``."""
  if is_per_field(granularity):
    return jnp.take(s, row_fields(field_dims, num_rows), axis=0)  # [N, 1|D]
  return s
