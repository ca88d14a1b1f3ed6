"""Rows of a row-sharded table for a batch of ids, without gathering the table anywhere.

The table ``[R, ...]`` is split by rows over the mesh's ``'table'`` axis (``T`` devices,
``R / T`` rows each) and the ids ``[B, ...]`` by batch over all ``n`` devices. Each device

1. all-gathers the ids of its ``'table'`` group: ``[B / n, ...] -> [B / n * T, ...]``;
2. gathers the rows it owns, zero for ids owned by another device;
3. sums the partial rows over ``'table'`` and keeps its own slice of the batch
   (``psum_scatter``): ``[B / n * T, ..., D] -> [B / n, ..., D]``.

Only ids and looked-up rows cross devices, never the table. The gradient follows by
transposition: looked-up cotangents are all-gathered over ``'table'``, scatter-added into the
local rows, and summed over ``'data'`` (the table's copies).

On a 1 x 1 mesh the collectives are no-ops, so one device runs the same function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from pep_jax.sharding.mesh import TABLE
from pep_jax.sharding.specs import BATCH, TABLE_ROWS


def _local_take(shard: jax.Array, ids: jax.Array) -> jax.Array:
  """Step 1-3 above on one device: ``shard [R/T, ...]``, ``ids [B/n, ...]``."""
  ids = jax.lax.all_gather(ids, TABLE, axis=0, tiled=True)  # [B/n*T, ...]
  local = ids - jax.lax.axis_index(TABLE) * shard.shape[0]
  owned = (local >= 0) & (local < shard.shape[0])
  rows = jnp.take(shard, jnp.where(owned, local, 0), axis=0)  # [B/n*T, ..., D]
  owned = owned.reshape(owned.shape + (1,) * (rows.ndim - owned.ndim))
  summable = jnp.int32 if rows.dtype == jnp.bool_ else rows.dtype
  rows = jnp.where(owned, rows, 0).astype(summable)
  rows = jax.lax.psum_scatter(rows, TABLE, scatter_dimension=0, tiled=True)  # [B/n, ..., D]
  return rows.astype(shard.dtype)


def take_rows(table: jax.Array, ids: jax.Array, mesh: Mesh | None) -> jax.Array:
  """``table[ids]`` for a table split by rows over ``mesh``'s ``'table'`` axis.

  Args:
    table: ``[R, ...]``; ``R`` a multiple of the ``'table'`` axis size.
    ids: int ``[B, ...]`` rows to look up, ``0 <= ids < R``; ``B`` a multiple of the device
      count.
    mesh: the run's mesh, or None outside a run (a plain ``jnp.take``, as on a one-device
      mesh).

  Returns:
    ``[B, ..., D]`` (``ids.shape + table.shape[1:]``), split by batch over all devices.
  """
  if mesh is None or mesh.size == 1:
    # One device: a plain gather. Its gradient is a scatter-add straight into the table's
    # shape, without the (identity) collective the split lookup's transpose adds.
    return jnp.take(table, ids, axis=0)
  return jax.shard_map(_local_take, mesh=mesh, in_specs=(TABLE_ROWS, BATCH),
                       out_specs=BATCH)(table, ids)
