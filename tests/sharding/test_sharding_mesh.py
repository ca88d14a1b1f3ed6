"""Mesh sizes from the config, partition specs of a train state, and errors naming config keys."""

import jax
import ml_collections
import numpy as np
import pytest

from pep_jax import config as config_lib
from pep_jax import sharding
from pep_jax.sharding import specs
from pep_jax.sharding.batches import process_rows


def mesh_config(data, table, row_multiple=1024):
  return ml_collections.ConfigDict({'data': data, 'table': table, 'row_multiple': row_multiple})


@pytest.mark.parametrize('data,table,devices,expected', [
    (1, -1, 8, (1, 8)), (-1, 1, 8, (8, 1)), (2, -1, 8, (2, 4)), (-1, 4, 8, (2, 4)),
    (2, 4, 8, (2, 4)), (1, -1, 1, (1, 1)),
])
def test_mesh_shape_resolves_all_remaining(data, table, devices, expected):
  assert sharding.mesh_shape(mesh_config(data, table), devices) == expected


@pytest.mark.parametrize('data,table,devices,key', [
    (3, -1, 8, 'mesh.data'), (-1, 3, 8, 'mesh.table'), (2, 2, 8, 'mesh.data x mesh.table'),
    (-1, -1, 8, 'mesh.data and mesh.table'), (0, -1, 8, 'mesh.data'),
])
def test_mesh_shape_errors_name_the_key(data, table, devices, key):
  with pytest.raises(ValueError, match=key.replace('.', r'\.')):
    sharding.mesh_shape(mesh_config(data, table), devices)


def test_config_validation_names_mesh_keys():
  config = config_lib.default_config()
  config_lib.validate(config)
  assert (config.mesh.data, config.mesh.table) == (1, -1)
  config.mesh.table = -2
  with pytest.raises(ValueError, match=r'mesh\.table'):
    config_lib.validate(config)
  config.mesh.table, config.mesh.row_multiple = -1, 0
  with pytest.raises(ValueError, match=r'mesh\.row_multiple'):
    config_lib.validate(config)


def test_mesh_keys_do_not_split_a_work_directory():
  assert {'mesh.data', 'mesh.table'} <= set(config_lib.RESUMABLE_KEYS)
  assert 'mesh.row_multiple' not in config_lib.RESUMABLE_KEYS  # it changes the table's shape


def test_row_multiple_must_split_over_the_table_axis():
  mesh = sharding.build_mesh(mesh_config(1, -1))
  assert sharding.row_multiple(mesh, mesh_config(1, -1, 1000)) == 1000
  fake = type('FakeMesh', (), {'shape': {'data': 1, 'table': 3}})()
  with pytest.raises(ValueError, match=r'mesh\.row_multiple.*e\.g\. 3072'):
    sharding.row_multiple(fake, mesh_config(1, -1, 1024))


def test_batch_size_must_split_over_the_devices():
  fake = type('FakeMesh', (), {'size': 8, 'shape': {'data': 1, 'table': 8}})()
  with pytest.raises(ValueError, match=r'train\.batch_size'):
    sharding.check_divides(fake, 100, 'train.batch_size')


def test_state_leaves_get_row_or_replicated_specs():
  mesh = sharding.single_device_mesh()
  leaf = jax.ShapeDtypeStruct((16, 4), np.float32)
  tree = {
      'params': {'embedding': {'table': leaf, 'threshold': leaf}, 'FirstOrder_0': {'weight': leaf}},
      'opt_state': ({'mu': {'embedding': {'table': leaf, 'threshold': leaf}}},),
      'ticket': {'embedding': {'mask': leaf}},
      'step': jax.ShapeDtypeStruct((), np.int32),
  }
  for per_feature in (True, False):
    got = specs.tree_shardings(mesh, tree, per_feature_threshold=per_feature)
    rows = specs.TABLE_ROWS
    assert got['params']['embedding']['table'].spec == rows
    assert got['params']['embedding']['threshold'].spec == (rows if per_feature else
                                                            specs.REPLICATED)
    assert got['opt_state'][0]['mu']['embedding']['table'].spec == rows
    assert got['opt_state'][0]['mu']['embedding']['threshold'].spec == (
        rows if per_feature else specs.REPLICATED)
    assert got['ticket']['embedding']['mask'].spec == rows
    assert got['params']['FirstOrder_0']['weight'].spec == specs.REPLICATED
    assert got['step'].spec == specs.REPLICATED


def test_one_process_holds_the_whole_batch():
  mesh = sharding.single_device_mesh()
  assert process_rows(specs.batch_sharding(mesh), 256) == (0, 256)
