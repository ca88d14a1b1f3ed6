"""Two processes on this machine run the demo as one run, and resume after one is killed.

Each process is started as a user would on two hosts (``python -m pep_jax.main`` with
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), with two fake CPU
devices each and the Gloo CPU collectives; one work directory is shared by both. The tiny demo
is cut to two pruning and two retraining epochs (``OVERRIDES``) so that the four runs below take
about a minute each on two cores:

* one process with four devices, the reference;
* two processes, uninterrupted: the same tickets (step, non-zeros, masks bit for bit) and the
  same summary as the reference; AUCs and sizes equal, loglosses within 1e-6 (relative), the
  float32 sums of an evaluation being added in another order when they cross processes;
* two processes, one SIGKILLed once the pruning has a checkpoint: the other ends by itself
  (the coordinator's heartbeat timeout, shortened here to 10 s), and the same command resumes
  to the summary of the uninterrupted two-process run, exactly.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import demo
from pep_jax import workdir as wd
from pep_jax.data import load_dataset
from pep_jax.parallel import HEARTBEAT_TIMEOUT
from pep_jax.train.setup import build_stage

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ('--config.prune.max_epochs=2', '--config.train.max_epochs=2')
TIMINGS = ('search_seconds', 'train_seconds', 'score_seconds', 'search_seconds_per_epoch')
RUN_TIMEOUT = 420  # seconds one run may take before the test gives up on it
HEARTBEAT_SECONDS = 10
DISTRIBUTED_VARS = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES',
                    'JAX_PROCESS_ID')


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def command(workdir) -> list[str]:
  return [sys.executable, '-m', 'pep_jax.main', '--config=configs/demo.py:tiny',
          f'--workdir={workdir}', *OVERRIDES]


def environment(devices: int, **extra: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARS}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', **extra)
  return env


def start_two(workdir, logs) -> list[subprocess.Popen]:
  """The two processes of one run; their output goes to ``logs/<workdir name>.<index>``."""
  port = free_port()
  procs = []
  for index in range(2):
    env = environment(2, JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2',
                      JAX_PROCESS_ID=str(index), JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
                      **{HEARTBEAT_TIMEOUT: str(HEARTBEAT_SECONDS)})
    out = open(logs / f'{os.path.basename(workdir)}.{index}', 'w')
    procs.append(subprocess.Popen(command(workdir), cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT))
    out.close()
  return procs


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int | None]:
  """Each process's exit status, or None for one still running after ``timeout`` seconds (it
  is then killed, so that no test leaves a process behind)."""
  deadline = time.monotonic() + timeout
  codes = []
  for proc in procs:
    try:
      codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
      codes.append(None)
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return codes


def log(logs, name: str, index: int) -> str:
  return (logs / f'{name}.{index}').read_text()


def run_two(workdir, logs) -> None:
  codes = wait_all(start_two(workdir, logs), RUN_TIMEOUT)
  name = os.path.basename(workdir)
  assert codes == [0, 0], (f'exit statuses {codes} (None: still running after {RUN_TIMEOUT} s, '
                           'then killed)\n' + log(logs, name, 0)[-3000:] +
                           log(logs, name, 1)[-3000:])


def finished_checkpoint(folder: str) -> bool:
  """Whether Orbax finished a step in ``folder`` (unfinished ones have temporary names)."""
  return os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('multiprocess')
  logs = root / 'logs'
  logs.mkdir()
  one, two, killed = root / 'one', root / 'two', root / 'killed'
  proc = subprocess.run(command(one), cwd=ROOT, env=environment(4), capture_output=True,
                        text=True, timeout=RUN_TIMEOUT)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  run_two(two, logs)

  procs = start_two(killed, logs)
  try:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not finished_checkpoint(wd.prune_checkpoints(str(killed))):
      assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, \
          'the two-process run ended or stalled before its first checkpoint'
      time.sleep(0.1)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    codes = wait_all(procs, 120)
    survivor_seconds = time.monotonic() - killed_at
  finally:
    wait_all(procs, 0)  # none is left running, whatever failed above
  finished_before_kill = os.path.exists(wd.summary_paths(str(killed))['json'])
  run_two(killed, logs)
  return {'one': one, 'two': two, 'killed': killed, 'logs': logs, 'codes': codes,
          'survivor_seconds': survivor_seconds, 'finished_before_kill': finished_before_kill}


def summary(workdir) -> list[dict]:
  with open(wd.summary_paths(str(workdir))['json']) as f:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in json.load(f)]


def tickets(workdir) -> list[dict]:
  return [{k: t[k] for k in ('budget', 'nonzeros', 'step', 'field_mean_size')}
          for t in wd.find_tickets(str(workdir))]


def masks(workdir) -> dict[int, np.ndarray]:
  config = demo.get_config('tiny')
  stage = build_stage(config, load_dataset(config.data), 'masked')
  table = stage.abstract_state().params['embedding']['table']
  target = jax.ShapeDtypeStruct(table.shape, bool, sharding=stage.row_sharding)
  return {t['budget']: np.asarray(wd.load_ticket_mask(str(workdir), t, target))
          for t in wd.find_tickets(str(workdir))}


def test_both_processes_took_part(runs):
  out0, out1 = log(runs['logs'], 'two', 0), log(runs['logs'], 'two', 1)
  assert '(process 0 of 2)' in out0
  assert '| method |' in out0 and '| method |' not in out1  # only process 0 reports


def test_same_tickets_as_one_process(runs):
  assert tickets(runs['one']), 'the test config must reach a budget'
  assert tickets(runs['two']) == tickets(runs['one'])
  one, two = masks(runs['one']), masks(runs['two'])
  assert one.keys() == two.keys()
  for budget, mask in one.items():
    np.testing.assert_array_equal(two[budget], mask)


def test_same_summary_as_one_process(runs):
  one, two = summary(runs['one']), summary(runs['two'])
  assert [r['method'] for r in two] == [r['method'] for r in one] == ['pep', 'ue', 'teacher']
  for a, b in zip(one, two):
    assert a.keys() == b.keys()
    for key, value in a.items():
      if 'logloss' in key and value is not None:
        assert b[key] == pytest.approx(value, rel=1e-6), (a['method'], key)
      else:
        assert b[key] == value, (a['method'], key)


def test_survivor_of_a_kill_ends_by_itself(runs):
  assert not runs['finished_before_kill']
  assert runs['codes'][1] == -signal.SIGKILL
  assert runs['codes'][0] not in (None, 0), 'the survivor did not end, or ended as if done'
  assert runs['survivor_seconds'] < 60 + HEARTBEAT_SECONDS


def test_killed_run_resumes_to_the_same_summary(runs):
  assert tickets(runs['killed']) == tickets(runs['two'])
  assert summary(runs['killed']) == summary(runs['two'])
  for budget, mask in masks(runs['two']).items():
    np.testing.assert_array_equal(masks(runs['killed'])[budget], mask)
