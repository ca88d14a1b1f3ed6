"""Batches on the mesh: each process supplies the rows its own devices hold.

A global batch ``[B, ...]`` is split by rows over every device (``specs.BATCH``). With several
processes (hosts), process ``p`` reads only the rows ``lo:hi`` of each batch that its devices
hold and the global ``jax.Array`` is assembled from the pieces, so no host reads or sends the
whole batch. With one process ``lo:hi`` is the whole batch. Should a mesh interleave the
processes' devices along the batch, each process reads the whole batch and places only its
own devices' rows.
"""

from __future__ import annotations

import jax
import numpy as np


def process_rows(batch_sharding: jax.sharding.Sharding, batch_size: int) -> tuple[int, int]:
  """The rows ``[lo, hi)`` of a global batch that this process reads.

  The block its devices hold; the whole batch when those rows are not one block.
  """
  index = batch_sharding.addressable_devices_indices_map((batch_size,))
  spans = sorted({s[0].indices(batch_size)[:2] for s in index.values()})
  lo, hi = spans[0][0], spans[-1][1]
  if sum(b - a for a, b in spans) != hi - lo:
    return 0, batch_size
  return lo, hi


def global_batch(local: dict[str, np.ndarray], batch_sharding: jax.sharding.Sharding,
                 batch_size: int) -> dict[str, jax.Array]:
  """Assembles the global batch from the rows this process read (see :func:`process_rows`)."""
  out = {}
  for k, v in local.items():
    shape = (batch_size,) + v.shape[1:]
    if len(v) == batch_size and jax.process_count() > 1:  # every row read: place own shards
      out[k] = jax.make_array_from_callback(shape, batch_sharding, lambda index, v=v: v[index])
    else:
      out[k] = jax.make_array_from_process_local_data(batch_sharding, v, shape)
  return out


def global_slab(local: dict[str, np.ndarray], slab_sharding: jax.sharding.Sharding,
                batch_size: int) -> dict[str, jax.Array]:
  """:func:`global_batch` for slabs ``[K, rows, ...]`` of ``K`` batches (batch axis 1)."""
  out = {}
  for k, v in local.items():
    shape = (v.shape[0], batch_size) + v.shape[2:]
    if v.shape[1] == batch_size and jax.process_count() > 1:
      out[k] = jax.make_array_from_callback(shape, slab_sharding, lambda index, v=v: v[index])
    elif jax.process_count() == 1:
      out[k] = jax.device_put(v, slab_sharding)
    else:
      out[k] = jax.make_array_from_process_local_data(slab_sharding, v, shape)
  return out
