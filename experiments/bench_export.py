"""Bytes, accuracy and lookup speed of the exported forms (float32, int8, int4) of every demo run,
the choice of the quantisation's scale granularity, and a Criteo-sized table.

    python experiments/bench_export.py --workdir=runs/demo --json=docs/results/bench_export.json

Reads every finished run of a work directory made by configs/demo.py (running the demo into
it first when it holds none, a few minutes on a CPU). Three parts (``--parts``):

* ``forms``: each run exported (``pep_jax.export.export``) in each form of ``--forms`` and each
  layout its method stores it in (``bitmask`` and ``csr`` for a ticket): the embedding's bytes
  (``compact_bytes``, what the artifact stores) and their share of the dense ``[N, D]`` float32
  table; the test AUC of the trained model and of the artifact, its drop, and the largest
  probability difference (the export's check, recorded with ``max_auc_drop=1`` so every form is
  measured; ``passes`` says whether the default 0.001 would have written it); rows/s of the
  lookup alone (the layout's lookup, what it derives computed once) and of the whole scorer on
  the test split in batches of ``--batch_size``, best of ``--repeats``, and each over the float
  form's. The forms of a layout are timed in turn within each repeat, so load from other work
  on a shared machine falls on all of them alike.
* ``study``: the scale granularity. The demo's 10% ticket and its uniform d=16 model quantised
  with 8 and 4 bits, symmetric and affine, one scale per ``--groups`` entries (rounded to whole
  rows; 0: one scale per array): bytes and test AUC drop of the compact model (not exported).
* ``criteo``: a random pruned table of Criteo's size (1,086,810 features, 39 fields, d=24, a
  share ``--density`` of its entries kept) and its dense table: bytes of each form, rows/s of
  the lookup on random ids, and the cost of deriving the bitmask's row offsets on every call
  (as the standalone StableHLO scorer does) against deriving them once.

Prints tables and writes them as JSON with the machine's description.
"""

import argparse
import datetime
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
from pep_jax.layers import quant
from pep_jax.layers.embedding import field_offsets
from pep_jax.methods.base import quantized
from pep_jax.metrics import auc

# Criteo as the paper prepares it: 13 integer fields (small after the log rule), 26 categorical.
CRITEO_FIELDS = (
    [40, 90, 80, 50, 200, 110, 80, 70, 100, 10, 30, 60, 70] +
    [1400, 550, 200000, 180000, 290, 22, 11000, 600, 3, 40000, 5000, 190000, 3100, 26, 11000,
     220000, 10, 4000, 2000, 4, 150000, 15, 15, 40000, 70, 26715])
CRITEO_DIM = 24


def machine() -> dict:
  """What the numbers were measured on."""
  device = jax.devices()[0]
  return {'platform': platform.platform(), 'processor': platform.processor() or platform.machine(),
          'cpu_count': os.cpu_count(), 'python': platform.python_version(),
          'jax': jax.__version__, 'device_platform': device.platform,
          'device_kind': device.device_kind,
          'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds')}


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


def interleaved_rates(cases: dict, batches, repeats: int) -> dict:
  """Rows/s of each ``fn(weights, ids)`` of ``cases = {key: (fn, weights)}`` over ``batches``
  (device ids ``[b, F]``), best of ``repeats``, timed in turn: each repeat times every case
  once, so a burst of load from other work affects all of them alike."""
  def run(fn, weights):
    jax.block_until_ready([fn(weights, ids) for ids in batches])

  for fn, weights in cases.values():
    run(fn, weights)  # compile
  best = {key: float('inf') for key in cases}
  for _ in range(repeats):
    for key, (fn, weights) in cases.items():
      start = time.perf_counter()
      run(fn, weights)
      best[key] = min(best[key], time.perf_counter() - start)
  rows = sum(len(b) for b in batches)
  return {key: rows / seconds for key, seconds in best.items()}


