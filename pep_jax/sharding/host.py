"""Arrays brought to the host, whole, on every process."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def to_host(tree: Any) -> Any:
  """``tree`` with every array as a whole numpy array, on every process.

  ``jax.device_get`` reads only arrays whose shards this process holds. In a multi-process run
  a table split by rows lies on every host's devices, so its rows are first gathered from all
  of them: every process must call this at the same point, as with any collective.
  """

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(fetch, tree)
