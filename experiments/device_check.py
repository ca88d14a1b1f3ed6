"""One command for a machine lent with a GPU or TPU: devices, accelerator tests, FM + PEP speed.

    python experiments/device_check.py --out=docs/results/            # ~5 minutes on a GPU
    python experiments/device_check.py --out=docs/results/ --install  # first the accelerator JAX

Parts, each with its result and pass/fail in ``<out>/device_check_<platform>.json``:

* ``devices``: platform, kind and count of the devices JAX sees (listed by a short subprocess,
  so that the tests can have the devices next; a TPU admits one process at a time).
* ``tests``: ``pytest -m accelerator`` on those devices (PEP's sub-gradients against float64
  numpy, the lookup split over every local device, the tiny demo's tickets against those
  recorded on a CPU, and a retraining killed inside an epoch that must resume bit for bit). On
  a GPU with XLA's deterministic ops (``--xla_gpu_deterministic_ops=true``); ``resume_bit_exact``
  says whether the resumed run equalled the uninterrupted one.
* ``speed``: FM + PEP (feature-dimension thresholds) on the Criteo-sized table of
  ``experiments/bench_speed.py`` (39 fields, 1,086,810 features, d=24, batch 1024), in the
  ``dense`` and ``rows`` modes (``optimizer.updates``), 1 and ``--per-dispatch`` (200) steps per
  call, timed by bench_speed's own step timers: samples/s, bytes moved per step (dense mode:
  bench_speed's traffic model) and that traffic's share of the device's peak memory bandwidth
  (:data:`PEAK_BANDWIDTH`; None for a device not in the table, e.g. a CPU).
* ``aim``: at least 1M samples/s on one H100 or H200 (the best speed row); None elsewhere.

``--install`` runs ``pip install -U "jax[cuda12]"`` (a machine with ``nvidia-smi``) or
``"jax[tpu]"`` (a TPU VM) and starts the check again in a fresh interpreter; on a CPU it does
nothing; where pip fails (no network) the check goes on with the JAX installed. ``--quick`` is
the small version the test suite runs (MovieLens-sized table, a few steps), and what the speed
part falls back to when JAX finds no GPU or TPU; ``--tests-k`` narrows the tests
(``pytest -k``), ``--skip-tests`` leaves them out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the working tree's pep_jax, also where it is not installed
# Both this process and the tests' allocate as they go (JAX takes 75% of a GPU's memory at start).
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # noqa: E402

from experiments import bench_speed  # noqa: E402

# Peak memory bandwidth in bytes/s by device kind (a substring of ``device.device_kind``).
PEAK_BANDWIDTH = (
    ('H200', 4.8e12),
    ('H100 80GB HBM3', 3.35e12),  # H100 SXM
    ('H100 SXM', 3.35e12),
    ('A100-SXM4-80GB', 2.0e12),
    ('A100 80GB', 2.0e12),
    ('TPU v4', 1.2e12),
    ('TPU v5 lite', 0.82e12),  # v5e
    ('TPU v5e', 0.82e12),
)
AIM = {'samples_per_second': 1e6, 'device_kinds': ('H100', 'H200')}
RESUME_TEST = 'test_retraining_killed_inside_an_epoch_resumes_bit_exactly'
DETERMINISTIC_GPU = '--xla_gpu_deterministic_ops=true'


def peak_bandwidth(kind: str) -> float | None:
  """The device's peak memory bandwidth (bytes/s), or None when the table does not know it."""
  return next((peak for name, peak in PEAK_BANDWIDTH if name in kind), None)


def install_spec() -> str | None:
  """The accelerator build of JAX this machine needs, or None (a CPU-only machine)."""
  if shutil.which('nvidia-smi'):
    return 'jax[cuda12]'
  if os.path.exists('/dev/accel0') or (os.path.isdir('/dev/vfio') and os.environ.get('TPU_NAME')):
    return 'jax[tpu]'
  return None


