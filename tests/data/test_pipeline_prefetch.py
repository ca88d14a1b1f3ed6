"""prefetch, threaded_batches and to_device deliver the very batches of pipeline.batches."""

import numpy as np
import pytest

from pep_jax.data import pipeline
from pep_jax.data.base import Split


def _split(n=1000, f=5):
  rng = np.random.default_rng(1)
  return Split(rng.integers(0, 50, (n, f)).astype(np.int32), (rng.random(n) < 0.3).astype(np.uint8))


def test_prefetch_same_batches_same_order():
  split = _split()
  plain = list(pipeline.batches(split, 64, shuffle=True, seed=3, epoch=2, start=4))
  fetched = list(pipeline.prefetch(pipeline.batches(split, 64, shuffle=True, seed=3, epoch=2,
                                                    start=4), size=3))
  assert len(plain) == len(fetched) == pipeline.num_batches(1000, 64) - 4
  for a, b in zip(plain, fetched):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert fetched[-1]['weights'].sum() == 1000 % 64


@pytest.mark.parametrize('workers', [1, 2, 3])
def test_threaded_batches_same_batches_same_order(workers):
  split = _split()
  plain = list(pipeline.batches(split, 48, shuffle=True, seed=5, epoch=1, start=2))
  threaded = list(pipeline.threaded_batches(split, 48, shuffle=True, seed=5, epoch=1, start=2,
                                            workers=workers, size=3))
  assert len(plain) == len(threaded)
  for a, b in zip(plain, threaded):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  early = pipeline.threaded_batches(split, 48, shuffle=False, workers=2)
  np.testing.assert_array_equal(next(early)['ids'], split.ids[:48])
  early.close()


def test_prefetch_raises_producer_errors_and_stops_early():
  def failing():
    yield 1
    raise RuntimeError('boom')

  it = pipeline.prefetch(failing())
  assert next(it) == 1
  with pytest.raises(RuntimeError, match='boom'):
    next(it)
  endless = pipeline.prefetch(iter(range(10**9)), size=2)
  assert [next(endless) for _ in range(3)] == [0, 1, 2]
  endless.close()  # joins the producer thread


def test_to_device_places_the_same_arrays():
  import jax
  split = _split()
  batches = list(pipeline.batches(split, 128, shuffle=False))
  device = jax.devices()[0]
  placed = list(pipeline.to_device(pipeline.prefetch(pipeline.batches(split, 128, shuffle=False)),
                                   device))
  for a, b in zip(batches, placed):
    assert isinstance(b['ids'], jax.Array)
    for k in a:
      np.testing.assert_array_equal(a[k], np.asarray(b[k]))
