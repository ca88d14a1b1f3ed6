"""Sharding: the device mesh, every partition spec, and the row-sharded table lookup.

* :mod:`pep_jax.sharding.mesh` builds the ``('data', 'table')`` mesh from ``config.mesh``.
* :mod:`pep_jax.sharding.specs` names every partition spec and assigns them to a state.
* :mod:`pep_jax.sharding.lookup` gathers rows of a row-sharded table without ever
  assembling the table on one device.
* :mod:`pep_jax.sharding.host` brings sharded arrays to the host whole, on every process.
"""

from pep_jax.sharding.host import to_host
from pep_jax.sharding.lookup import take_rows
from pep_jax.sharding.mesh import (DATA, TABLE, build_mesh, check_divides, mesh_shape, row_multiple,
                                   single_device_mesh)
from pep_jax.sharding import specs

__all__ = ['DATA', 'TABLE', 'build_mesh', 'check_divides', 'mesh_shape', 'row_multiple',
           'single_device_mesh', 'specs',
           'take_rows', 'to_host']