def install(argv: list[str]) -> None:
  """Installs the accelerator JAX and runs this command again without ``--install``."""
  spec = install_spec()
  if spec is None:
    print('install: no GPU or TPU found; nothing to install')
    return
  print(f'install: pip install -U "{spec}"', flush=True)
  proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '-U', spec])
  if proc.returncode:  # e.g. no network: check with the JAX that is there
    print(f'install: pip failed (exit status {proc.returncode}); going on with jax '
          f'{jax.__version__} as installed', flush=True)
    return
  rest = [a for a in argv if a != '--install']
  os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *rest])


# --- the parts ---------------------------------------------------------------------------------


LIST_DEVICES = '''
import json, jax
d = jax.devices()
print(json.dumps({"platform": d[0].platform, "kind": d[0].device_kind, "count": len(d),
                  "local_count": jax.local_device_count(), "backend": jax.default_backend()}))
'''


def devices() -> dict:
  """The devices JAX sees, listed by a short subprocess (which then lets them go)."""
  proc = subprocess.run([sys.executable, '-c', LIST_DEVICES], capture_output=True, text=True,
                        timeout=300)
  if proc.returncode:
    return {'pass': False, 'output_tail': (proc.stdout + proc.stderr)[-2000:]}
  found = json.loads(proc.stdout.strip().splitlines()[-1])
  return {**found, 'pass': found['count'] >= 1}


def tests_environment(backend: str) -> tuple[dict, list[str]]:
  """The tests' environment on ``backend``: XLA's deterministic ops on a GPU."""
  env = dict(os.environ, JAX_PLATFORMS=backend,
             PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))
  flags = []
  if backend == 'gpu':
    flags.append(DETERMINISTIC_GPU)
    env['XLA_FLAGS'] = ' '.join(filter(None, (os.environ.get('XLA_FLAGS'), DETERMINISTIC_GPU)))
  return env, flags


def junit_results(path: str) -> list[dict]:
  """Every test case of a JUnit XML report: its id, outcome and seconds."""
  out = []
  for case in ElementTree.parse(path).getroot().iter('testcase'):
    outcome = 'passed'
    for child, name in (('failure', 'failed'), ('error', 'error'), ('skipped', 'skipped')):
      if case.find(child) is not None:
        outcome = name
    out.append({'test': f'{case.get("classname")}::{case.get("name")}', 'outcome': outcome,
                'seconds': float(case.get('time') or 0.0)})
  return out


def run_tests(backend: str, k: str, timeout: float) -> dict:
  """``pytest -m accelerator`` (narrowed by ``-k k``) on ``backend``."""
  env, flags = tests_environment(backend)
  with tempfile.TemporaryDirectory(prefix='device_check_') as tmp:
    report = os.path.join(tmp, 'junit.xml')
    command = [sys.executable, '-m', 'pytest', '-q', '-m', 'accelerator', '-p', 'no:cacheprovider',
               f'--junitxml={report}', *(['-k', k] if k else [])]
    start = time.perf_counter()
    try:
      proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
      returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
      partial = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ''
      returncode, output = None, f'timed out after {timeout:.0f} s: {partial}'
    seconds = time.perf_counter() - start
    results = junit_results(report) if os.path.exists(report) else []
  resume = [r['outcome'] for r in results if RESUME_TEST in r['test']]
  counts = {o: sum(r['outcome'] == o for r in results)
            for o in ('passed', 'failed', 'error', 'skipped')}
  row = {'pass': returncode == 0 and counts['passed'] > 0, 'returncode': returncode,
         'seconds': seconds, 'xla_flags': flags, **counts,
         'resume_bit_exact': all(o == 'passed' for o in resume) if resume else None,
         'results': results}
  if returncode != 0:
    row['output_tail'] = output[-3000:]
  return row


def speed_args(args: argparse.Namespace) -> argparse.Namespace:
  """bench_speed's flags for FM + PEP at feature-dimension thresholds, dense and rows."""
  shape = 'small' if args.quick else 'criteo'
  return bench_speed.parse_args([
      '--parts=step', f'--shapes={shape}', '--models=fm', '--methods=pep',
      '--granularities=feature_dimension', '--modes=dense,rows', f'--steps={args.steps}',
      f'--per-dispatch={args.per_dispatch}', f'--batch-size={args.batch_size}'])


