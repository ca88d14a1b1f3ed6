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


class MetricWriter:
  """Appends ``{'stage', 'step', ...}`` rows to ``metrics.jsonl`` and TensorBoard scalars."""

  def __init__(self, workdir: str, name: str = ''):
    """``name`` ends the TensorBoard file's name (writers of parallel runs stay apart)."""
    self.enabled = jax.process_index() == 0
    self._tb = None
    self._lock = threading.Lock()  # runs may train in parallel threads
    self._path = os.path.join(workdir, 'metrics.jsonl')
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


class Progress:
  """A progress bar over a stage's steps showing loss, non-zeros and samples/s."""

  def __init__(self, desc: str, total: int, initial: int, batch_size: int):
    self._bar = tqdm.tqdm(total=total, initial=initial, desc=desc, unit='step',
                          disable=jax.process_index() != 0, dynamic_ncols=True, mininterval=1.0)
    self._batch_size = batch_size
    self._t0, self._n0 = time.perf_counter(), initial
    self.samples_per_second = 0.0

  def update(self, step: int, **postfix) -> None:
    self._bar.update(step - self._bar.n)
    elapsed = time.perf_counter() - self._t0
    if elapsed > 0:
      self.samples_per_second = (step - self._n0) * self._batch_size / elapsed
    self._bar.set_postfix(**postfix, samples_s=f'{self.samples_per_second:,.0f}', refresh=False)

  def close(self) -> None:
    self._bar.close()
