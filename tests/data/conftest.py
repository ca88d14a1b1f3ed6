"""Helpers of the data tests: configs and an independent, pure-Python view of a cache."""

import collections
import json
import math
import os

import numpy as np
import pytest

from pep_jax.data import cache
from pep_jax.data.config import data_defaults

MASK64 = (1 << 64) - 1


def splitmix64(z: int) -> int:
  """The splitmix64 finaliser in plain Python."""
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
  return z ^ (z >> 31)


def reference_split(num_rows: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> list[int]:
  """Row r's split, computed as the cache documents it, one row at a time."""
  salt = splitmix64(seed & MASK64)
  out = []
  for r in range(num_rows):
    u = (splitmix64((r + salt) & MASK64) >> 11) * 2.0**-53
    out.append(0 if u < fractions[0] else 1 if u < fractions[0] + fractions[1] else 2)
  return out


def int_token(raw: bytes):
  """The Criteo integer rule on a raw value; 'NULL' when empty."""
  if raw == b'':
    return 'NULL'
  v = int(raw)
  return int(math.log(v) ** 2) if v > 2 else v - 2


def make_config(name: str, raw_dir, **overrides):
  c = data_defaults()
  c.name = name
  c.dir = str(raw_dir)
  c.workers = 2
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def full_ids(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """All rows of a cache back in file order: ids [N, F], labels [N], split [N]."""
  split = np.load(os.path.join(folder, 'split.npy'))
  ids = np.zeros((len(split), len(json.load(open(os.path.join(folder, 'meta.json')))['field_dims'])),
                 np.int64)
  labels = np.zeros(len(split), np.int64)
  for s, name in enumerate(cache.SPLITS):
    ids[split == s] = np.load(os.path.join(folder, f'{name}_ids.npy'))
    labels[split == s] = np.load(os.path.join(folder, f'{name}_labels.npy'))
  return ids, labels, split


def check_against_reference(folder: str, tokens: list[tuple], labels: list[int], min_count: int,
                            seed: int = 42) -> None:
  """Checks a cache against rows computed independently.

  Args:
    folder: the cache.
    tokens: per good row (file order), per field, the reference token (raw bytes for
      categorical fields, an int or 'NULL' for integer-rule fields).
    labels: per good row.
    min_count: the setting used.
  """
  ids, got_labels, split = full_ids(folder)
  vocab = cache.Vocabulary.load(folder)
  meta = json.load(open(os.path.join(folder, 'meta.json')))
  assert meta['num_rows'] == len(tokens)
  assert got_labels.tolist() == labels
  assert split.tolist() == reference_split(len(tokens), seed)
  num_fields = len(meta['field_dims'])
  for f in range(num_fields):
    counts = collections.Counter(row[f] for row in tokens)
    kept = {v for v, n in counts.items() if n >= min_count}
    assert meta['field_dims'][f] == len(kept) + 1, meta['field_names'][f]
    index_of = {}
    for r, row in enumerate(tokens):
      idx = int(ids[r, f])
      assert 0 <= idx < meta['field_dims'][f]
      if row[f] in kept:
        assert idx != 0
        assert index_of.setdefault(row[f], idx) == idx  # one value, one index
        assert vocab.counts[f][idx] == counts[row[f]]
        if vocab.field_kinds[f] == 'int':
          assert vocab.value(f, idx) == str(row[f])
        elif len(row[f]) <= 7:
          assert vocab.value(f, idx) == ('NULL' if row[f] == b'' else
                                         row[f].decode('utf-8', 'backslashreplace'))
      else:
        assert idx == 0  # rare values share the OOV index
    assert len(set(index_of.values())) == len(index_of)  # distinct values, distinct indices
    assert vocab.counts[f][0] == sum(n for v, n in counts.items() if v not in kept)
    # Indices run by decreasing count.
    assert np.all(np.diff(vocab.counts[f][1:]) <= 0)


@pytest.fixture
def rng():
  return np.random.default_rng(0)
