"""MovieLens-1M .dat files: joins, rating filter, year, genres, bad lines, vs pure Python."""

import json
import math
import os

import numpy as np
import pytest

from conftest import check_against_reference, make_config
from pep_jax.data import movielens, real

USERS = [b'1::F::1::10::48067', b'2::M::56::16::70072', b'3::M::25::15::55117',
         b'4::M::45::7::02460', b'5::M::25::20::55455']
MOVIES = [b'1::Toy Story (1995)::Animation|Children\'s|Comedy',
          b'2::Jumanji (1995)::Adventure|Children\'s|Fantasy',
          b'3::Caf\xe9 Society (1995)::Drama',  # latin-1
          b'4::No Year Movie::Comedy']


def write(tmp_path, rng, n=400):
  ratings = []
  for _ in range(n):
    user, movie = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    rating, ts = int(rng.integers(1, 6)), 978300000 + int(rng.integers(0, 10**7))
    ratings.append(b'%d::%d::%d::%d' % (user, movie, rating, ts))
  lines = ratings[:100] + [b'1::1::6::978300760', b'2::3::0::978300760',  # ratings outside 1..5
                           b'9::1::4::978300760',  # unknown user
                           b'1::2::4'] + ratings[100:]  # missing column
  (tmp_path / 'users.dat').write_bytes(b'\n'.join(USERS) + b'\n')
  (tmp_path / 'movies.dat').write_bytes(b'\n'.join(MOVIES) + b'\n')
  (tmp_path / 'ratings.dat').write_bytes(b'\n'.join(lines) + b'\n')
  return ratings


def reference(ratings):
  users = {int(u.split(b'::')[0]): u.split(b'::')[1:] for u in USERS}
  movies = {int(m.split(b'::')[0]): m.split(b'::')[1:] for m in MOVIES}
  kept = [r.split(b'::') for r in ratings if int(r.split(b'::')[2]) != 3]
  t_min = min(int(r[3]) for r in kept)
  tokens, labels = [], []
  for user, movie, rating, ts in kept:
    v = int(ts) - t_min
    title, genres = movies[int(movie)]
    year = title[-5:-1] if title.endswith(b')') else b''
    tokens.append((int(math.log(v) ** 2) if v > 2 else v - 2, *users[int(user)], year, genres))
    labels.append(int(int(rating) > 3))
  return tokens, labels


def test_movielens_matches_reference(tmp_path, rng):
  ratings = write(tmp_path, rng)
  cfg = make_config('movielens', tmp_path, min_count=1, max_bad_fraction=0.05)
  folder = real.prepare(cfg)
  tokens, labels = reference(ratings)
  meta = json.load(open(os.path.join(folder, 'meta.json')))
  assert meta['field_names'] == list(movielens.FIELD_NAMES)
  assert meta['num_bad_lines'] == 4
  ratings_report = meta['bad_lines'][2]
  assert sorted(ratings_report['first_bad_lines']) == [101, 102, 103, 104]
  assert ratings_report['reasons'] == {'wrong number of columns': 1, 'rating outside 1..5': 2,
                                       'unknown user id': 1}
  assert meta['reader']['dropped_rating_3'] == sum(int(r.split(b'::')[2]) == 3 for r in ratings)
  check_against_reference(folder, tokens, labels, min_count=1)
  encode = real.row_encoder(cfg)
  row = ratings[0].split(b'::')
  user = USERS[int(row[0]) - 1].split(b'::')
  movie = MOVIES[int(row[1]) - 1].split(b'::')
  got = encode([row[3], *user[1:], movie[1], movie[2]])
  ds = real.load(cfg)
  assert got.shape == (7,) and np.all(got < ds.field_dims)


def test_release_year():
  assert movielens.release_year(b'Toy Story (1995)') == b'1995'
  assert movielens.release_year(b'City of Lost Children, The (1995) ') == b'1995'
  assert movielens.release_year(b'No Year') == b''


def test_missing_files_name_grouplens(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'users\.dat.*ratings\.dat.*ml-1m\.zip'):
    real.prepare(make_config('movielens', tmp_path))


def test_tfds_records_give_the_same_rows_as_the_raw_files(tmp_path, rng):
  """Records shaped like TFDS's movielens/1m-ratings (its renamings included)."""
  from pep_jax.data import tfds_builders
  ratings = write(tmp_path, rng, n=60)
  raw = list(movielens.read([str(tmp_path / f) for f in movielens.FILES], [], {}))[0]
  genre_names = ['Animation', 'Children', 'Comedy', 'Adventure', 'Fantasy', 'Drama']
  users = {int(u.split(b'::')[0]): u.split(b'::')[1:] for u in USERS}
  movies = {int(m.split(b'::')[0]): m.split(b'::')[1:] for m in MOVIES}
  records = []
  for line in ratings:
    user, movie, rating, ts = line.split(b'::')
    gender, age, occupation, zip_code = users[int(user)]
    title, genres = movies[int(movie)]
    records.append({
        'user_id': user, 'movie_id': movie, 'user_rating': float(rating), 'timestamp': int(ts),
        'user_gender': gender == b'M', 'bucketized_user_age': float(age),
        'user_occupation_text': tfds_builders._OCCUPATIONS[int(occupation)].encode(),
        'user_zip_code': zip_code, 'movie_title': title.decode('latin-1').encode('utf-8'),
        'movie_genres': [genre_names.index('Children' if g == b"Children's" else g.decode())
                         for g in genres.split(b'|')],
    })
  chunk, _ = movielens.ratings_chunk(*tfds_builders.movielens_tables(records, genre_names))
  np.testing.assert_array_equal(chunk.keys, raw.keys)
  np.testing.assert_array_equal(chunk.labels, raw.labels)
