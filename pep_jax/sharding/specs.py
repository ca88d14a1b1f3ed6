"""Every partition spec of the library, and the rule that assigns them to a train state.

* ``TABLE_ROWS = P('table')``: rows split over ``'table'``, copies over ``'data'``. The
  embedding table ``[R, D]``, per-feature thresholds ``[R, 1|D]``, the ticket mask ``[R, D]``
  and Adam's ``mu``/``nu`` of the first two.
* ``BATCH = P(('data', 'table'))``: the leading (batch) axis split over every device. Every
  array of a batch, and the looked-up rows ``[B, F, D]``.
* ``REPLICATED = P()``: dense parameters and their optimizer state, batch statistics, step,
  rng, metrics and probabilities.

A leaf is row-sharded when it sits under the model's ``embedding`` submodule and is named
``table``, ``mask`` or (for the per-feature granularities) ``threshold``: the names of the
layers in :mod:`pep_jax.layers.embedding`; and the first-order weights ``linear/weight``
(one row per feature, :class:`pep_jax.models.ctr.FirstOrder`). Optimizer states repeat the
parameters' tree, so the same rule finds Adam's moments of those leaves.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pep_jax.sharding.mesh import DATA, TABLE

TABLE_ROWS = P(TABLE)
BATCH = P((DATA, TABLE))
REPLICATED = P()

EMBEDDING_MODULE = 'embedding'
ROW_LEAVES = ('table', 'mask')  # always one row per table row
PER_FEATURE_LEAVES = ('threshold',)  # one row per table row for 'feature*' granularities
LINEAR_MODULE = 'linear'  # the first-order weights: one row per feature
LINEAR_ROW_LEAF = 'weight'


def named(mesh: Mesh, spec: P) -> NamedSharding:
  return NamedSharding(mesh, spec)


def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def is_row_sharded(path, *, per_feature_threshold: bool) -> bool:
  """Whether the leaf at ``path`` (a ``jax.tree_util`` key path) is split by table rows."""
  names = [_key_name(k) for k in path]
  if LINEAR_MODULE in names and names[-1] == LINEAR_ROW_LEAF:
    return True
  if EMBEDDING_MODULE not in names:
    return False
  leaves = ROW_LEAVES + (PER_FEATURE_LEAVES if per_feature_threshold else ())
  return names[-1] in leaves


def tree_shardings(mesh: Mesh, tree: Any, *, per_feature_threshold: bool) -> Any:
  """A ``NamedSharding`` for every leaf of ``tree`` (arrays or ``ShapeDtypeStruct``).

  Raises:
    ValueError: when a row-sharded leaf's rows do not split over the ``'table'`` axis (its
      table was built without ``row_multiple`` padding).
  """
  parts = mesh.shape[TABLE]

  def assign(path, leaf):
    if not is_row_sharded(path, per_feature_threshold=per_feature_threshold):
      return named(mesh, REPLICATED)
    if leaf.shape[0] % parts:
      raise ValueError(f'{jax.tree_util.keystr(path)} has {leaf.shape[0]} rows, which do not '
                       f"split over the {parts} devices of the mesh's table axis "
                       '(config key mesh.row_multiple)')
    return named(mesh, TABLE_ROWS)

  return jax.tree_util.tree_map_with_path(assign, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return named(mesh, BATCH)


def replicated(mesh: Mesh) -> NamedSharding:
  return named(mesh, REPLICATED)


def table_rows(mesh: Mesh) -> NamedSharding:
  return named(mesh, TABLE_ROWS)
