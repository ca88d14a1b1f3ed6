"""Benchmark of the Criteo cache build and of the batch iterator, on a generated train.txt.

    python experiments/bench_data.py --rows=1000000 --json=docs/results/bench_data_1m.json

Generates a file in the exact Criteo format (tab-separated label, I1-I13, C1-C26; empty
values; negative I2; per-field cardinalities like the real data's, heavy-tailed), builds the
columnar cache in a fresh folder, then streams the training split through
``pipeline.prefetch(pipeline.batches(...))`` and ``pipeline.threaded_batches(..., workers=2)``.
Prints one table row per run and writes JSON: the command, the machine, the date and the load
averages before and after, with the measurements. Peak RSS is this process's after the build
(the generator runs in a child process). ``docs/data.md`` quotes ``docs/results/bench_data_*.json``
through ``experiments/readme_results.py``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time

from absl import app, flags
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from pep_jax import analysis
from pep_jax.data import config as data_config_lib
from pep_jax.data import pipeline, real

_ROWS = flags.DEFINE_integer('rows', 1_000_000, 'rows of the generated train.txt (full: 45840617)')
_JSON = flags.DEFINE_string('json', '', 'write the results here as JSON')
_WORKDIR = flags.DEFINE_string('workdir', '', 'where the file and cache go (default: a temp dir)')
_KEEP = flags.DEFINE_bool('keep', False, 'keep the generated file and cache')
_BATCH = flags.DEFINE_integer('batch_size', 4096, 'iterator batch size')
_ITER_ROWS = flags.DEFINE_integer('iter_rows', 0, 'rows read per iterator benchmark; 0: one epoch')
_BUILD = flags.DEFINE_bool('build', True, 'build the cache; --nobuild reuses the one in --workdir')

# Distinct values per categorical field in the real train.txt (C1..C26), as commonly reported.
CRITEO_CARDINALITY = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                      8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                      286181, 105, 142572)
_HEX = np.frombuffer(b'0123456789abcdef', np.uint8)


def _hex8(values: np.ndarray) -> np.ndarray:
  """uint32 ``[n]`` -> uint8 ``[n, 8]``: lowercase hex digits, most significant first."""
  shifts = np.arange(28, -1, -4, dtype=np.uint32)
  return _HEX[(values[:, None] >> shifts) & 15]


def _binary(chars: np.ndarray, empty: np.ndarray) -> pa.Array:
  """uint8 ``[n, 8]`` -> binary array of 8-byte strings, empty where ``empty``."""
  n = len(chars)
  lengths = np.where(empty, 0, 8).astype(np.int32)
  offsets = np.zeros(n + 1, np.int32)
  np.cumsum(lengths, out=offsets[1:])
  data = chars[~empty].reshape(-1)
  return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def criteo_table(rows: int, rng: np.random.Generator) -> pa.Table:
  """``rows`` random lines of train.txt as a table of 40 columns (nulls are empty values)."""
  cols = {'label': pa.array((rng.random(rows) < 0.25).astype(np.int8))}
  for i in range(13):
    v = np.floor(rng.lognormal(1.5 + 0.4 * i, 1.5, rows)).astype(np.int64)
    if i == 1:
      v -= 3  # I2 has negative values
    cols[f'I{i + 1}'] = pa.array(v, mask=rng.random(rows) < 0.05 * (i % 5))
  for c, card in enumerate(CRITEO_CARDINALITY):
    rank = np.floor(np.exp(rng.random(rows) * np.log(card + 1))).astype(np.uint64) - 1  # ~1/rank
    value = ((rank * np.uint64(2654435761) + np.uint64(c * 97 + 13)) & np.uint64(0xFFFFFFFF))
    cols[f'C{c + 1}'] = _binary(_hex8(value.astype(np.uint32)), rng.random(rows) < 0.02 * (c % 4))
  return pa.table(cols)


def write_criteo(path: str, rows: int, *, seed: int = 0, chunk: int = 1_000_000) -> None:
  """Writes a Criteo-format ``train.txt`` of ``rows`` lines."""
  rng = np.random.default_rng(seed)
  options = pa_csv.WriteOptions(include_header=False, delimiter='\t', quoting_style='none')
  first = criteo_table(min(chunk, rows), rng)
  with pa_csv.CSVWriter(path, first.schema, write_options=options) as writer:
    writer.write_table(first)
    done = first.num_rows
    while done < rows:
      table = criteo_table(min(chunk, rows - done), rng)
      writer.write_table(table)
      done += table.num_rows


def peak_rss_gb() -> float:
  """Peak resident memory of this process so far, GB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def iterator_rows_per_second(split, batch_size: int, max_rows: int, *, workers: int) -> float:
  """Rows/s of one shuffled pass (capped at ``max_rows``) through the batch iterator.

  ``workers=0``: ``prefetch(batches(...))`` (one background thread); otherwise
  ``threaded_batches(..., workers=workers)``.
  """
  limit = pipeline.num_batches(min(len(split), max_rows or len(split)), batch_size)
  if workers:
    it = pipeline.threaded_batches(split, batch_size, shuffle=True, workers=workers)
  else:
    it = pipeline.prefetch(pipeline.batches(split, batch_size, shuffle=True))
  start = time.perf_counter()
  rows = 0
  for b, batch in enumerate(it):
    rows += batch['ids'].shape[0]
    if b + 1 >= limit:
      break
  it.close()
  return rows / (time.perf_counter() - start)


