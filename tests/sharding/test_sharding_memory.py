"""The compiled train step holds 1/8 of the table per device on 8 devices, and never gathers it.

Nothing is allocated: the steps are compiled for abstract states (``Stage.abstract_state``) and
``compiled.memory_analysis()`` reports each device's arguments and temporaries.
"""

import pytest

from multidevice import run_on_devices

COMPILE = '''
import re
import jax.numpy as jnp
from pep_jax.data.base import CTRDataset, Split
from pep_jax.train.setup import build_stage

ROWS = (1 << 19) + (1 << 18) + 1000 + 7   # 787,439 features; padded to a multiple of 1024
config = tiny_config(**{'embedding.dim': 64, 'train.batch_size': 1024})
dims = np.array([1 << 19, 1 << 18, 1000, 7])
empty = Split(np.zeros((8, 4), np.int32), np.zeros(8, np.float32))
data = CTRDataset('sized', tuple('abcd'), dims, empty, empty, empty)
COLLECTIVE = re.compile(r'= (\\S+) (all-gather|all-reduce|reduce-scatter|all-to-all|'
                        r'collective-permute)(-start)?\\(')

out = {}
for kind in ('pep', 'masked'):
  for n in (1, 8):
    stage = build_stage(config, data, kind, mesh=mesh_of(n, config))
    state = stage.abstract_state()
    table = state.params['embedding']['table']
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=stage.batch_sharding)
    batch = {'ids': spec((1024, 4), jnp.int32), 'labels': spec((1024,), jnp.float32),
             'weights': spec((1024,), jnp.float32)}
    constants = {}
    if kind == 'masked':
      mask = jax.ShapeDtypeStruct(table.shape, jnp.bool_, sharding=stage.row_sharding)
      constants = {'ticket': {'embedding': {'mask': mask}}}
    compiled = stage.train_step.lower(state, batch, constants).compile()
    memory = compiled.memory_analysis()
    shapes = [m.group(1) for m in COLLECTIVE.finditer(compiled.as_text())]
    out[f'{kind}{n}'] = {
        'table_bytes': table.size * 4, 'table_rows': table.shape[0],
        'argument': memory.argument_size_in_bytes, 'temp': memory.temp_size_in_bytes,
        'collectives': shapes,
        'table_shard_rows': table.sharding.shard_shape(table.shape)[0],
    }
result(out)
'''


@pytest.fixture(scope='module')
def compiled():
  return run_on_devices(8, COMPILE, timeout=120)


@pytest.mark.parametrize('kind', ['pep', 'masked'])
def test_per_device_memory_is_an_eighth(compiled, kind):
  one, eight = compiled[f'{kind}1'], compiled[f'{kind}8']
  assert eight['table_shard_rows'] * 8 == one['table_shard_rows'] == one['table_rows']
  # Table, thresholds, first-order weights and their Adam moments are all split by rows; only
  # the small dense parameters and the batch slice are not.
  assert eight['argument'] <= one['argument'] / 8 + 2**20
  assert eight['temp'] <= one['temp'] / 8 * 1.2 + 2**20
  # Gradients and Adam's temporaries of the table (and thresholds) are slices too: all the
  # temporaries of a device together stay under one table.
  assert eight['temp'] < one['table_bytes']


@pytest.mark.parametrize('kind', ['pep', 'masked'])
def test_no_collective_moves_table_rows(compiled, kind):
  rows = compiled[f'{kind}8']['table_rows']
  for shape in compiled[f'{kind}8']['collectives']:
    dims = [int(d) for d in shape[shape.index('[') + 1:shape.index(']')].split(',') if d] \
        if '[' in shape else []
    # Ids and looked-up rows cross devices; at most one device's slice of table rows does
    # (the gradient summed over the 'data' copies), never the table.
    assert not any(d > rows // 8 for d in dims), shape
