"""Each dataset's one raw-row encoder: predict gets the keys the cache build got for a row."""

import json
import os

import numpy as np
import pytest

from conftest import full_ids, make_config
from pep_jax import predict
from pep_jax.data import cache, movielens, real
from pep_jax.errors import InputError
from test_avazu_reader import HEADER, random_rows as avazu_rows
from test_criteo_reader import random_rows as criteo_rows

USERS = [b'1::F::1::10::48067', b'2::M::56::16::70072', b'3::M::25::15::',  # empty zip
         b'4::F::45::7::02460']
MOVIES = [b'1::Toy Story (1995)::Animation|Comedy', b'2::Caf\xe9 Society (1995)::Drama',
          b'3::No Year Movie::', b'4::Heat (1995)::Action']  # 3: no year, empty genres


def ratings_lines(rng, n):
  """``user::movie::rating::timestamp`` lines of known users and movies, rating 3 included."""
  return [b'%d::%d::%d::%d' % (rng.integers(1, 5), rng.integers(1, 5), rng.integers(1, 6),
                              978300000 + rng.integers(0, 10**7)) for _ in range(n)]


def write_movielens_side_files(folder):
  (folder / 'users.dat').write_bytes(b'\n'.join(USERS) + b'\n')
  (folder / 'movies.dat').write_bytes(b'\n'.join(MOVIES) + b'\n')


def joined(line):
  """The raw values of a ratings line joined with its user and movie, as row_keys takes them."""
  cols = line.split(b'::')
  user = USERS[int(cols[0]) - 1].split(b'::')
  movie = MOVIES[int(cols[1]) - 1].split(b'::')
  return [cols[-1], *user[1:], *movie[1:]]


def raw_files(name, folder, rng):
  """The training file of ``name`` in ``folder``, and its rows as files to score.

  Returns:
    ``{file name: (lines, kept)}``: the lines of each file to score (to be written to
    ``folder/score``) and, per row (header lines aside), whether the cache build keeps it.
  """
  score = folder / 'score'
  score.mkdir(parents=True)
  if name == 'criteo':
    lines = criteo_rows(rng, 300) + [b'0' + b'\t' * 39]  # every feature value empty
    (folder / 'train.txt').write_bytes(b'\n'.join(lines) + b'\n')
    unlabelled = [line.split(b'\t', 1)[1] for line in lines]
    kept = [True] * len(lines)
    return {'labelled.txt': (lines, kept), 'unlabelled.txt': (unlabelled, kept)}
  if name == 'avazu':
    lines = avazu_rows(rng, 300) + [b'7,1' + b',' * 22]
    (folder / 'train').write_bytes(b'\n'.join([HEADER] + lines) + b'\n')
    no_click = [b','.join(line.split(b',')[:1] + line.split(b',')[2:]) for line in lines]
    kept = [True] * len(lines)
    return {'labelled.csv': ([HEADER] + lines, kept), 'unlabelled.csv': (no_click, kept)}
  write_movielens_side_files(folder)
  write_movielens_side_files(score)
  lines = ratings_lines(rng, 300)
  (folder / 'ratings.dat').write_bytes(b'\n'.join(lines) + b'\n')
  kept = [line.split(b'::')[2] != b'3' for line in lines]  # the cache drops rating 3
  unrated = [b'::'.join(line.split(b'::')[:2] + line.split(b'::')[3:]) for line in lines]
  return {'labelled.dat': (lines, kept), 'unlabelled.dat': (unrated, kept)}


@pytest.mark.parametrize('name', ['criteo', 'avazu', 'movielens'])
def test_predict_gets_the_keys_of_the_cache_build(tmp_path, rng, name):
  files = raw_files(name, tmp_path, rng)
  folder = real.prepare(make_config(name, tmp_path, min_count=1, workers=1))
  with open(os.path.join(folder, 'meta.json')) as f:
    meta = json.load(f)
  assert meta['num_bad_lines'] == 0
  ids, _, _ = full_ids(folder)  # [N, F], file order
  vocab = cache.Vocabulary.load(folder)
  assert (ids > 0).all()  # min_count=1: every key is in the vocabulary
  built = np.stack([vocab.keys[f][ids[:, f] - 1] for f in range(ids.shape[1])], axis=1)
  for file, (lines, kept) in files.items():
    path = tmp_path / 'score' / file
    path.write_bytes(b'\n'.join(lines) + b'\n')
    keys = predict.raw_keys(str(path), name, meta)  # [n, F]: every row, rating 3 too
    assert keys.shape == (len(kept), len(meta['field_names'])) and keys.dtype == np.uint64
    np.testing.assert_array_equal(keys[np.array(kept)], built, err_msg=file)
    np.testing.assert_array_equal(vocab.encode(keys[np.array(kept)]), ids, err_msg=file)


@pytest.mark.parametrize('rated', [True, False])
def test_movielens_encoder_names_unknown_ids_and_bad_ratings(tmp_path, rated):
  write_movielens_side_files(tmp_path)
  lines = [b'1::1::4::978300760', b'9::1::4::978300760',  # unknown user
           b'2::8::5::978300761', b'3::2::7::978300762',  # unknown movie; rating outside 1..5
           b'4::4::x::978300763', b'3::3::3::978300764']  # non-integer rating; good
  if not rated:
    lines = [b'::'.join(line.split(b'::')[:2] + line.split(b'::')[3:]) for line in lines]
  path = tmp_path / 'ratings.dat'
  path.write_bytes(b'\n'.join(lines) + b'\n')
  meta = {'reader': {'timestamp_min': 978300000}}
  bad = []
  (chunk,) = movielens.encode(str(path), bad, {}, labelled=None, meta=meta)
  report = bad[-1]
  reasons = {'unknown user id': 1, 'unknown movie id': 1}
  if rated:
    reasons.update({'rating outside 1..5': 1, 'non-integer value': 1})
  assert report.total_lines == 6 and report.count == sum(reasons.values())
  assert dict(report.reasons) == reasons
  assert sorted(report.examples) == sorted(
      [(2, 'unknown user id'), (3, 'unknown movie id')]
      + ([(4, 'rating outside 1..5'), (5, 'non-integer value')] if rated else []))
  good = [0, 5] if rated else [0, 3, 4, 5]
  expected = np.stack([movielens.row_keys(joined(lines[i]), meta) for i in good])
  np.testing.assert_array_equal(chunk.keys.T, expected)  # rating 3 is kept to be scored
  with pytest.raises(InputError, match=r'ratings\.dat: 6 lines, skipped .*first: 2 '
                     r'\(unknown user id\), 3 \(unknown movie id\)'):
    predict.raw_keys(str(path), 'movielens', meta)
