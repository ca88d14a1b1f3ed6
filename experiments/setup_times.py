"""How long the README's set-up commands take: the demo and the test suite, with the load.

    python experiments/setup_times.py --demo            # the demo, in a fresh work directory
    python experiments/setup_times.py --tests           # the test suite
    python experiments/readme_results.py                # then the README's sentence

Each part runs the README's own command (what follows the virtual environment's creation,
activation and install, with this interpreter for ``python``) in a subprocess from the
repository root, passing its output through, and records in ``docs/results/setup_times.json``
its wall seconds, the load average before it started and after it ended, the machine and the
date. A part not run keeps what the file already holds. The demo runs in a fresh temporary work
directory instead of the README's ``runs/demo``. For the tests, the counts of pytest's final line
(passed, failed, skipped, ...) are kept; a failing suite or demo is recorded as failed, and the
script then exits with status 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'docs', 'results', 'setup_times.json')
# The README's two set-up commands: create and activate a venv, install, then the command itself.
SETUP_COMMAND = re.compile(r'```bash\n(python3 -m venv[^\n]*)\n```')
# pytest's final line: '3 failed, 796 passed, 2 skipped, 1 warning in 1076.12s (0:17:56)'.
PYTEST_COUNT = re.compile(r'(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|deselected|'
                          r'warnings?)\b')
PYTEST_FINAL = re.compile(r'(?:^|\s)in ([0-9.]+)s\b')
TAIL_LINES = 40  # of the output, kept in the results when a part failed


def readme_commands(readme: str) -> dict[str, str]:
  """``{'demo': ..., 'tests': ...}``: the README's commands after the venv and the install."""
  demo, tests = (line.split('&& ')[-1] for line in SETUP_COMMAND.findall(readme))
  return {'demo': demo, 'tests': tests}


def pytest_counts(line: str) -> dict[str, int] | None:
  """The counts of pytest's final line, or None when ``line`` is not one.

  Args:
    line: a line of pytest's output, with or without the ``=`` around it.

  Returns:
    ``{'passed': 799, 'failed': 0, ...}``: each outcome the line names (``error`` and
    ``warning`` as ``errors`` and ``warnings``), or None for any other line.
  """
  line = line.strip().strip('=').strip()
  if not PYTEST_FINAL.search(line):
    return None
  counts = {}
  for number, outcome in PYTEST_COUNT.findall(line):
    outcome = {'error': 'errors', 'warning': 'warnings'}.get(outcome, outcome)
    counts[outcome] = counts.get(outcome, 0) + int(number)
  if not counts and not line.startswith('no tests ran'):
    return None
  return counts


def machine() -> dict:
  """What the time was measured on: platform, architecture, CPU count and model, Python, JAX."""
  sys.path.insert(0, ROOT)
  from importlib import metadata
  from pep_jax import analysis
  return {'platform': platform.platform(), 'processor': platform.machine(),
          'cpus': os.cpu_count(), 'description': analysis.machine_line(),
          'python': platform.python_version(), 'jax': metadata.version('jax')}


def run(command: str, workdir: str | None = None) -> dict:
  """Runs one of the README's commands from the repository root, its output passed through.

  Args:
    command: the README's command, ``python ...``; ``python`` is this interpreter.
    workdir: replaces the value of the command's ``--workdir`` flag, when given.

  Returns:
    The command as run (``<temp dir>`` for ``workdir``), its exit status, wall seconds, the
    load averages (1, 5 and 15 minutes) before it started and after it ended, the machine, the
    date it started and the last lines of its output.
  """
  argv = shlex.split(command)
  shown = list(argv)
  if workdir is not None:
    for i, arg in enumerate(argv):
      if arg.startswith('--workdir='):
        argv[i], shown[i] = f'--workdir={workdir}', '--workdir=<temp dir>'
  if argv[0] == 'python':
    argv[0] = sys.executable
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
  date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  load_before = list(os.getloadavg())
  output = b''
  start = time.perf_counter()
  proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
  while chunk := proc.stdout.read1(1 << 16):  # as it comes, progress bars' returns included
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    output = (output + chunk)[-(1 << 16):]
  returncode = proc.wait()
  seconds = time.perf_counter() - start
  tail = output.decode(errors='replace').splitlines()[-TAIL_LINES:]
  return {'command': ' '.join(shown), 'returncode': returncode, 'seconds': seconds,
          'load_average_before': load_before, 'load_average_after': list(os.getloadavg()),
          'machine': machine(), 'date': date, 'output_tail': tail}


def time_demo(command: str) -> dict:
  """The demo command, in a fresh temporary work directory."""
  with tempfile.TemporaryDirectory(prefix='setup_times_demo_') as workdir:
    result = run(command, workdir)
  result['status'] = 'passed' if result['returncode'] == 0 else 'failed'
  if result['returncode'] == 0:
    del result['output_tail']
  return result


def time_tests(command: str) -> dict:
  """The test command, with the counts of pytest's final line."""
  result = run(command)
  counts = next((c for c in map(pytest_counts, reversed(result['output_tail']))
                 if c is not None), None)
  result['counts'] = counts
  ok = result['returncode'] == 0 and counts is not None and not (
      counts.get('failed') or counts.get('errors'))
  result['status'] = 'passed' if ok else 'failed'
  if ok:
    del result['output_tail']
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--demo', action='store_true', help="time the README's demo command")
  parser.add_argument('--tests', action='store_true', help="time the README's test command")
  parser.add_argument('--results', default=RESULTS, help='the JSON file to merge the parts into')
  args = parser.parse_args()
  if not (args.demo or args.tests):
    parser.error('nothing to time: give --demo, --tests or both')
  with open(os.path.join(ROOT, 'README.md')) as f:
    commands = readme_commands(f.read())
  results = {}
  if os.path.exists(args.results):
    with open(args.results) as f:
      results = json.load(f)
  timed = {}
  if args.demo:
    timed['demo'] = time_demo(commands['demo'])
  if args.tests:
    timed['tests'] = time_tests(commands['tests'])
  results.update(timed)
  with open(args.results, 'w') as f:
    json.dump(results, f, indent=1)
    f.write('\n')
  for part, result in timed.items():
    print(f'{part}: {result["status"]}, {result["seconds"]:.1f} s, load average '
          f'{result["load_average_before"][0]:.2f} before, {result["load_average_after"][0]:.2f} '
          'after' + (f', {result["counts"]}' if 'counts' in result else ''))
  print(f'wrote {args.results}; now: python experiments/readme_results.py')
  if any(result['status'] != 'passed' for result in timed.values()):
    sys.exit(1)


if __name__ == '__main__':
  main()
