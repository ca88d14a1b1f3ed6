"""Criteo train.txt: a small file with the messy parts, checked against a pure-Python reading."""

import json
import os
import re

import numpy as np
import pytest

from conftest import check_against_reference, int_token, make_config
from pep_jax.data import real

INT_RE = re.compile(rb'^-?[0-9]{1,18}$')


def random_rows(rng, n):
  """Lines of train.txt (bytes, no newline) with repeats, empties, negatives, odd bytes."""
  cats = [b'68fd1e64', b'80e26c9b', b'fb936136', b'', b'\xff\xfe\x00z', b'7e0ccccf', b'a\xe9b']
  rows = []
  for _ in range(n):
    label = b'1' if rng.random() < 0.3 else b'0'
    ints = []
    for i in range(13):
      if rng.random() < 0.2:
        ints.append(b'')
      else:
        v = int(rng.integers(-3, 40)) if rng.random() < 0.8 else int(rng.integers(-3, 10**9))
        ints.append(str(v).encode())
    cs = [cats[int(rng.integers(0, len(cats)))] if rng.random() < 0.7
          else f'{int(rng.integers(0, 2**32)):08x}'.encode() for _ in range(26)]
    rows.append(b'\t'.join([label] + ints + cs))
  return rows


def reference(lines):
  """Good rows (tokens per field), labels and bad line numbers, line by line in Python."""
  tokens, labels, bad = [], [], []
  for number, line in enumerate(lines, start=1):
    cols = line.split(b'\t')
    ok = (len(cols) == 40 and cols[0] in (b'0', b'1')
          and all(c == b'' or INT_RE.match(c) for c in cols[1:14]))
    if not ok:
      bad.append(number)
      continue
    labels.append(int(cols[0]))
    tokens.append(tuple(int_token(c) for c in cols[1:14]) + tuple(cols[14:]))
  return tokens, labels, bad


@pytest.fixture
def messy_file(tmp_path, rng):
  rows = random_rows(rng, 400)
  lines = [b'label\t' + b'\t'.join(b'I%d' % i for i in range(1, 14))
           + b'\t' + b'\t'.join(b'C%d' % i for i in range(1, 27))]  # a header it should not have
  lines += rows[:100]
  lines.append(b'1\t2\t3')  # too few columns
  lines += rows[100:200]
  bad_int = rows[200].split(b'\t')
  bad_int[3] = b'12x'  # non-numeric integer field
  lines.append(b'\t'.join(bad_int))
  lines += rows[201:300]
  lines.append(rows[300] + b'\textra')  # too many columns
  lines += rows[301:]
  lines.append(rows[0][:25])  # truncated last line, no newline
  (tmp_path / 'train.txt').write_bytes(b'\n'.join(lines))
  return tmp_path, lines


def test_criteo_matches_reference(messy_file):
  raw_dir, lines = messy_file
  cfg = make_config('criteo', raw_dir, min_count=3, max_bad_fraction=0.05)
  folder = real.prepare(cfg)
  tokens, labels, bad = reference(lines)
  assert bad == [1, 102, 203, 303, len(lines)]
  meta = json.load(open(os.path.join(folder, 'meta.json')))
  assert meta['num_bad_lines'] == len(bad)
  assert meta['bad_lines'][0]['first_bad_lines'] == bad
  assert 'header' in ' '.join(meta['bad_lines'][0]['notes'])
  check_against_reference(folder, tokens, labels, min_count=3)
  ds = real.load(cfg)
  assert ds.field_names[0] == 'I1' and ds.field_names[-1] == 'C26'
  assert isinstance(ds.train.ids, np.memmap)
  assert len(ds.train) + len(ds.valid) + len(ds.test) == len(tokens)


def test_criteo_gzip_equals_plain(messy_file, tmp_path):
  import gzip
  raw_dir, lines = messy_file
  gz_dir = tmp_path / 'gz'
  gz_dir.mkdir()
  (gz_dir / 'train.txt.gz').write_bytes(gzip.compress((raw_dir / 'train.txt').read_bytes()))
  plain = real.load(make_config('criteo', raw_dir, min_count=3, max_bad_fraction=0.05))
  packed = real.load(make_config('criteo', gz_dir, min_count=3, max_bad_fraction=0.05))
  np.testing.assert_array_equal(plain.train.ids, packed.train.ids)
  np.testing.assert_array_equal(plain.test.labels, packed.test.labels)


def test_too_many_bad_lines_names_the_file(messy_file):
  raw_dir, _ = messy_file
  with pytest.raises(ValueError, match=r'train\.txt.*data\.max_bad_fraction'):
    real.prepare(make_config('criteo', raw_dir, min_count=3, max_bad_fraction=0.001))


def test_empty_file(tmp_path):
  (tmp_path / 'train.txt').write_bytes(b'')
  with pytest.raises(ValueError, match=r'train\.txt: the file has no lines'):
    real.prepare(make_config('criteo', tmp_path))


def test_missing_file_says_what_to_get(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'train\.txt.*Display Advertising Challenge.*configs/demo\.py'):
    real.prepare(make_config('criteo', tmp_path))


def test_row_encoder_matches_cache(messy_file):
  raw_dir, lines = messy_file
  cfg = make_config('criteo', raw_dir, min_count=3, max_bad_fraction=0.05)
  encode = real.row_encoder(cfg)
  from conftest import full_ids
  ids, _, _ = full_ids(real.cache_folder(cfg))
  good = [l for l in lines if l not in reference([l])[2] and len(reference([l])[0]) == 1]
  for r in range(0, 50, 7):
    np.testing.assert_array_equal(encode(good[r].split(b'\t')[1:]), ids[r])
