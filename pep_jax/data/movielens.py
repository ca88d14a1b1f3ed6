"""MovieLens-1M (grouplens.org ``ml-1m.zip``): ``users.dat``, ``movies.dat``, ``ratings.dat``.

Lines are ``::``-separated, latin-1 text (kept as bytes here). Rating 3 is dropped and the label
is ``rating > 3``. A row has 7 fields and no user or movie id: the timestamp bucket
(``timestamp - min timestamp`` of the kept ratings, then the Criteo integer rule), gender,
age, occupation, zip code, the release year from the title's ``(YYYY)`` (NULL without one)
and the whole genre string (``Action|Comedy``) as one categorical value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from pep_jax.data import parsing

NAME = 'movielens'
FIELD_NAMES = ('timestamp', 'gender', 'age', 'occupation', 'zip', 'year', 'genres')
FIELD_KINDS = ('int',) + ('str',) * 6
FILES = ('users.dat', 'movies.dat', 'ratings.dat')
DOWNLOAD = ("grouplens.org: https://files.grouplens.org/datasets/movielens/ml-1m.zip; unzip it "
            "and point data.dir at the ml-1m folder (or its parent)")
_SEP = b'\x1f'  # '::' becomes this one byte so pyarrow can split lines
_YEAR = re.compile(rb'\((\d{4})\)\s*$')
USER_COLUMNS = ('user', 'gender', 'age', 'occupation', 'zip')
MOVIE_COLUMNS = ('movie', 'title', 'genres')
RATING_COLUMNS = ('user', 'movie', 'rating', 'timestamp')


def raw_paths(directory: str) -> list[str]:
  """The three files (each may be ``.gz``) in ``directory`` or ``directory/ml-1m``; else []."""
  for folder in (directory, os.path.join(directory, 'ml-1m')):
    found = [parsing.first_file(folder, (name, name + '.gz')) for name in FILES]
    if all(found):
      return found
  return []


def read_table(path: str, columns: Sequence[str], bad: list[parsing.BadLines]
               ) -> tuple[pa.Table, np.ndarray, parsing.BadLines]:
  """Parses a whole ``::`` file into binary columns; lines with a wrong column count are bad.

  Returns:
    The table, each row's 1-based line number, and the file's report (appended to ``bad``).
  """
  with parsing.open_raw(path) as f:
    block = f.read().replace(b'::', _SEP)
  report = parsing.BadLines(path)
  bad.append(report)
  table, rows, dropped = parsing.parse_block(block, columns, _SEP.decode())
  report.total_lines = table.num_rows + len(dropped)
  report.add('wrong number of columns', lines=dropped + 1)
  return table, rows + 1, report


def _flag(report: parsing.BadLines, lines: np.ndarray,
          problems: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
  """Records rows with problems in ``report``; returns the good-row mask.

  Args:
    report: the file's report.
    lines: int64 ``[n]``, each row's line number.
    problems: ``(reason, bad)`` pairs, ``bad`` bool ``[n]``; a row counts under its first reason.
  """
  is_bad = np.zeros(len(lines), bool)
  for reason, mask in problems:
    new = mask & ~is_bad
    report.add(reason, lines=lines[new][:parsing.MAX_BAD_EXAMPLES], count=int(new.sum()))
    is_bad |= mask
  return ~is_bad


def release_year(title: bytes) -> bytes:
  """``b'1995'`` from ``b'Toy Story (1995)'``; ``b''`` (NULL) if the title has no year."""
  match = _YEAR.search(title)
  return match.group(1) if match else b''


def ratings_chunk(ratings: dict, users: dict, movies: dict) -> tuple[parsing.Chunk, dict]:
  """The dataset rows from parsed tables (ratings with known user and movie ids only).

  Args:
    ratings: int64 ``[n]`` arrays ``user``, ``movie``, ``rating`` (1..5), ``timestamp``.
    users: ``user`` int64 ``[u]`` and byte-string lists ``gender``, ``age``, ``occupation``,
      ``zip``.
    movies: ``movie`` int64 ``[m]`` and byte-string lists ``title``, ``genres``.

  Returns:
    The chunk (keys uint64 ``[7, k]``, labels ``[k]``, rating-3 rows dropped) and facts for
    ``meta.json`` (``timestamp_min``, ``dropped_rating_3``).
  """
  keep = ratings['rating'] != 3
  user_row = np.full(int(users['user'].max(initial=0)) + 1, -1, np.int64)
  user_row[users['user']] = np.arange(len(users['user']))
  movie_row = np.full(int(movies['movie'].max(initial=0)) + 1, -1, np.int64)
  movie_row[movies['movie']] = np.arange(len(movies['movie']))
  u = user_row[ratings['user'][keep]]
  m = movie_row[ratings['movie'][keep]]
  timestamp = ratings['timestamp'][keep]
  t_min = int(timestamp.min()) if len(timestamp) else 0

  def field(values: Sequence[bytes], rows: np.ndarray) -> np.ndarray:
    return parsing.bytes_keys(pa.array(values, pa.binary()))[rows]

  years = [release_year(t) for t in movies['title']]
  keys = np.stack([
      parsing.integer_tokens(timestamp - t_min).view(np.uint64),
      field(users['gender'], u), field(users['age'], u), field(users['occupation'], u),
      field(users['zip'], u), field(years, m), field(movies['genres'], m),
  ])
  labels = (ratings['rating'][keep] > 3).astype(np.uint8)
  return parsing.Chunk(keys, labels), {'timestamp_min': t_min,
                                       'dropped_rating_3': int((~keep).sum())}


def read(paths: Sequence[str], bad: list[parsing.BadLines], info: dict, *, workers: int = 1
         ) -> Iterator[parsing.Chunk]:
  """Yields the rows of MovieLens-1M (one chunk); records malformed lines in ``bad``.

  Bad lines: wrong column count, non-integer ids/timestamps, ratings outside 1..5, repeated
  user or movie ids, ratings of unknown users or movies.

  Args:
    paths: ``[users.dat, movies.dat, ratings.dat]``.
    bad: receives one report per file.
    info: receives ``timestamp_min`` and ``dropped_rating_3``.
    workers: unused (the files are small).
  """
  del workers
  users_path, movies_path, ratings_path = paths

  def load(path, columns, id_column):
    table, lines, report = read_table(path, columns, bad)
    ids, ok = parsing.parse_ints(table.column(id_column))
    first = np.zeros(len(ids), bool)
    if ok.any():
      _, where = np.unique(np.where(ok, ids, -1), return_index=True)
      first[where] = True
    good = _flag(report, lines, [(f'non-integer {id_column} id', ~ok), (f'repeated {id_column} id', ~first)])
    return table.filter(pa.array(good)), ids[good]

  users_table, user_ids = load(users_path, USER_COLUMNS, 'user')
  movies_table, movie_ids = load(movies_path, MOVIE_COLUMNS, 'movie')
  table, lines, report = read_table(ratings_path, RATING_COLUMNS, bad)
  if table.num_rows == 0 or len(user_ids) == 0 or len(movie_ids) == 0:
    return  # the empty file fails the bad-line check
  columns = {name: parsing.parse_ints(table.column(name)) for name in RATING_COLUMNS}
  rating, rating_ok = columns['rating']
  user, user_ok = columns['user']
  movie, movie_ok = columns['movie']
  known_user = np.isin(user, user_ids) & user_ok
  known_movie = np.isin(movie, movie_ids) & movie_ok
  good = _flag(report, lines, [
      ('non-integer value', ~(rating_ok & user_ok & movie_ok & columns['timestamp'][1])),
      ('rating outside 1..5', (rating < 1) | (rating > 5)),
      ('unknown user id', ~known_user),
      ('unknown movie id', ~known_movie),
  ])
  ratings = {name: columns[name][0][good] for name in RATING_COLUMNS}
  users = {'user': user_ids, **{c: users_table.column(c).to_pylist() for c in USER_COLUMNS[1:]}}
  movies = {'movie': movie_ids,
            **{c: movies_table.column(c).to_pylist() for c in MOVIE_COLUMNS[1:]}}
  chunk, facts = ratings_chunk(ratings, users, movies)
  info.update(facts)
  yield chunk


def row_keys(values: Sequence[str | bytes], meta: dict) -> np.ndarray:
  """The keys of one raw row: (timestamp, gender, age, occupation, zip, title, genres).

  Args:
    values: raw values as in the ``.dat`` files (the title, not the year).
    meta: the cache's ``meta.json`` (for the minimum timestamp).

  Returns:
    uint64 ``[7]``.
  """
  if len(values) != 7:
    raise ValueError('a MovieLens row is (timestamp, gender, age, occupation, zip, title, '
                     f'genres); got {len(values)} values')
  raw = [v.encode('latin-1') if isinstance(v, str) else bytes(v) for v in values]
  token = parsing.integer_tokens(np.array([int(raw[0]) - meta['reader']['timestamp_min']]))
  rest = parsing.bytes_keys(pa.array(raw[1:5] + [release_year(raw[5]), raw[6]], pa.binary()))
  return np.concatenate([token.view(np.uint64), rest])
