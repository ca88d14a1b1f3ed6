"""Bytes and scoring speed of the exported models, dense against compact, at each demo budget.

    python experiments/bench_export.py --workdir=runs/demo --json=bench_export.json

Reads every finished run of a work directory made by configs/demo.py (running the demo into
it first when it holds none, a few minutes on a CPU) and, for each, measures:

* the embedding's bytes in memory: the dense ``[N, D]`` float32 table, and the arrays of each
  compact layout (``dense`` for a uniform model; ``bitmask`` and ``csr`` for a ticket);
* its bytes on disk: the layout's arrays in an ``.npz`` file, and the whole artifact that
  ``python -m pep_jax.export`` writes with the default layout;
* rows/s of the jitted scorer (the model around that layout) on the test split, in batches
  of ``--batch_size``; beside it the trained model's own eval step (padded table times mask,
  one device), the dense baseline.

Prints one row per (run, layout) and writes them as JSON with the machine's description.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from pep_jax import export, serving
from pep_jax.data import pipeline


def finished_runs(workdir: str) -> list[str]:
  root = os.path.join(workdir, 'retrain')
  names = [n for n in os.listdir(root) if os.path.exists(os.path.join(root, n, 'result.json'))]

  def order(name):  # tickets by budget, largest first, then the uniform models by width
    number = int(''.join(c for c in name if c.isdigit()))
    return (name.startswith('ue'), -number)

  return sorted(names, key=order)


def best_seconds(fn, repeats: int) -> float:
  fn()  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def compact_rate(run, flat_dense, layout, arrays, batches, repeats) -> float:
  """Rows/s of the compact scorer with ``arrays`` as its embedding."""
  model = serving.compact_model(run.config, run.data.field_dims, layout, run.dim, arrays)
  score = jax.jit(serving.score_function(model))
  weights = {k: jnp.asarray(v) for k, v in flat_dense.items()}
  weights.update({f'params/embedding/{k}': jnp.asarray(v) for k, v in arrays.items()})
  device_batches = [jnp.asarray(b['ids']) for b in batches]

  def go():
    jax.block_until_ready([score(weights, ids) for ids in device_batches])

  return sum(len(b) for b in device_batches) / best_seconds(go, repeats)


def trained_rate(run, batches, repeats) -> float:
  """Rows/s of the run's own eval step (the dense table as trained)."""
  sharding = run.stage.batch_sharding
  placed = [jax.device_put(b, sharding) for b in batches]

  def go():
    jax.block_until_ready([run.stage.eval_step(run.state, b, run.constants) for b in placed])

  return sum(len(b['ids']) for b in batches) / best_seconds(go, repeats)


def npz_bytes(arrays: dict, folder: str) -> int:
  path = os.path.join(folder, 'layout.npz')
  np.savez(path, **arrays)
  return os.path.getsize(path)


def folder_bytes(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


def bench_run(workdir, name, args, scratch) -> list[dict]:
  run = export.load_run(workdir, name)
  default_layout, flat = export.compact_weights(run)
  flat_dense = {k: v for k, v in flat.items() if not k.startswith('params/embedding/')}
  dense_param_bytes = serving.nbytes(flat_dense)
  params = jax.device_get(run.state.params)
  table = np.asarray(params['embedding']['table'])[:run.num_rows]
  if run.kind == 'masked':
    mask = np.asarray(jax.device_get(run.constants['ticket']['embedding']['mask']))
    table = table * mask[:run.num_rows].astype(table.dtype)
  dense_table_bytes = table.nbytes
  batches = list(pipeline.batches(run.data.test, args.batch_size, shuffle=False))
  artifact = os.path.join(scratch, name)
  manifest = export.export(workdir, artifact, run=name)
  artifact_bytes = folder_bytes(artifact)
  rows = [{'run': name, 'nonzeros': int(np.count_nonzero(table)), 'layout': 'trained model',
           'memory_bytes': dense_table_bytes, 'fraction_of_dense': 1.0,
           'disk_bytes': None, 'model_memory_bytes': dense_table_bytes + dense_param_bytes,
           'artifact_bytes': None,
           'rows_per_second': trained_rate(run, batches, args.repeats)}]
  layouts = ('dense', 'bitmask', 'csr') if run.kind == 'masked' else ('dense',)
  for layout in layouts:
    arrays = serving.ENCODERS[layout](table)
    memory = serving.nbytes(arrays)
    rows.append({
        'run': name, 'nonzeros': rows[0]['nonzeros'], 'layout': layout,
        'memory_bytes': memory, 'fraction_of_dense': memory / dense_table_bytes,
        'disk_bytes': npz_bytes(arrays, scratch),
        'model_memory_bytes': memory + dense_param_bytes,
        'artifact_bytes': artifact_bytes if layout == default_layout else None,
        'rows_per_second': compact_rate(run, flat_dense, layout, arrays, batches, args.repeats),
    })
  assert manifest['check']['passed']
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='runs/demo')
  parser.add_argument('--batch_size', type=int, default=4096)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--json', default='bench_export.json')
  args = parser.parse_args()
  if not os.path.isdir(os.path.join(args.workdir, 'retrain')):
    command = [sys.executable, '-m', 'pep_jax.main', '--config=configs/demo.py',
               f'--workdir={args.workdir}']
    print(f'{args.workdir} holds no finished runs: {" ".join(command[1:])}')
    subprocess.run(command, check=True)

  scratch = tempfile.mkdtemp(prefix='bench_export_')
  rows = []
  try:
    print(f'{"run":12s} {"nonzeros":>9s} {"layout":14s} {"memory B":>10s} {"of dense":>8s} '
          f'{"npz B":>10s} {"model B":>10s} {"artifact B":>10s} {"rows/s":>11s}')
    for name in finished_runs(args.workdir):
      for row in bench_run(args.workdir, name, args, scratch):
        rows.append(row)
        disk = f'{row["disk_bytes"]:,}' if row['disk_bytes'] else '-'
        art = f'{row["artifact_bytes"]:,}' if row['artifact_bytes'] else '-'
        print(f'{row["run"]:12s} {row["nonzeros"]:9,d} {row["layout"]:14s} '
              f'{row["memory_bytes"]:10,d} {row["fraction_of_dense"]:8.1%} {disk:>10s} '
              f'{row["model_memory_bytes"]:10,d} {art:>10s} {row["rows_per_second"]:11,.0f}')
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  with open(args.json, 'w') as f:
    json.dump({'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                           'cpus': os.cpu_count(), 'device': jax.devices()[0].device_kind,
                           'jax': jax.__version__},
               'workdir': os.path.abspath(args.workdir), 'batch_size': args.batch_size,
               'rows': rows}, f, indent=2)
  print(f'wrote {args.json}')


if __name__ == '__main__':
  main()
