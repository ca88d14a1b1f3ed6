"""Per-device memory and step time of the PEP train step on 1, 2, 4 and 8 devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python experiments/bench_scaling.py --out=docs/results/bench_scaling.json

For every device count and vocabulary the train step (PEP-FM, ``embedding.dim=64``,
feature-dimension thresholds, Adam) is compiled for an abstract state, so vocabularies far
beyond this machine's memory cost nothing: ``compiled.memory_analysis()`` gives each device's
arguments (state + batch) and temporaries. The memory model it checks:

    state per device ~= (6 * D + 3) * rows * 4 bytes / n
                        (table, s, FM first-order weights, and Adam's mu and nu of all three)

Step times are measured (allocating the state) only where ``--time_up_to`` allows. On a CPU
with fake devices every "device" shares the same cores, so times show overhead, not speed-up;
on GPUs or TPUs they measure the real thing. The JSON holds the command, the settings, the
machine, the date and the load averages before and after with the rows; ``docs/sharding.md``
quotes ``docs/results/bench_scaling.json`` through ``experiments/readme_results.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from pep_jax import analysis
from pep_jax import sharding
from pep_jax.config import default_config
from pep_jax.data.base import CTRDataset, Split
from pep_jax.train.setup import build_stage

NUM_FIELDS = 39  # Criteo's
SMALL_FIELD = 100


def bench_config(dim: int, batch_size: int):
  c = default_config()  # PEP-FM
  c.embedding.dim = dim
  c.embedding.granularity = 'feature_dimension'
  c.train.batch_size = batch_size
  c.train.eval_batch_size = batch_size
  return c


def sized_dataset(vocab: int) -> CTRDataset:
  """A dataset with ``vocab`` features over 39 fields and no rows (shapes are all we need)."""
  dims = np.asarray([vocab - SMALL_FIELD * (NUM_FIELDS - 1)] + [SMALL_FIELD] * (NUM_FIELDS - 1))
  empty = Split(np.zeros((8, NUM_FIELDS), np.int32), np.zeros(8, np.float32))
  return CTRDataset('sized', tuple(f'f{i}' for i in range(NUM_FIELDS)), dims, empty, empty, empty)


def abstract_batch(stage, batch_size: int) -> dict:
  def spec(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=stage.batch_sharding)
  return {'ids': spec((batch_size, NUM_FIELDS), jnp.int32),
          'labels': spec((batch_size,), jnp.float32), 'weights': spec((batch_size,), jnp.float32)}


def random_batch(stage, data: CTRDataset, batch_size: int, seed: int) -> dict:
  rng = np.random.default_rng(seed)
  ids = np.stack([rng.integers(0, n, batch_size) for n in data.field_dims], 1).astype(np.int32)
  batch = {'ids': ids, 'labels': (rng.random(batch_size) < 0.25).astype(np.float32),
           'weights': np.ones(batch_size, np.float32)}
  return {k: jax.device_put(v, stage.batch_sharding) for k, v in batch.items()}


def measure(n: int, vocab: int, dim: int, batch_size: int, time_steps: int) -> dict:
  config = bench_config(dim, batch_size)
  data = sized_dataset(vocab)
  mesh = sharding.build_mesh(config.mesh, jax.devices()[:n])
  stage = build_stage(config, data, 'pep', mesh=mesh)
  state = stage.abstract_state()
  t0 = time.perf_counter()
  compiled = stage.train_step.lower(state, abstract_batch(stage, batch_size), {}).compile()
  compile_s = time.perf_counter() - t0
  memory = compiled.memory_analysis()
  rows = state.params['embedding']['table'].shape[0]
  model_bytes = (6 * dim + 3) * rows * 4 / n
  row = {
      'devices': n, 'vocab': vocab, 'dim': dim, 'batch_size': batch_size,
      'table_gib': rows * dim * 4 / 2**30,
      'state_gib_one_device': (6 * dim + 3) * rows * 4 / 2**30,
      'argument_gib': memory.argument_size_in_bytes / 2**30,
      'temp_gib': memory.temp_size_in_bytes / 2**30,
      'model_state_gib': model_bytes / 2**30,
      'compile_s': compile_s,
      'step_ms': None,
  }
  row['per_device_gib'] = row['argument_gib'] + row['temp_gib']
  row['model_error'] = abs(row['argument_gib'] - row['model_state_gib']) / row['model_state_gib']
  if time_steps:
    live = stage.initial_state()
    batches = [random_batch(stage, data, batch_size, s) for s in range(2)]
    live, metrics = stage.train_step(live, batches[0], {})  # compile + warm up
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for s in range(time_steps):
      live, metrics = stage.train_step(live, batches[s % 2], {})
    jax.block_until_ready(metrics)
    row['step_ms'] = (time.perf_counter() - t0) / time_steps * 1e3
    del live
  return row


def table(rows: list[dict]) -> str:
  head = ('| devices | vocabulary | table (GiB) | state on 1 device (GiB) | per device: state '
          '(GiB) | temporaries (GiB) | model (GiB) | step (ms) |')
  lines = [head, '|' + '---|' * 8]
  for r in rows:
    step = '-' if r['step_ms'] is None else f'{r["step_ms"]:.1f}'
    lines.append(f'| {r["devices"]} | {r["vocab"]:,} | {r["table_gib"]:.3f} | '
                 f'{r["state_gib_one_device"]:.3f} | {r["argument_gib"]:.3f} | '
                 f'{r["temp_gib"]:.3f} | {r["model_state_gib"]:.3f} | {step} |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--devices', default='1,2,4,8')
  parser.add_argument('--vocabs', default='100000,1000000,10000000,100000000')
  parser.add_argument('--dim', type=int, default=64)
  parser.add_argument('--batch_size', type=int, default=1024)
  parser.add_argument('--time_up_to', type=int, default=1_000_000,
                      help='measure step time for vocabularies up to this (allocates the state)')
  parser.add_argument('--time_steps', type=int, default=10)
  parser.add_argument('--out', default='bench_scaling.json')
  args = parser.parse_args()
  load_before = os.getloadavg()

  counts = [int(n) for n in args.devices.split(',') if int(n) <= jax.device_count()]
  rows = []
  for vocab in (int(v) for v in args.vocabs.split(',')):
    for n in counts:
      steps = args.time_steps if vocab <= args.time_up_to else 0
      rows.append(measure(n, vocab, args.dim, args.batch_size, steps))
      print(json.dumps(rows[-1]), flush=True)
  worst = max(r['model_error'] for r in rows)
  machine = {'platform': jax.devices()[0].platform, 'device_kind': jax.devices()[0].device_kind,
             'devices': jax.device_count(), 'cpu': platform.processor() or platform.machine(),
             'cpu_count': os.cpu_count(), 'jax': jax.__version__,
             'description': analysis.machine_line()}
  print(f'\nmachine: {machine}\n')
  print(table(rows))
  print(f'\nlargest gap between measured per-device state and the memory model: {worst:.2%}')
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump({'command': ' '.join(['python', os.path.relpath(sys.argv[0])] + sys.argv[1:]),
               'settings': {'devices': counts, 'dim': args.dim, 'batch_size': args.batch_size,
                            'time_up_to': args.time_up_to, 'time_steps': args.time_steps,
                            'fields': NUM_FIELDS},
               'machine': machine, **analysis.conditions(load_before), 'rows': rows,
               'model_max_error': worst}, f, indent=2)
  if jax.devices()[0].platform == 'cpu' and worst > 0.05:
    raise SystemExit(f'per-device state differs from the memory model by {worst:.1%}')


if __name__ == '__main__':
  main()
