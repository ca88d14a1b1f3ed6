"""The columnar cache: equals a direct parse, rebuilt when stale or damaged, reproducible."""

import os

import numpy as np
import pytest

from conftest import full_ids, make_config
from pep_jax.data import cache, criteo, real
from test_criteo_reader import random_rows


@pytest.fixture
def raw_dir(tmp_path, rng):
  folder = tmp_path / 'raw'
  folder.mkdir()
  (folder / 'train.txt').write_bytes(b'\n'.join(random_rows(rng, 600)) + b'\n')
  return folder


def test_cache_equals_direct_parse(raw_dir):
  cfg = make_config('criteo', raw_dir, min_count=3)
  folder = real.prepare(cfg)
  chunks = list(criteo.read([str(raw_dir / 'train.txt')], [], {}, workers=1))
  keys = np.concatenate([c.keys for c in chunks], axis=1).T  # [N, F]
  labels = np.concatenate([c.labels for c in chunks])
  vocab = cache.Vocabulary.load(folder)
  ids, got_labels, _ = full_ids(folder)
  np.testing.assert_array_equal(ids, vocab.encode(keys))
  np.testing.assert_array_equal(got_labels, labels)


def test_changed_setting_gets_its_own_cache(raw_dir):
  a = real.cache_folder(make_config('criteo', raw_dir, min_count=3))
  b = real.cache_folder(make_config('criteo', raw_dir, min_count=4))
  c = real.cache_folder(make_config('criteo', raw_dir, min_count=3, split_seed=7))
  d = real.cache_folder(make_config('criteo', raw_dir, min_count=3, count_on='train'))
  assert len({a, b, c, d}) == 4
  assert real.load(make_config('criteo', raw_dir, min_count=4)).num_features < \
      real.load(make_config('criteo', raw_dir, min_count=3)).num_features


def _mtime(path):
  return os.stat(path).st_mtime_ns


def test_damaged_or_partial_cache_is_rebuilt(raw_dir):
  cfg = make_config('criteo', raw_dir, min_count=3)
  folder = real.prepare(cfg)
  good = np.load(os.path.join(folder, 'train_ids.npy')).copy()
  settings = real.settings(cfg)
  inputs = (str(raw_dir / 'train.txt'),)
  assert cache.stale_reason(folder, settings, inputs) is None

  path = os.path.join(folder, 'train_ids.npy')
  data = bytearray(open(path, 'rb').read())
  data[-3] ^= 0xFF  # same size, one byte flipped
  open(path, 'wb').write(bytes(data))
  assert 'checksum' in cache.stale_reason(folder, settings, inputs)
  real.prepare(cfg)
  np.testing.assert_array_equal(np.load(path), good)

  open(path, 'ab').write(b'x')  # wrong size
  assert 'size' in cache.stale_reason(folder, settings, inputs, verify_checksums=False)
  os.remove(os.path.join(folder, 'manifest.json'))  # as after an interrupted build
  assert 'manifest' in cache.stale_reason(folder, settings, inputs)
  real.prepare(cfg)
  assert cache.stale_reason(folder, settings, inputs) is None

  os.utime(inputs[0], ns=(_mtime(inputs[0]) + 10**9, _mtime(inputs[0]) + 10**9))
  assert 'raw files changed' in cache.stale_reason(folder, settings, inputs)
  real.prepare(cfg)
  assert cache.stale_reason(folder, settings, inputs) is None
  assert not [n for n in os.listdir(os.path.dirname(folder)) if '.tmp-' in n or '.old-' in n]


def test_two_builds_give_identical_bytes(raw_dir, tmp_path):
  folders = []
  for name in ('one', 'two'):
    cfg = make_config('criteo', raw_dir, min_count=3, cache_dir=str(tmp_path / name))
    folders.append(real.prepare(cfg))
  names = sorted(n for n in os.listdir(folders[0]) if n.endswith('.npy'))
  assert names == sorted(n for n in os.listdir(folders[1]) if n.endswith('.npy'))
  assert {'train_ids.npy', 'split.npy', 'vocab_keys.npy', 'vocab_counts.npy'} <= set(names)
  for n in names:
    assert open(os.path.join(folders[0], n), 'rb').read() == \
        open(os.path.join(folders[1], n), 'rb').read(), n


def test_count_on_train_counts_training_rows_only(raw_dir):
  cfg = make_config('criteo', raw_dir, min_count=3, count_on='train')
  folder = real.prepare(cfg)
  vocab = cache.Vocabulary.load(folder)
  ds = real.load(cfg)
  for f in (0, 20):
    counts = np.bincount(np.asarray(ds.train.ids[:, f]), minlength=int(ds.field_dims[f]))
    np.testing.assert_array_equal(counts, vocab.counts[f])


def test_bad_config_keys_are_named(raw_dir):
  with pytest.raises(ValueError, match='data.count_on'):
    real.prepare(make_config('criteo', raw_dir, count_on='valid'))
  with pytest.raises(ValueError, match='data.split'):
    real.prepare(make_config('criteo', raw_dir, split=(0.5, 0.1, 0.1)))
