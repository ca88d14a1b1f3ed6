"""Benchmark of the ``criteo_raw`` TFDS builder: build time and one-epoch reading rate.

    python experiments/bench_tfds.py --rows=1000000 --json=docs/results/bench_tfds_1m.json

Needs TensorFlow and TensorFlow Datasets (``pip install tensorflow-cpu``). Generates the same
Criteo-format ``train.txt`` as ``experiments/bench_data.py`` (same generator, same seed), builds
``criteo_raw`` from it (``download_and_prepare`` with the file's folder as manual_dir), then
reads the train split for one full epoch the way a trainer would:
``tfds.load(..., shuffle_files=True)`` -> ``shuffle(buffer)`` -> ``batch`` -> ``prefetch`` ->
``tfds.as_numpy``. The examples hold raw byte strings, so the reading rate is before any
vocabulary lookup; the columnar cache's iterator rate (``bench_data.py``) is of int32 indices.
Prints a table and writes JSON: the command, the machine, the date and the load averages before
and after, with the measurements. ``docs/data.md`` quotes ``docs/results/bench_tfds_1m.json``
through ``experiments/readme_results.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_data  # noqa: E402  (the generator)

from pep_jax import analysis  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--rows', type=int, default=1_000_000, help='rows of the generated file')
  parser.add_argument('--batch_size', type=int, default=4096, help='batch size when reading')
  parser.add_argument('--shuffle_buffer', type=int, default=100_000,
                      help='tf.data shuffle buffer (examples) of the shuffled read')
  parser.add_argument('--json', default='', help='write the results here as JSON')
  parser.add_argument('--workdir', default='',
                      help='where the file and the TFDS data_dir go (default: a temp dir)')
  parser.add_argument('--keep', action='store_true', help='keep the file and the TFDS data')
  parser.add_argument('--nobuild', action='store_true',
                      help='reuse the TFDS data already prepared in --workdir')
  return parser.parse_args(argv)


def peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def folder_gb(path: str) -> float:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
             for f in files) / 1e9


def read_epoch(tfds, data_dir: str, batch_size: int, shuffle_buffer: int) -> tuple[int, float]:
  """Rows and seconds of one full epoch of the train split, as numpy batches."""
  import tensorflow as tf
  ds = tfds.load('criteo_raw', split='train', data_dir=data_dir, download=False,
                 shuffle_files=shuffle_buffer > 0,
                 read_config=tfds.ReadConfig(shuffle_seed=0))
  if shuffle_buffer:
    ds = ds.shuffle(shuffle_buffer, seed=0)
  ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
  start = time.perf_counter()
  rows = 0
  for batch in tfds.as_numpy(ds):
    rows += batch['label'].shape[0]
  return rows, time.perf_counter() - start


def run(args: argparse.Namespace, workdir: str) -> dict:
  try:
    import tensorflow as tf
  except ImportError as e:
    raise SystemExit('bench_tfds.py needs TensorFlow: pip install tensorflow-cpu') from e
  import tensorflow_datasets as tfds
  from pep_jax.data import tfds_builders

  raw_dir = os.path.join(workdir, 'criteo')
  data_dir = os.path.join(workdir, 'tfds')
  os.makedirs(raw_dir, exist_ok=True)
  path = os.path.join(raw_dir, 'train.txt')
  start = time.perf_counter()
  if not os.path.exists(path):
    bench_data.write_criteo(path, args.rows)
  gen_s = time.perf_counter() - start

  builder = tfds_builders.CriteoRaw(data_dir=data_dir)
  build_s = None
  if not args.nobuild:
    shutil.rmtree(os.path.join(data_dir, 'criteo_raw'), ignore_errors=True)
    builder = tfds_builders.CriteoRaw(data_dir=data_dir)
    start = time.perf_counter()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=raw_dir))
    build_s = time.perf_counter() - start
  split = builder.info.splits['train']
  examples = split.num_examples
  if examples != args.rows:  # the generated file has no malformed line
    raise RuntimeError(f'the TFDS build holds {examples:,} of the {args.rows:,} rows')

  reads = {}
  for name, buffer in (('shuffled', args.shuffle_buffer), ('in_order', 0)):
    rows, seconds = read_epoch(tfds, data_dir, args.batch_size, buffer)
    if rows != examples:
      raise RuntimeError(f'read {rows} rows of {examples} ({name})')
    reads[name] = {'seconds': seconds, 'rows_per_s': rows / seconds}

  return {
      'rows': args.rows, 'examples': examples, 'file_gb': os.path.getsize(path) / 1e9,
      'generate_s': gen_s, 'tfds_build_s': build_s,
      'tfds_build_rows_per_s': examples / build_s if build_s else None,
      'tfds_gb': folder_gb(builder.data_dir), 'tfds_shards': split.num_shards,
      'peak_rss_gb': peak_rss_gb(), 'batch_size': args.batch_size,
      'shuffle_buffer': args.shuffle_buffer,
      'read_rows_per_s_shuffled': reads['shuffled']['rows_per_s'],
      'read_s_shuffled': reads['shuffled']['seconds'],
      'read_rows_per_s_in_order': reads['in_order']['rows_per_s'],
      'read_s_in_order': reads['in_order']['seconds'],
      'tensorflow': tf.__version__, 'tensorflow_datasets': tfds.__version__,
  }


def main(argv=None):
  args = parse_args(argv)
  load_before = os.getloadavg()
  workdir = args.workdir or tempfile.mkdtemp(prefix='bench_tfds_')
  try:
    result = run(args, workdir)
  finally:
    if not args.keep and not args.workdir:
      shutil.rmtree(workdir, ignore_errors=True)
  build_s = result['tfds_build_s']
  print(f"{'rows':>12} {'file GB':>8} {'TFDS GB':>8} {'build s':>8} {'build rows/s':>13} "
        f"{'read rows/s (shuffled)':>23} {'read rows/s (in order)':>23}")
  print(f"{result['examples']:>12,} {result['file_gb']:>8.2f} {result['tfds_gb']:>8.2f} "
        f"{build_s if build_s is not None else float('nan'):>8.1f} "
        f"{result['tfds_build_rows_per_s'] or float('nan'):>13,.0f} "
        f"{result['read_rows_per_s_shuffled']:>23,.0f} {result['read_rows_per_s_in_order']:>23,.0f}")
  result = {'command': ' '.join(['python', os.path.relpath(sys.argv[0])] + sys.argv[1:]),
            'machine': analysis.machine_line(), **analysis.conditions(load_before), **result}
  print(f"batch {result['batch_size']}, shuffle buffer {result['shuffle_buffer']}, "
        f"TensorFlow {result['tensorflow']}, TFDS {result['tensorflow_datasets']}")
  print(result['machine'], '; load average before', result['load_average_before'], 'after',
        result['load_average_after'])
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  main()