def lookup_fn(layout: compact_lib.Layout, field_dims, dim: int, derive: bool = False):
  """``(arrays, ids) -> [b, F, D]``, jitted: the layout's lookup alone; with ``derive`` the
  arrays are the stored ones and what the layout derives is computed on every call."""
  offsets = jnp.asarray(field_offsets(field_dims), jnp.int32)

  def lookup(arrays, ids):
    if derive:
      arrays = compact_lib.with_derived(layout, arrays)
    return layout.lookup(arrays, ids, ids + offsets[None, :], dim)

  return jax.jit(lookup)


def device(arrays: dict) -> dict:
  """``arrays`` (float or quantised) on the device, so no call copies them from the host."""
  return jax.tree.map(jnp.asarray, arrays)


def folder_bytes(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)


# ----------------------------------------------------------------------------- forms


def bench_forms(workdir: str, name: str, args, scratch: str) -> list[dict]:
  run = export.load_run(workdir, name)
  batches = [jnp.asarray(b['ids']) for b in
             pipeline.batches(run.data.test, args.batch_size, shuffle=False)]
  dense_table_bytes = run.num_rows * run.dim * 4
  rows = []
  for layout in run.method.layouts:
    manifests, cases = {}, {}
    for form in args.forms:
      out = os.path.join(scratch, f'{name}_{layout}_{form}')
      try:
        manifest = export.export(workdir, out, run=name, layout=layout, quantize=form,
                                 max_auc_drop=1.0)
      except InputError:  # not a layout of this run (e.g. a bitmask above 32 dimensions)
        break
      if manifest['model']['layout'] != layout:
        break
      manifests[form] = manifest
      scorer = serving.load(out)
      served = serving.layout_of(run.method.name, layout)
      embedding = serving.embedding_from_flat(
          {k: np.asarray(v) for k, v in scorer.weights.items()}, manifest['model']['quantized'],
          out)  # the stored arrays and the derived ones, as loaded
      cases[form, 'lookup'] = (lookup_fn(served, run.data.field_dims, run.dim),
                               device(embedding))
      cases[form, 'scorer'] = (scorer.score, scorer.weights)
      manifest['artifact_bytes'] = folder_bytes(out)
    rates = interleaved_rates(cases, batches, args.repeats)
    for form, manifest in manifests.items():
      check = manifest['check']
      lookup, scorer = rates[form, 'lookup'], rates[form, 'scorer']
      rows.append({
          'part': 'forms', 'run': name, 'layout': layout, 'form': form,
          'nonzeros': run.result.get('nonzeros'), 'bytes': manifest['compact_bytes'],
          'dense_table_bytes': dense_table_bytes,
          'fraction_of_dense': manifest['compact_bytes'] / dense_table_bytes,
          'artifact_bytes': manifest['artifact_bytes'],
          'test_auc_reference': check['test_auc_reference'],
          'test_auc': check['test_auc_compact'], 'auc_drop': check['auc_drop'],
          'max_prob_diff': check['compact']['max_abs_diff'],
          'passes_default_check': (check['passed'] if form == 'none'
                                   else abs(check['auc_drop']) <= export.MAX_AUC_DROP),
          'lookup_rows_per_second': lookup, 'scorer_rows_per_second': scorer,
          'lookup_over_float': lookup / rates['none', 'lookup'],
          'scorer_over_float': scorer / rates['none', 'scorer'],
      })
      row = rows[-1]
      print(f'{name:12s} {layout:9s} {form:5s} {row["bytes"]:10,d} '
            f'{row["fraction_of_dense"]:7.2%} {row["test_auc"]:.5f} {row["auc_drop"]:+.5f} '
            f'{row["max_prob_diff"]:9.2e} {lookup:12,.0f} {row["lookup_over_float"]:6.2f} '
            f'{scorer:12,.0f} {row["scorer_over_float"]:6.2f}', flush=True)
  return rows


# ----------------------------------------------------------------------------- study


def study_runs(names: list[str]) -> list[str]:
  """The smallest PEP ticket and the widest uniform model (``names`` as
  :func:`finished_runs` orders them)."""
  tickets = [n for n in names if n.startswith('pep_b')]
  uniform = [n for n in names if n.startswith('ue_')]
  return tickets[-1:] + uniform[:1]


