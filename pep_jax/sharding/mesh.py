"""The device mesh of a run: two named axes, ``'data'`` and ``'table'``.

* ``'table'``: the embedding table (and everything shaped like it: per-feature thresholds,
  the ticket mask, Adam's moments of both) is split by rows over this axis.
* ``'data'``: the table is replicated over this axis. Across hosts with a slow link, put the
  hosts on ``'data'`` and the devices of one host on ``'table'``.

Batches are split over *both* axes, so every device runs the dense part of the model on its
own slice of the batch. ``config.mesh.data`` and ``config.mesh.table`` give the sizes; one of
them may be ``-1``, meaning every device the other leaves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from pep_jax.errors import ConfigError

DATA = 'data'
TABLE = 'table'
AXES = (DATA, TABLE)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int]:
  """``(data, table)`` sizes for ``num_devices`` devices, ``-1`` resolved.

  Raises:
    ValueError: naming ``mesh.data`` or ``mesh.table`` when the sizes do not fit the devices.
  """
  sizes = {DATA: int(mesh_config.data), TABLE: int(mesh_config.table)}
  for name, size in sizes.items():
    if size == 0 or size < -1:
      raise ConfigError(f'config key mesh.{name}: expected a positive size or -1 (all remaining '
                        f'devices), got {size}')
  free = [name for name, size in sizes.items() if size == -1]
  if len(free) == 2:
    raise ConfigError('config keys mesh.data and mesh.table: at most one of them may be -1')
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if num_devices % fixed:
      other = TABLE if free[0] == DATA else DATA
      raise ConfigError(f'config key mesh.{other}: {fixed} does not divide the {num_devices} '
                        'devices')
    sizes[free[0]] = num_devices // fixed
  elif fixed != num_devices:
    raise ConfigError(f'config keys mesh.data x mesh.table: {sizes[DATA]} x {sizes[TABLE]} = '
                      f'{fixed} devices, but {num_devices} are available')
  return sizes[DATA], sizes[TABLE]


def build_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The ``('data', 'table')`` mesh of ``config.mesh`` over ``devices`` (all by default).

  ``jax.make_mesh`` orders the devices by the physical topology (TPU torus, GPU hosts), so the
  ``'table'`` axis, whose lookups exchange the most, lies on the fastest links.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  auto = (AxisType.Auto, AxisType.Auto)
  if len(devices) == len(jax.devices()):
    return jax.make_mesh(shape, AXES, axis_types=auto)
  return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=auto)


def single_device_mesh(device: jax.Device | None = None) -> Mesh:
  """A 1 x 1 mesh: the single-device run takes the same code path as a sharded one."""
  device = device or jax.devices()[0]
  return Mesh(np.asarray([device]).reshape(1, 1), AXES, axis_types=(AxisType.Auto,) * 2)


def check_divides(mesh: Mesh, value: int, key: str, what: str = 'devices') -> None:
  """Raises ``ValueError`` naming ``key`` when ``value`` does not split over the whole mesh."""
  if value % mesh.size:
    raise ConfigError(f'config key {key}: {value} does not split evenly over the {mesh.size} '
                      f'{what} of the mesh ({dict(mesh.shape)})')


def row_multiple(mesh: Mesh, mesh_config) -> int:
  """The table's row padding, ``config.mesh.row_multiple``, checked against the table axis.

  Raises:
    ValueError: naming ``mesh.row_multiple`` when the table axis does not divide it.
  """
  multiple, parts = int(mesh_config.row_multiple), mesh.shape[TABLE]
  if multiple % parts:
    raise ConfigError(f'config key mesh.row_multiple: {multiple} rows do not split over the '
                      f'{parts} devices of the table axis (mesh.table); use a multiple of '
                      f'{parts}, e.g. {math.lcm(multiple, parts)}')
  return multiple
