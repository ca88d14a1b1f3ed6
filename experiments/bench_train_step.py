"""Train-step throughput of every stage on a Criteo-sized or a small table.

    python experiments/bench_train_step.py --json=bench_train_step.json
    python experiments/bench_train_step.py --shape=small --steps=300 --json=bench_small.json

The default table has Criteo's size as the paper prepares it (39 fields, 1,086,810 features)
at the public scripts' width d=24; ``--shape=small`` is MovieLens-sized (1,280 features,
d=32). Batch 1024, the faithful optimizer (dense Adam over the whole table every step). Prints
one row per (model, stage) with ms/step and samples/s, and writes the same rows as JSON. The
public PyTorch code needs about 2.1 s per PEP-FM step on the Criteo-sized table and about
11 ms on the small one on a 2-core CPU (see the README's performance section).
"""

import argparse
import json
import platform
import time

import jax
import numpy as np

from pep_jax.config import default_config
from pep_jax.data.base import CTRDataset, Split
from pep_jax.data import pipeline
from pep_jax.train.setup import build_stage

# 13 integer fields (small vocabularies after the log rule) and 26 categorical ones.
CRITEO_SHAPED = (
    [40, 90, 80, 50, 200, 110, 80, 70, 100, 10, 30, 60, 70] +
    [1400, 550, 200000, 180000, 290, 22, 11000, 600, 3, 40000, 5000, 190000, 3100, 26, 11000,
     220000, 10, 4000, 2000, 4, 150000, 15, 15, 40000, 70, 26715])
# MovieLens-sized: 7 fields, 1,280 features (the public code's small benchmark), at d=32.
SMALL = [278, 2, 7, 21, 800, 81, 91]
SHAPES = {'criteo': (CRITEO_SHAPED, 24), 'small': (SMALL, 32)}


def fake_data(field_dims, rows, seed=0):
  rng = np.random.default_rng(seed)
  ids = np.stack([np.minimum(rng.zipf(1.2, rows) - 1, d - 1) for d in field_dims], 1)
  split = Split(ids.astype(np.int32), (rng.random(rows) < 0.25).astype(np.float32))
  names = tuple(f'f{i}' for i in range(len(field_dims)))
  return CTRDataset('bench', names, np.asarray(field_dims), split, split, split)


def time_stage(config, data, kind, steps):
  stage = build_stage(config, data, kind)
  state = stage.initial_state()
  constants = {}
  if kind == 'masked':
    mask = jax.numpy.ones(state.params['embedding']['table'].shape, bool)
    constants = {'ticket': {'embedding': {'mask': mask}}}
  batches = list(pipeline.batches(data.train, config.train.batch_size, shuffle=True, seed=0))
  state, m = stage.train_step(state, batches[0], constants)  # compile
  jax.block_until_ready(m)
  start = time.perf_counter()
  for i in range(steps):
    state, m = stage.train_step(state, batches[(i + 1) % len(batches)], constants)
    if kind == 'pep':
      int(m['nonzeros'])  # the prune loop reads the count every step
  jax.block_until_ready(m)
  return (time.perf_counter() - start) / steps


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='fm,deepfm')
  parser.add_argument('--steps', type=int, default=30)
  parser.add_argument('--batch_size', type=int, default=1024)
  parser.add_argument('--shape', default='criteo', choices=sorted(SHAPES))
  parser.add_argument('--json', default='bench_train_step.json')
  args = parser.parse_args()

  field_dims, dim = SHAPES[args.shape]
  data = fake_data(field_dims, 16 * args.batch_size)
  rows = []
  print(f'table: {data.num_features:,} features x {dim} = {data.num_features * dim:,} entries; '
        f'batch {args.batch_size}; device {jax.devices()[0].device_kind}')
  print(f'{"model":8s} {"stage":8s} {"ms/step":>9s} {"samples/s":>11s}')
  for model in args.models.split(','):
    config = default_config()
    config.model.name = model
    config.embedding.dim = dim
    config.train.batch_size = args.batch_size
    for kind, label in (('pep', 'prune'), ('masked', 'retrain'), ('plain', 'ue')):
      sec = time_stage(config, data, kind, args.steps)
      rows.append({'model': model, 'stage': label, 'ms_per_step': 1e3 * sec,
                   'samples_per_second': args.batch_size / sec})
      print(f'{model:8s} {label:8s} {1e3 * sec:9.1f} {args.batch_size / sec:11,.0f}')
  with open(args.json, 'w') as f:
    json.dump({'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                           'cpus': __import__('os').cpu_count(),
                           'device': jax.devices()[0].device_kind, 'jax': jax.__version__},
               'shape': args.shape, 'features': data.num_features, 'dim': dim, 'batch_size': args.batch_size,
               'rows': rows}, f, indent=2)


if __name__ == '__main__':
  main()