def bench_study(workdir: str, name: str, args) -> list[dict]:
  run = export.load_run(workdir, name)
  stored = run.method.compact(run.ctx, run.candidate, run.stage, run.state, run.constants, None)
  served = run.method.layouts[stored.layout]
  test = run.data.test
  ids = np.asarray(test.ids)
  labels = np.asarray(test.labels)
  _, flat = export.compact_weights(run)
  dense = {k: v for k, v in flat.items() if not k.startswith(serving.EMBEDDING)}

  def test_auc(arrays) -> float:
    derived = serving.derived_arrays(served, arrays)
    model = serving.compact_model(run.config, run.data.field_dims, served, run.dim,
                                  {**arrays, **derived})
    weights = {k: jnp.asarray(v) for k, v in dense.items()}
    weights.update(serving.flat_embedding(device({**arrays, **derived})))
    score = jax.jit(serving.score_function(model))
    return auc(labels, export.batched(lambda batch: score(weights, batch), ids))

  reference = test_auc(stored.arrays)
  dense_table_bytes = run.num_rows * run.dim * 4
  rows = []
  for bits in (8, 4):
    for symmetric in (True, False):
      for group in args.groups:
        scheme = quant.Scheme(bits, group or 2**62, symmetric)
        form = quantized(run.method, stored, scheme)
        drop = reference - test_auc(form.arrays)
        rows.append({'part': 'study', 'run': name, 'layout': stored.layout, 'bits': bits,
                     'symmetric': symmetric, 'group': group, 'bytes': form.bytes,
                     'fraction_of_dense': form.bytes / dense_table_bytes,
                     'test_auc_float': reference, 'auc_drop': drop})
        print(f'{name:12s} {stored.layout:9s} {bits:4d} {"symmetric" if symmetric else "affine":9s} '
              f'{group or "array":>6} {form.bytes:10,d} {form.bytes / dense_table_bytes:7.2%} '
              f'{drop:+.5f}', flush=True)
  return rows


# ----------------------------------------------------------------------------- criteo


def criteo_table(density: float, seed: int = 0) -> np.ndarray:
  """A random ``[N, 24]`` table with a share ``density`` of its entries non-zero."""
  rng = np.random.default_rng(seed)
  num_rows = sum(CRITEO_FIELDS)
  table = rng.standard_normal((num_rows, CRITEO_DIM), dtype=np.float32) * 0.01
  table[rng.random(table.shape, dtype=np.float32) >= density] = 0
  return table


