"""Bytes and scoring speed of the exported models, dense against compact, at each demo budget.

    python experiments/bench_export.py --workdir=runs/demo --json=bench_export.json

Reads every finished run of a work directory made by configs/demo.py (running the demo into
it first when it holds none, a few minutes on a CPU) and, for each, measures:

* the embedding's bytes in memory: the dense ``[N, D]`` float32 table, and the arrays of each
  layout its method stores it in (``pep_jax.methods.base.Method.layouts``: ``bitmask`` and
  ``csr`` for a ticket, ``dense`` for a uniform model, ...), with the dense table the layer
  computes where it has one;
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
from pep_jax import workdir as wd
from pep_jax.data import pipeline
from pep_jax.errors import InputError
from pep_jax.layers import compact as compact_lib


def finished_runs(workdir: str) -> list[str]:
  """Finished runs, each method's largest first."""
  names = wd.finished_runs(workdir)
  params = {n: wd.result(workdir, n).get('params') or 0 for n in names}
  return sorted(names, key=lambda n: (n.split('_')[0], -params[n]))


def best_seconds(fn, repeats: int) -> float:
  fn()  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def compact_rate(run, flat_dense, lookup, arrays, batches, repeats) -> float:
  """Rows/s of the compact scorer with ``arrays`` (looked up by ``lookup``) as its embedding."""
  model = serving.compact_model(run.config, run.data.field_dims, lookup, run.dim, arrays)
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


def layouts_of(run) -> dict:
  """``{layout: stored form}`` of every layout the run's method can store it in, and the dense
  table it computes (``dense``) where its layer has one."""
  forms = {}
  if hasattr(run.stage.embedding, 'effective_table'):
    table = run.stage.embedding_call(run.state, 'effective_table', run.constants)
    forms['dense'] = compact_lib.encode_dense(np.asarray(table)[:run.num_rows])
  for layout in run.method.layouts:
    try:
      stored = run.method.compact(run.ctx, run.candidate, run.stage, run.state, run.constants,
                                  layout)
    except InputError:  # e.g. a bitmask above 32 dimensions
      continue
    if stored.layout == layout:
      forms[layout] = stored.arrays
  return forms


def bench_run(workdir, name, args, scratch) -> list[dict]:
  run = export.load_run(workdir, name)
  default, flat = export.compact_weights(run)
  flat_dense = {k: v for k, v in flat.items() if not k.startswith('params/embedding/')}
  dense_param_bytes = serving.nbytes(flat_dense)
  dense_table_bytes = run.num_rows * run.dim * np.dtype(np.float32).itemsize
  batches = list(pipeline.batches(run.data.test, args.batch_size, shuffle=False))
  artifact = os.path.join(scratch, name)
  manifest = export.export(workdir, artifact, run=name)
  artifact_bytes = folder_bytes(artifact)
  nonzeros = run.result.get('nonzeros')
  rows = [{'run': name, 'nonzeros': nonzeros, 'layout': 'trained model',
           'memory_bytes': dense_table_bytes, 'fraction_of_dense': 1.0,
           'disk_bytes': None, 'model_memory_bytes': dense_table_bytes + dense_param_bytes,
           'artifact_bytes': None,
           'rows_per_second': trained_rate(run, batches, args.repeats)}]
  for layout, arrays in layouts_of(run).items():
    lookup = compact_lib.dense_lookup if layout == 'dense' else run.method.layouts[layout]
    memory = serving.nbytes(arrays)
    rows.append({
        'run': name, 'nonzeros': nonzeros, 'layout': layout,
        'memory_bytes': memory, 'fraction_of_dense': memory / dense_table_bytes,
        'disk_bytes': npz_bytes(arrays, scratch),
        'model_memory_bytes': memory + dense_param_bytes,
        'artifact_bytes': artifact_bytes if layout == default.layout else None,
        'rows_per_second': compact_rate(run, flat_dense, lookup, arrays, batches, args.repeats),
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
  if not wd.finished_runs(args.workdir):
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
