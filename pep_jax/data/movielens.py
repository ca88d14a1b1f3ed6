"""MovieLens-1M (grouplens.org ``ml-1m.zip``): ``users.dat``, ``movies.dat``, ``ratings.dat``.

Lines are ``::``-separated, latin-1 text (kept as bytes here). Rating 3 is dropped and the label
is ``rating > 3``. A row has 7 fields and no user or movie id: the timestamp bucket
(``timestamp - min timestamp`` of the kept ratings, then the Criteo integer rule), gender,
age, occupation, zip code, the release year from the title's ``(YYYY)`` (NULL without one)
and the whole genre string (``Action|Comedy``) as one categorical value.

:func:`encode` is the one function that turns ratings lines (with or without the rating) into
keys, joining them with ``users.dat`` and ``movies.dat`` all at once: the cache build and
``pep_jax.predict`` both read through it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from pep_jax.data import parsing
from pep_jax.errors import InputError, MissingError

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
UNRATED_COLUMNS = ('user', 'movie', 'timestamp')  # rows to score


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


def value_keys(timestamp: np.ndarray, users: dict, movies: dict, user_rows: np.ndarray,
               movie_rows: np.ndarray, timestamp_min: int) -> np.ndarray:
  """The keys of MovieLens rows: the one place where MovieLens values become keys.

  Args:
    timestamp: int64 ``[n]``, seconds.
    users: byte-string lists ``gender``, ``age``, ``occupation``, ``zip``, one entry per user.
    movies: byte-string lists ``title``, ``genres``, one entry per movie.
    user_rows: int64 ``[n]``: each row's entry in ``users``.
    movie_rows: int64 ``[n]``: each row's entry in ``movies``.
    timestamp_min: subtracted from every timestamp before the integer rule.

  Returns:
    uint64 ``[7, n]``, fields in :data:`FIELD_NAMES` order.
  """

  def field(values: Sequence[bytes], rows: np.ndarray) -> np.ndarray:
    return parsing.bytes_keys(pa.array(values, pa.binary()))[rows]  # [n]

  years = [release_year(t) for t in movies['title']]
  return np.stack([
      parsing.integer_tokens(timestamp - timestamp_min).view(np.uint64),
      field(users['gender'], user_rows), field(users['age'], user_rows),
      field(users['occupation'], user_rows), field(users['zip'], user_rows),
      field(years, movie_rows), field(movies['genres'], movie_rows),
  ])


def _rows_of(ids: np.ndarray, table_ids: np.ndarray) -> np.ndarray:
  """Where each of ``ids`` (int64 ``[n]``, all present) is in ``table_ids`` (distinct)."""
  order = np.argsort(table_ids, kind='stable')
  return order[np.searchsorted(table_ids[order], ids)]


def ratings_chunk(ratings: dict, users: dict, movies: dict, timestamp_min: int | None = None
                  ) -> tuple[parsing.Chunk, dict]:
  """The keys and labels of ratings of known users and movies.

  Args:
    ratings: int64 ``[n]`` arrays ``user``, ``movie``, ``timestamp`` and, for rated rows,
      ``rating`` (1..5).
    users: ``user`` int64 ``[u]`` and byte-string lists ``gender``, ``age``, ``occupation``,
      ``zip``.
    movies: ``movie`` int64 ``[m]`` and byte-string lists ``title``, ``genres``.
    timestamp_min: None when building the cache: rating-3 rows are dropped and timestamps
      count from the minimum of the kept rows. The cache's value when encoding rows to score:
      every row is kept.

  Returns:
    The chunk (keys uint64 ``[7, k]``, labels ``[k]``: ``rating > 3``, 0 for unrated rows)
    and facts for ``meta.json`` (``timestamp_min``, ``dropped_rating_3``).
  """
  rating = ratings.get('rating')
  keep = np.ones(len(ratings['user']), bool)
  if timestamp_min is None and rating is not None:
    keep = rating != 3
  timestamp = ratings['timestamp'][keep]
  if timestamp_min is None:
    timestamp_min = int(timestamp.min()) if len(timestamp) else 0
  u = _rows_of(ratings['user'][keep], users['user'])
  m = _rows_of(ratings['movie'][keep], movies['movie'])
  labels = (rating[keep] > 3 if rating is not None else np.zeros(len(timestamp), bool))
  chunk = parsing.Chunk(value_keys(timestamp, users, movies, u, m, timestamp_min),
                        labels.astype(np.uint8))
  return chunk, {'timestamp_min': int(timestamp_min), 'dropped_rating_3': int((~keep).sum())}


def side_tables(users_path: str, movies_path: str, bad: list[parsing.BadLines]
                ) -> tuple[dict, dict]:
  """``users.dat`` and ``movies.dat`` as :func:`ratings_chunk` takes them.

  Bad lines (recorded in ``bad``, one report per file): wrong column count, a non-integer id,
  an id seen on an earlier line.

  Returns:
    users (``user`` int64 ``[u]``, byte-string lists ``gender``, ``age``, ``occupation``,
    ``zip``) and movies (``movie`` int64 ``[m]``, byte-string lists ``title``, ``genres``).
  """

  def load(path: str, columns: Sequence[str]) -> dict:
    id_column = columns[0]
    table, lines, report = read_table(path, columns, bad)
    ids, ok = parsing.parse_ints(table.column(id_column))
    first = np.zeros(len(ids), bool)
    if ok.any():
      _, where = np.unique(np.where(ok, ids, -1), return_index=True)
      first[where] = True
    good = _flag(report, lines, [(f'non-integer {id_column} id', ~ok),
                                 (f'repeated {id_column} id', ~first)])
    table = table.filter(pa.array(good))
    return {id_column: ids[good], **{c: table.column(c).to_pylist() for c in columns[1:]}}

  return load(users_path, USER_COLUMNS), load(movies_path, MOVIE_COLUMNS)


def _side_paths(path: str) -> tuple[str, str]:
  """``users.dat`` and ``movies.dat`` (plain or ``.gz``) in the folder of ``path``.

  Raises:
    MissingError: one of them is not there.
  """
  folder = os.path.dirname(os.path.abspath(path))
  found = []
  for name in FILES[:2]:
    found.append(parsing.first_file(folder, (name, name + '.gz')))
    if not found[-1]:
      raise MissingError(f'{os.path.join(folder, name)} not found: MovieLens ratings are read '
                         'with the users.dat and movies.dat of their folder')
  return found[0], found[1]


def encode(path: str, bad: list[parsing.BadLines], info: dict, *, labelled: bool | None = True,
           meta: dict | None = None, workers: int = 1,
           side_paths: tuple[str, str] | None = None) -> Iterator[parsing.Chunk]:
  """The keys of the rows of a MovieLens ratings file: its one raw-row encoder.

  Each line is joined with its user in ``users.dat`` and its movie in ``movies.dat``, all
  rows at once. The cache build reads ``ratings.dat`` through it; ``pep_jax.predict`` reads
  rows to score through it. Bad lines, recorded in ``bad`` with their line numbers: wrong
  column count, non-integer ids or timestamps, ratings outside 1..5, unknown user or movie ids
  (and in ``users.dat``/``movies.dat``: see :func:`side_tables`).

  Args:
    path: lines ``UserID::MovieID::Rating::Timestamp``, or ``UserID::MovieID::Timestamp``
      (unrated, to score); plain or ``.gz``.
    bad: receives one report per file: users, movies, ratings.
    info: receives ``timestamp_min`` and ``dropped_rating_3``.
    labelled: whether lines have the rating; None: when line 1 has 4 columns.
    meta: None when building the cache (rating-3 rows dropped, timestamps from the kept rows'
      minimum); the cache's ``meta.json`` when encoding rows for it (every good row kept,
      timestamps from the cache's minimum).
    workers: unused (the files are small).
    side_paths: ``users.dat`` and ``movies.dat``; by default those in the folder of ``path``.

  Yields:
    One chunk: keys uint64 ``[7, n]`` (field-major, as the cache writes them), labels uint8
    ``[n]`` (``rating > 3``; 0 for unrated lines).

  Raises:
    MissingError: ``users.dat`` or ``movies.dat`` is not beside ``path``.
  """
  del workers
  users, movies = side_tables(*(side_paths or _side_paths(path)), bad)
  if labelled is None:
    labelled = parsing.first_line(path).count(b'::') == len(RATING_COLUMNS) - 1
  columns = RATING_COLUMNS if labelled else UNRATED_COLUMNS
  table, lines, report = read_table(path, columns, bad)
  values = {name: parsing.parse_ints(table.column(name)) for name in columns}
  ratings = {name: numbers for name, (numbers, _) in values.items()}
  problems = [('non-integer value', ~np.logical_and.reduce([ok for _, ok in values.values()]))]
  if labelled:
    problems.append(('rating outside 1..5', (ratings['rating'] < 1) | (ratings['rating'] > 5)))
  problems += [('unknown user id', ~np.isin(ratings['user'], users['user'])),
               ('unknown movie id', ~np.isin(ratings['movie'], movies['movie']))]
  good = _flag(report, lines, problems)
  timestamp_min = None if meta is None else meta['reader']['timestamp_min']
  chunk, facts = ratings_chunk({name: v[good] for name, v in ratings.items()}, users, movies,
                               timestamp_min)
  info.update(facts)
  yield chunk


def read(paths: Sequence[str], bad: list[parsing.BadLines], info: dict, *, workers: int = 1
         ) -> Iterator[parsing.Chunk]:
  """Yields the rows of MovieLens-1M (one chunk; :func:`encode`, ratings required).

  Args:
    paths: ``[users.dat, movies.dat, ratings.dat]``.
    bad: receives one report per file.
    info: receives ``timestamp_min`` and ``dropped_rating_3``.
    workers: unused (the files are small).
  """
  users_path, movies_path, ratings_path = paths
  yield from encode(ratings_path, bad, info, workers=workers,
                    side_paths=(users_path, movies_path))


def row_keys(values: Sequence[str | bytes], meta: dict) -> np.ndarray:
  """The keys of one raw row, already joined (by :func:`value_keys`, as in a file).

  Args:
    values: (timestamp, gender, age, occupation, zip, title, genres) as in the ``.dat`` files
      (the title, not the year); strings are latin-1 encoded.
    meta: the cache's ``meta.json`` (for the minimum timestamp).

  Returns:
    uint64 ``[7]``.

  Raises:
    InputError: not 7 values, or a non-integer timestamp.
  """
  if len(values) != len(FIELD_NAMES):
    raise InputError('a MovieLens row is (timestamp, gender, age, occupation, zip, title, '
                     f'genres); got {len(values)} values')
  raw = [v.encode('latin-1') if isinstance(v, str) else bytes(v) for v in values]
  timestamp, ok = parsing.parse_ints(pa.array(raw[:1], pa.binary()))
  if not ok[0]:
    raise InputError(f'a MovieLens row: non-integer timestamp {raw[0]!r}')
  users = dict(zip(USER_COLUMNS[1:], ([v] for v in raw[1:5])))
  movies = dict(zip(MOVIE_COLUMNS[1:], ([v] for v in raw[5:])))
  first = np.zeros(1, np.int64)
  return value_keys(timestamp, users, movies, first, first, meta['reader']['timestamp_min'])[:, 0]
