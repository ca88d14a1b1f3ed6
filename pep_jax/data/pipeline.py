"""Batches from a :class:`~pep_jax.data.base.Split`: deterministic, fixed-shape, resumable.

Every batch has the same shape, so a jitted step compiles once: the last partial batch is
padded and carries ``weights == 0`` on its padding rows. The order of an epoch depends only on
``(seed, epoch)``, so a run resumed at batch k of epoch e sees exactly the batches an
uninterrupted run would have seen. ``prefetch`` builds batches in a background thread and
``to_device`` places them on the accelerator, so loading overlaps training.
"""

from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
from collections.abc import Iterator

import numpy as np

from pep_jax.data.base import Split

Batch = dict[str, np.ndarray]


def num_batches(num_rows: int, batch_size: int) -> int:
  """Batches per epoch; the last, partial one is kept (padded)."""
  return -(-num_rows // batch_size)


def epoch_order(num_rows: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """The row order of one epoch: a permutation from ``(seed, epoch)``, or ``arange``."""
  if not shuffle:
    return np.arange(num_rows, dtype=np.int64)
  return np.random.default_rng([seed, epoch]).permutation(num_rows)


def make_batch(split: Split, rows: np.ndarray, batch_size: int) -> Batch:
  """Gathers ``rows`` of ``split`` into one batch padded to ``batch_size`` rows.

  Returns:
    ``ids`` int32 ``[B, F]``, ``labels`` float32 ``[B]``, ``weights`` float32 ``[B]``
    (1 for real rows, 0 for padding).
  """
  n = len(rows)
  ids = np.zeros((batch_size, split.ids.shape[1]), np.int32)
  labels = np.zeros((batch_size,), np.float32)
  weights = np.zeros((batch_size,), np.float32)
  if n:
    # Sorted rows read a memory-mapped file front to back; the batch order is irrelevant.
    rows = np.sort(rows)
    np.take(split.ids, rows, axis=0, out=ids[:n])  # straight into the batch: no temporary
    labels[:n] = np.take(split.labels, rows)
    weights[:n] = 1.0
  return {'ids': ids, 'labels': labels, 'weights': weights}


def batch_rows(num_rows: int, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
               start: int = 0) -> Iterator[np.ndarray]:
  """The row indices of every batch of one epoch, from batch index ``start`` on.

  The single definition of an epoch's batches: :func:`batches`, :func:`threaded_batches` and
  the multi-host reader all slice this, so they agree row for row.
  """
  order = epoch_order(num_rows, seed=seed, epoch=epoch, shuffle=shuffle)
  for b in range(start, num_batches(num_rows, batch_size)):
    yield order[b * batch_size:(b + 1) * batch_size]


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
) -> Iterator[Batch]:
  """Yields the batches of one epoch, from batch index ``start`` on.

  Args:
    split: the rows to read.
    batch_size: rows per batch; the last batch is padded to it.
    shuffle: permute rows with a generator seeded by ``(seed, epoch)``.
    seed: data seed.
    epoch: epoch number (changes the permutation).
    start: first batch to yield (for resuming inside an epoch).
  """
  for rows in batch_rows(len(split), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                         start=start):
    yield make_batch(split, rows, batch_size)


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Yields the items of ``iterator``, produced ahead by a background thread.

  The producer (e.g. :func:`batches`, whose numpy gathers release the GIL) runs while the
  consumer trains; at most ``size`` items wait in between. Items and their order are unchanged;
  an exception in the producer is raised here. Closing this generator stops the thread.

  Args:
    iterator: any iterator.
    size: items kept ready.
  """
  items: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()
  done = object()

  def put(entry) -> bool:
    """Waits for room unless the consumer has gone; False once it has."""
    while not stop.is_set():
      try:
        items.put(entry, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in iterator:
        if not put((item, None)):
          return
      put((done, None))
    except BaseException as e:  # handed to the consumer
      put((done, e))

  thread = threading.Thread(target=produce, name='pep_jax-prefetch', daemon=True)
  thread.start()
  try:
    while True:
      item, error = items.get()
      if item is done:
        if error is not None:
          raise error
        return
      yield item
  finally:
    stop.set()
    thread.join()


def threaded_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
    workers: int = 2,
    size: int = 4,
) -> Iterator[Batch]:
  """The batches of :func:`batches` (same arguments, same batches, same order), each gathered
  by one of ``workers`` background threads, up to ``size`` batches ahead.

  A gather from a large memory-mapped split waits on memory, not on the GIL, so two threads
  deliver about twice the rows per second of one.
  """
  pending: collections.deque = collections.deque()
  with concurrent.futures.ThreadPoolExecutor(max(1, workers), 'pep_jax-batches') as pool:
    try:
      for rows in batch_rows(len(split), batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                             start=start):
        pending.append(pool.submit(make_batch, split, rows, batch_size))
        if len(pending) >= max(size, workers):
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      for future in pending:
        future.cancel()


def to_device(batch_iterator: Iterator[Batch], sharding=None) -> Iterator:
  """Places every array of every batch with ``jax.device_put(x, sharding)``.

  Transfers are asynchronous: wrapped around :func:`prefetch`, the next batch is on its way to
  the device while the current step runs.

  Args:
    batch_iterator: numpy batches (dicts of arrays).
    sharding: a ``jax.sharding.Sharding`` (e.g. the batch sharding of the mesh), a device, or
      None for the default device.

  Yields:
    The same batches as ``jax.Array`` dicts.
  """
  import jax  # the data package itself does not need jax
  for batch in batch_iterator:
    yield {k: jax.device_put(v, sharding) for k, v in batch.items()}
