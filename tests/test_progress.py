"""One progress display: every running stage keeps a line, and each says how it ended."""

import io
import multiprocessing
import os
import subprocess
import sys

from pep_jax.train import logging as logging_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bars_keep_their_own_lines_and_free_them():
  out = io.StringIO()
  board = logging_lib.Board(file=out)
  for key in 'abc':
    board.open(key, f'run {key}', 10, 0)
  positions = dict(board.positions)
  assert sorted(positions.values()) == [0, 1, 2]
  board.update('b', 5, {'loss': '0.5'})
  assert board._bars['b'].n == 5
  board.close('b', 'early stop at epoch 3, best epoch 1')
  assert board.lines() == 2 and 'run b: early stop at epoch 3, best epoch 1' in out.getvalue()
  board.open('d', 'run d', 10, 0)  # takes the freed line
  assert board.positions['d'] == positions['b']
  board.close('a', None)
  notes = [line.split('\r')[-1].replace('\x1b[A', '').strip()  # cursor moves of the bars
           for line in out.getvalue().split('\n')]
  notes = [line for line in notes if line and '|' not in line]  # not a bar's own drawing
  assert notes == ['run b: early stop at epoch 3, best epoch 1']


def _worker(queue):
  logging_lib.connect(queue)
  bar = logging_lib.Progress('worker run', 20, 0, 4, interval=0.0)
  bar.update(10, loss='0.1')
  logging_lib.say('a line from the worker')
  bar.close('20 epochs (train.max_epochs), best epoch 19 (valid AUC 0.7000)')


def test_a_worker_process_draws_on_the_parent_board():
  out = io.StringIO()
  board = logging_lib.Board(file=out)
  spawn = multiprocessing.get_context('spawn')
  queue = spawn.Queue()
  drawing = logging_lib.serve(queue, board)
  process = spawn.Process(target=_worker, args=(queue,))
  process.start()
  process.join(120)
  queue.put(None)
  drawing.join(30)
  text = out.getvalue()
  assert 'a line from the worker' in text
  assert 'worker run: 20 epochs (train.max_epochs), best epoch 19' in text
  assert board.lines() == 0


def test_parallel_runs_say_how_each_ended(tmp_path):
  """The demo's parallel runs: the prune stage and every candidate each end with one note."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'pep_jax.main', '--config=configs/demo.py:tiny',
                         f'--workdir={tmp_path}', '--config.train.parallel_runs=2'],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  notes = [line for line in proc.stdout.splitlines()
           if line.startswith(('prune:', 'ue d=8:', 'pep b'))]
  assert sum(line.startswith('prune: stopped at step') for line in notes) == 1, notes
  assert sum(line.startswith('ue d=8: ') and 'best epoch' in line for line in notes) == 1
  assert sum(line.startswith('pep b') and 'best epoch' in line for line in notes) == 1
  assert 'ue d=8:' in proc.stderr and 'prune:' in proc.stderr  # the bars themselves