def bench_criteo(args) -> list[dict]:
  table = criteo_table(args.density)
  dims = np.asarray(CRITEO_FIELDS)
  rng = np.random.default_rng(1)
  batches = [jnp.asarray(rng.integers(0, dims, size=(args.batch_size, len(dims))), jnp.int32)
             for _ in range(args.criteo_batches)]
  dense_table_bytes = table.size * 4
  rows = []
  for layout, encode, served in (('dense', compact_lib.encode_dense, compact_lib.DENSE),
                                 ('bitmask', compact_lib.encode_bitmask, compact_lib.BITMASK)):
    stored = encode(table)
    forms, cases = {}, {}
    for form in args.forms:
      scheme = quant.SCHEMES[form]
      arrays = stored if scheme is None else compact_lib.quantize_arrays(served, stored, scheme)
      on_device = device(arrays)
      forms[form] = arrays
      cases[form, 'once'] = (lookup_fn(served, dims, CRITEO_DIM),
                             {**on_device, **serving.derived_arrays(served, on_device)})
      if served.derive is not None:
        cases[form, 'every call'] = (lookup_fn(served, dims, CRITEO_DIM, derive=True), on_device)
    rates = interleaved_rates(cases, batches, args.repeats)
    for form, arrays in forms.items():
      rate = rates[form, 'once']
      row = {'part': 'criteo', 'layout': layout, 'form': form, 'rows': int(table.shape[0]),
             'dim': CRITEO_DIM, 'nonzeros': int((table != 0).sum()),
             'bytes': compact_lib.nbytes(arrays), 'dense_table_bytes': dense_table_bytes,
             'fraction_of_dense': compact_lib.nbytes(arrays) / dense_table_bytes,
             'lookup_rows_per_second': rate, 'lookup_over_float': rate / rates['none', 'once']}
      line = ''
      if served.derive is not None:
        derive = jax.jit(served.derive)
        on_device = device(arrays)
        row['derive_seconds'] = best_seconds(lambda: jax.block_until_ready(derive(on_device)),
                                             args.repeats)
        row['lookup_rows_per_second_deriving_every_call'] = rates[form, 'every call']
        row['batch_seconds'] = args.batch_size / rate
        line = (f'   derive once {1e3 * row["derive_seconds"]:.2f} ms, a batch '
                f'{1e3 * row["batch_seconds"]:.2f} ms; deriving on every call '
                f'{rates[form, "every call"]:,.0f} rows/s ({rates[form, "every call"] / rate:.2f}x)')
      rows.append(row)
      print(f'criteo       {layout:9s} {form:5s} {row["bytes"]:12,d} '
            f'{row["fraction_of_dense"]:7.2%} {rate:12,.0f} {row["lookup_over_float"]:6.2f}'
            + line, flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='runs/demo')
  parser.add_argument('--parts', default='forms,study,criteo')
  parser.add_argument('--runs', default=None, help='runs of the forms part (default: every '
                      'finished run)')
  parser.add_argument('--forms', default='none,int8,int4')
  parser.add_argument('--groups', default='16,64,256,1024,0',
                      help='entries per scale in the study (0: one per array)')
  parser.add_argument('--study_runs', default=None,
                      help='runs of the study (default: the smallest ticket, the widest UE)')
  parser.add_argument('--batch_size', type=int, default=4096)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--density', type=float, default=0.1)
  parser.add_argument('--criteo_batches', type=int, default=10)
  parser.add_argument('--json', default='bench_export.json')
  args = parser.parse_args()
  args.forms = args.forms.split(',')
  args.groups = [int(g) for g in args.groups.split(',')]
  parts = args.parts.split(',')
  if {'forms', 'study'} & set(parts) and not wd.finished_runs(args.workdir):
    command = [sys.executable, '-m', 'pep_jax.main', '--config=configs/demo.py',
               f'--workdir={args.workdir}']
    print(f'{args.workdir} holds no finished runs: {" ".join(command[1:])}')
    subprocess.run(command, check=True)

  rows = []
  if 'forms' in parts:
    print(f'{"run":12s} {"layout":9s} {"form":5s} {"bytes":>10s} {"of dense":>7s} '
          f'{"test AUC":>7s} {"AUC drop":>8s} {"max |dp|":>9s} {"lookup rows/s":>12s} '
          f'{"/float":>6s} {"scorer rows/s":>12s} {"/float":>6s}')
    scratch = tempfile.mkdtemp(prefix='bench_export_')
    try:
      for name in (args.runs.split(',') if args.runs else finished_runs(args.workdir)):
        rows += bench_forms(args.workdir, name, args, scratch)
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
  if 'study' in parts:
    print(f'\n{"run":12s} {"layout":9s} {"bits":>4s} {"scheme":9s} {"group":>6s} {"bytes":>10s} '
          f'{"of dense":>7s} {"AUC drop":>8s}')
    for name in (args.study_runs.split(',') if args.study_runs
                 else study_runs(finished_runs(args.workdir))):
      rows += bench_study(args.workdir, name, args)
  if 'criteo' in parts:
    print(f'\n{"table":12s} {"layout":9s} {"form":5s} {"bytes":>12s} {"of dense":>7s} '
          f'{"lookup rows/s":>12s} {"/float":>6s}')
    rows += bench_criteo(args)
  with open(args.json, 'w') as f:
    json.dump({'machine': machine(), 'workdir': os.path.abspath(args.workdir),
               'batch_size': args.batch_size, 'repeats': args.repeats,
               'density': args.density, 'criteo_batches': args.criteo_batches,
               'schemes': {k: v and v._asdict() for k, v in quant.SCHEMES.items()},
               'rows': rows}, f, indent=1)
  print(f'wrote {args.json}')


if __name__ == '__main__':
  main()