def run_speed(args: argparse.Namespace, kind: str) -> dict:
  """bench_speed's step rows for every case of :func:`speed_args`, with the bandwidth's share."""
  bench = speed_args(args)
  todo = bench_speed.cases(bench, [])
  shape = bench_speed.SHAPES[bench.shapes[0]]
  batches = max(bench.per_dispatch, 2)
  data = bench_speed.fake_data(shape.field_dims, batches * bench.batch_size, bench.batch_size)
  peak = peak_bandwidth(kind)
  print(f'# {bench.shapes[0]}: {data.num_features:,} features x d={shape.dim}, batch '
        f'{bench.batch_size}, {bench.steps} timed steps per row', flush=True)
  bench_speed.print_header()
  rows, errors = [], []
  start = time.perf_counter()
  for case in todo:
    try:  # a case that fails (out of memory, say) is reported; the others still run
      case_rows = bench_speed.run_case(case, data, bench)
    except Exception as e:  # noqa: BLE001
      errors.append({**case.key(), 'error': f'{type(e).__name__}: {e}'[:2000]})
      print(f'{case.label} {case.mode}: {errors[-1]["error"][:200]}', flush=True)
      continue
    for row in case_rows:
      row.setdefault('bytes_per_step', None)  # the traffic model covers the dense mode only
      row['peak_bandwidth'] = peak
      row['bandwidth_fraction'] = (row['gb_per_second'] * 1e9 / peak
                                   if peak and 'gb_per_second' in row else None)
      rows.append(row)
  for row in rows:
    if row['bytes_per_step'] is not None:
      share = row['bandwidth_fraction']
      print(f'{row["mode"]} K={row["per_dispatch"]}: {row["bytes_per_step"] / 1e9:.3f} GB per '
            f'step, {row["gb_per_second"]:.1f} GB/s, ' +
            (f'{share:.1%} of {peak / 1e12:.2f} TB/s' if share is not None else
             'peak bandwidth unknown'))
  ran = all(math.isfinite(r['samples_per_second']) and r['samples_per_second'] > 0 for r in rows)
  return {'pass': ran and bool(rows) and not errors, 'seconds': time.perf_counter() - start,
          'shape': bench.shapes[0], 'features': data.num_features, 'dim': shape.dim,
          'batch_size': bench.batch_size, 'steps': bench.steps, 'rows': rows, 'errors': errors}


def aim(speed: dict, kind: str) -> dict:
  """Whether the best speed row reaches :data:`AIM` on an H100 or H200 (None elsewhere)."""
  best = max((r['samples_per_second'] for r in speed.get('rows', [])), default=None)
  applies = any(name in kind for name in AIM['device_kinds'])
  met = best is not None and best >= AIM['samples_per_second']
  return {'pass': met if applies else None, 'target_samples_per_second': AIM['samples_per_second'],
          'device_kinds': list(AIM['device_kinds']), 'best_samples_per_second': best}


# --- the report --------------------------------------------------------------------------------


def summary_line(name: str, part: dict) -> str:
  """What one part found, in a few words."""
  if name == 'devices':
    if not part['pass']:
      return part['output_tail'].strip().splitlines()[-1][:100]
    return f'{part["count"]} x {part["kind"]} ({part["platform"]})'
  if name == 'tests':
    exact = {True: 'bit-exact', False: 'NOT bit-exact', None: 'not run'}[part['resume_bit_exact']]
    return (f'{part["passed"]} passed, {part["failed"] + part["error"]} failed, '
            f'{part["skipped"]} skipped; resume {exact}' +
            (f' ({" ".join(part["xla_flags"])})' if part['xla_flags'] else ''))
  if name == 'speed':
    if not part['rows']:
      return f'no row ran: {part["errors"][0]["error"][:80]}'
    best = max(part['rows'], key=lambda r: r['samples_per_second'])
    share = best['bandwidth_fraction']
    return (f'best {best["samples_per_second"]:,.0f} samples/s ({best["mode"]}, '
            f'K={best["per_dispatch"]})' +
            (f', {share:.0%} of peak bandwidth' if share is not None else ''))
  if name == 'aim':
    best = part['best_samples_per_second']
    return (f'>= {part["target_samples_per_second"]:,.0f} samples/s on '
            f'{"/".join(part["device_kinds"])}: ' +
            ('not applicable' if part['pass'] is None else
             f'{best:,.0f}' if best is not None else 'no speed row'))
  return ''