def run(rows: int, workdir: str) -> dict:
  """Generates, builds, iterates; returns the measurements."""
  raw_dir = os.path.join(workdir, 'criteo')
  os.makedirs(raw_dir, exist_ok=True)
  path = os.path.join(raw_dir, 'train.txt')
  start = time.perf_counter()
  if not os.path.exists(path):  # in a child process, so the peak RSS below is the build's
    child = multiprocessing.get_context('spawn').Process(target=write_criteo, args=(path, rows))
    child.start()
    child.join()
    if child.exitcode:
      raise RuntimeError(f'generating {path} failed')
  gen_s = time.perf_counter() - start
  cfg = data_config_lib.data_defaults()
  cfg.name = 'criteo'
  cfg.dir = raw_dir
  cfg.cache_dir = os.path.join(workdir, 'cache')
  if _BUILD.value:
    shutil.rmtree(cfg.cache_dir, ignore_errors=True)
  rss_before = peak_rss_gb()
  start = time.perf_counter()
  folder = real.prepare(cfg)
  # To the hundredth of a second, as the cache's meta.json keeps the build's own times, so the
  # build (part of the preparation) never reads longer than the preparation by rounding.
  prepare_s = round(time.perf_counter() - start, 2)
  build_rss = peak_rss_gb()
  with open(os.path.join(folder, 'meta.json')) as f:
    meta = json.load(f)  # the build's own timings, also when --nobuild reuses the cache
  dataset = real.load(cfg)
  prefetch_rate = iterator_rows_per_second(dataset.train, _BATCH.value, _ITER_ROWS.value,
                                           workers=0)
  threaded_rate = iterator_rows_per_second(dataset.train, _BATCH.value, _ITER_ROWS.value,
                                           workers=2)
  files = {n: os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)}
  return {
      'rows': rows, 'file_gb': os.path.getsize(path) / 1e9, 'generate_s': gen_s,
      'cache_built_in_this_run': _BUILD.value,
      'build_s': meta['build_seconds'], 'build_pass1_s': meta['pass1_seconds'],
      'build_rows_per_s': rows / meta['build_seconds'], 'prepare_s': prepare_s,
      'cache_gb': sum(files.values()) / 1e9,
      'ids_gb': sum(b for n, b in files.items() if n.endswith('_ids.npy')) / 1e9,
      'train_ids_gb': files['train_ids.npy'] / 1e9, 'train_rows': len(dataset.train),
      'peak_rss_gb_before_build': rss_before, 'peak_rss_gb_after_build': build_rss,
      'iterator_rows_per_s_prefetch': prefetch_rate,
      'iterator_rows_per_s_threaded_2': threaded_rate, 'batch_size': _BATCH.value,
      'num_features': dataset.num_features, 'workers': cfg.workers,
  }


def main(argv):
  del argv
  load_before = os.getloadavg()
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix='bench_data_')
  try:
    result = run(_ROWS.value, workdir)
  finally:
    if not _KEEP.value and not _WORKDIR.value:
      shutil.rmtree(workdir, ignore_errors=True)
  print(f"{'rows':>12} {'file GB':>8} {'build s':>8} {'rows/s':>11} {'peak RSS GB':>11} "
        f"{'iter rows/s (prefetch)':>23} {'iter rows/s (2 threads)':>24}")
  print(f"{result['rows']:>12,} {result['file_gb']:>8.2f} {result['build_s']:>8.1f} "
        f"{result['build_rows_per_s']:>11,.0f} {result['peak_rss_gb_after_build']:>11.2f} "
        f"{result['iterator_rows_per_s_prefetch']:>23,.0f} "
        f"{result['iterator_rows_per_s_threaded_2']:>24,.0f}")
  result = {'command': ' '.join(['python', os.path.relpath(sys.argv[0])] + sys.argv[1:]),
            'machine': analysis.machine_line(), **analysis.conditions(load_before), **result}
  print(result['machine'], '; load average before', result['load_average_before'], 'after',
        result['load_average_after'])
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  app.run(main)
