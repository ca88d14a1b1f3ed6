"""Where metrics go: a JSONL file, TensorBoard event files and a tqdm progress bar.

Only process 0 writes, so a multi-host run logs once.
"""

from __future__ import annotations

import json
import os
import threading
import time

import jax
import tqdm

METRICS = 'metrics.jsonl'  # in the folder a MetricWriter is given


class MetricWriter:
  """Appends ``{'stage', 'step', ...}`` rows to ``metrics.jsonl`` and TensorBoard scalars."""

  def __init__(self, workdir: str, name: str = ''):
    """``name`` ends the TensorBoard file's name (writers of parallel runs stay apart)."""
    self.enabled = jax.process_index() == 0
    self._tb = None
    self._lock = threading.Lock()  # runs may train in parallel threads
    self._path = os.path.join(workdir, METRICS)
    if self.enabled:
      from tensorboardX import SummaryWriter  # lazy: only the writing process needs it
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'),
                               filename_suffix=f'.{name}' if name else '')

  def write(self, stage: str, step: int, **scalars) -> None:
    if not self.enabled:
      return
    row = {'stage': stage, 'step': int(step), 'time': time.time(),
           **{k: float(v) for k, v in scalars.items()}}
    with self._lock:
      with open(self._path, 'a') as f:
        f.write(json.dumps(row) + '\n')
      for key, value in scalars.items():
        self._tb.add_scalar(f'{stage}/{key}', float(value), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class Board:
  """Every running stage's progress bar on one terminal, each on a line of its own.

  Runs train in parallel (searches in threads of the main process, candidates in worker
  processes), so their bars share one terminal: each bar keeps its own line (a tqdm
  ``position``), the lowest line free when it opens. A closed bar frees its line and prints its
  note once, above the bars (``'ue d=16: early stop at epoch 7, best epoch 5'``).
  """

  def __init__(self, file=None):
    """``file``: where bars and notes go (tqdm's default, standard error, when None)."""
    self._file = file
    self._bars: dict = {}  # key -> tqdm bar
    self.positions: dict = {}  # key -> its line (0: the first)
    self._lock = threading.Lock()

  def open(self, key, desc: str, total: int, initial: int) -> None:
    with self._lock:
      taken = set(self.positions.values())
      position = next(p for p in range(len(taken) + 1) if p not in taken)
      self.positions[key] = position
      self._bars[key] = tqdm.tqdm(total=total, initial=initial, desc=desc, unit='step',
                                  position=position, leave=False, file=self._file,
                                  dynamic_ncols=True, mininterval=1.0)

  def update(self, key, n: int, postfix: dict) -> None:
    with self._lock:
      bar = self._bars.get(key)
      if bar is not None:
        bar.update(n - bar.n)
        bar.set_postfix(**postfix, refresh=False)

  def close(self, key, note: str | None) -> None:
    with self._lock:
      bar = self._bars.pop(key, None)
      self.positions.pop(key, None)
      if bar is None:
        return
      desc = bar.desc
      bar.close()
      if note:
        tqdm.tqdm.write(f'{desc}: {note}', file=self._file)

  def say(self, key, text: str) -> None:
    """Prints ``text`` above the bars (``key`` unused: messages share one shape)."""
    del key
    with self._lock:
      tqdm.tqdm.write(text, file=self._file)

  def apply(self, message: tuple) -> None:
    """Applies ``(kind, key, *args)`` as :class:`Progress` sends it from another process."""
    kind, key, *args = message
    getattr(self, kind)(key, *args)

  def lines(self) -> int:
    """Bars open now."""
    with self._lock:
      return len(self._bars)


_BOARD = Board()  # this process's terminal
_REMOTE = None  # in a worker process: the queue to the board of the process that draws


def connect(queue) -> None:
  """Sends this (worker) process's progress to the board of the process that owns ``queue``."""
  global _REMOTE
  _REMOTE = queue


def serve(queue, board: Board | None = None) -> threading.Thread:
  """Draws on ``board`` (this process's) what worker processes send to ``queue``, in a thread,
  until None is put on the queue."""

  def drain():
    while (message := queue.get()) is not None:
      (board or _BOARD).apply(message)

  thread = threading.Thread(target=drain, name='pep_jax-progress', daemon=True)
  thread.start()
  return thread


def say(text: str) -> None:
  """Prints a line above every progress bar (from any thread or worker process)."""
  _emit(('say', None, text))


def _emit(message: tuple) -> None:
  if jax.process_index() != 0:
    return
  if _REMOTE is not None:
    _REMOTE.put(message)
  else:
    _BOARD.apply(message)


class Progress:
  """A stage's progress bar over its steps, showing loss, non-zeros and samples/s.

  Drawn on the :class:`Board` of the process that owns the terminal: directly, or through the
  queue of :func:`connect` from a worker process (updates at most every ``interval`` seconds).
  """

  def __init__(self, desc: str, total: int, initial: int, batch_size: int,
               interval: float = 0.5):
    self._key = (os.getpid(), id(self))
    self._batch_size, self._interval = batch_size, interval
    self._t0, self._n0 = time.perf_counter(), initial
    self._sent = 0.0
    self.samples_per_second = 0.0
    _emit(('open', self._key, desc, total, initial))

  def update(self, step: int, **postfix) -> None:
    now = time.perf_counter()
    elapsed = now - self._t0
    if elapsed > 0:
      self.samples_per_second = (step - self._n0) * self._batch_size / elapsed
    if _REMOTE is None or now - self._sent >= self._interval:
      self._sent = now
      _emit(('update', self._key, step,
             {**postfix, 'samples_s': f'{self.samples_per_second:,.0f}'}))

  def close(self, note: str | None = None) -> None:
    """Frees the bar's line; ``note`` (how the stage ended) is printed once."""
    _emit(('close', self._key, note))