def print_table(parts: dict) -> None:
  print(f'\n{"part":8s} {"pass":5s} result')
  for name, part in parts.items():
    verdict = {True: 'yes', False: 'NO', None: '-'}[part.get('pass')]
    print(f'{name:8s} {verdict:5s} {summary_line(name, part)}')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', default='docs/results', help='folder of device_check_<platform>.json')
  p.add_argument('--install', action='store_true',
                 help='pip install -U the GPU or TPU build of JAX first (nothing on a CPU)')
  p.add_argument('--quick', action='store_true',
                 help='small sizes (MovieLens-sized table, a few steps): the test suite\'s run')
  p.add_argument('--steps', type=int, default=None,
                 help='timed steps per speed row (default 200, quick 3)')
  p.add_argument('--per-dispatch', '--per_dispatch', type=int, default=None,
                 help='steps per call of the block rows (default 200, quick 2)')
  p.add_argument('--batch-size', '--batch_size', type=int, default=None,
                 help='default 1024, quick 64')
  p.add_argument('--skip-tests', action='store_true', help='leave out the accelerator tests')
  p.add_argument('--tests-k', '--tests_k', default='', help='pytest -k expression for the tests')
  p.add_argument('--tests-timeout', '--tests_timeout', type=float, default=360.0,
                 help='seconds the tests may take')
  args = p.parse_args(argv)
  small = {'steps': 3, 'per_dispatch': 2, 'batch_size': 64}
  full = {'steps': 200, 'per_dispatch': 200, 'batch_size': 1024}
  for key, value in (small if args.quick else full).items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  return args


def main(argv: list[str] | None = None) -> dict:
  argv = sys.argv[1:] if argv is None else argv
  args = parse_args(argv)
  if args.install:
    install(argv)  # starts the check again when it installed something
  start = time.perf_counter()
  parts = {'devices': devices()}
  print(f'devices: {summary_line("devices", parts["devices"])}', flush=True)
  backend = parts['devices'].get('backend', 'cpu')
  notes = []
  if backend == 'cpu' and not args.quick:
    notes.append('no GPU or TPU: the speed part ran at the --quick sizes (the Criteo-sized '
                 'table at 200 steps per row would take tens of minutes on a CPU)')
    print(f'note: {notes[-1]}', flush=True)
    args = parse_args([*argv, '--quick'])
  if not args.skip_tests:
    parts['tests'] = run_tests(backend, args.tests_k, args.tests_timeout)
    print(f'tests: {summary_line("tests", parts["tests"])}', flush=True)
  kind = jax.devices()[0].device_kind
  parts['speed'] = run_speed(args, kind)
  parts['aim'] = aim(parts['speed'], kind)
  print_table(parts)
  device = jax.devices()[0]
  report = {
      'device': {'platform': device.platform, 'kind': kind, 'count': jax.device_count()},
      'jax': jax.__version__, 'jaxlib': bench_speed.machine()['jaxlib'],
      'python': platform.python_version(), 'machine': bench_speed.machine(),
      'settings': {k: v for k, v in vars(args).items() if k not in ('out', 'install')},
      'seconds': time.perf_counter() - start,
      'passed': all(p.get('pass') is not False for p in parts.values()),
      'parts': parts, 'notes': notes,
  }
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, f'device_check_{device.platform}.json')
  with open(path, 'w') as f:
    json.dump(report, f, indent=1)
  print(f'{"passed" if report["passed"] else "FAILED"} in {report["seconds"]:.0f} s; wrote {path}')
  return report


if __name__ == '__main__':
  sys.exit(0 if main()['passed'] else 1)
