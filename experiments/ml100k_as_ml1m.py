"""MovieLens-100K rewritten as MovieLens-1M's three files, so the ML-1M loader reads it.

    python experiments/ml100k_as_ml1m.py --src=/path/to/ml-100k --out=/data/ml100k_as_1m

MovieLens-100K (``u.data``, ``u.user``, ``u.item``; the public PEP repository ships it under
``data/ml-100k``) is the real MovieLens sample small enough for a 2-core machine. It becomes
``ratings.dat``, ``users.dat`` and ``movies.dat`` in ML-1M's ``::`` format, which
``configs/movielens_*.py`` read with the paper's preprocessing (rating 3 dropped, 7 fields, no
user or movie id):

* ratings: ``user \\t movie \\t rating \\t timestamp`` -> ``user::movie::rating::timestamp``;
* users: ``user|age|gender|occupation|zip`` -> ``user::gender::age::occupation::zip``, the age
  put in ML-1M's brackets (1: under 18, 18, 25, 35, 45, 50, 56: 56 and over) and the occupation
  given ML-1M's code (:data:`OCCUPATIONS`; ML-100K's ``entertainment``, ``librarian`` and
  ``other`` have none of their own and become 0, "other");
* movies: ``movie|title|release date|video date|url|19 genre flags`` -> ``movie::title::genres``,
  the genres the flags set, ``|``-joined in ML-100K's order.

Files are read as latin-1 and written as latin-1 (as ML-1M's are).
"""

from __future__ import annotations

import argparse
import os

# ML-100K's genre flags, in the order of u.item's last 19 columns.
GENRES = ('unknown', 'Action', 'Adventure', 'Animation', "Children's", 'Comedy', 'Crime',
          'Documentary', 'Drama', 'Fantasy', 'Film-Noir', 'Horror', 'Musical', 'Mystery',
          'Romance', 'Sci-Fi', 'Thriller', 'War', 'Western')

# ML-100K occupation -> ML-1M occupation code (ML-1M's README lists the 21 codes).
OCCUPATIONS = {
    'other': 0, 'entertainment': 0, 'librarian': 0, 'educator': 1, 'artist': 2,
    'administrator': 3, 'student': 4, 'doctor': 6, 'healthcare': 6, 'executive': 7,
    'homemaker': 9, 'lawyer': 11, 'programmer': 12, 'retired': 13, 'marketing': 14,
    'salesman': 14, 'scientist': 15, 'engineer': 17, 'technician': 17, 'none': 19, 'writer': 20,
}

AGE_BRACKETS = ((18, 1), (25, 18), (35, 25), (45, 35), (50, 45), (56, 50))  # (below, code)


def age_bracket(age: int) -> int:
  """ML-1M's age code of an age in years."""
  for below, code in AGE_BRACKETS:
    if age < below:
      return code
  return 56


def _lines(path: str) -> list[str]:
  with open(path, encoding='latin-1') as f:
    return [line.rstrip('\r\n') for line in f if line.strip()]


def _write(path: str, lines: list[str]) -> None:
  with open(path, 'w', encoding='latin-1', newline='\n') as f:
    f.write('\n'.join(lines) + '\n')


def convert(src: str, out: str) -> dict:
  """Writes ``out/{ratings,users,movies}.dat`` from the ML-100K folder ``src``.

  Returns:
    ``{'ratings', 'users', 'movies'}``: lines written to each file.

  Raises:
    SystemExit: naming the file and line, for a missing file or a line that does not parse.
  """
  paths = {name: os.path.join(src, name) for name in ('u.data', 'u.user', 'u.item')}
  for path in paths.values():
    if not os.path.isfile(path):
      raise SystemExit(f'{path} not found: --src is the ml-100k folder (u.data, u.user, u.item)')
  ratings, users, movies = [], [], []
  for number, line in enumerate(_lines(paths['u.data']), 1):
    cols = line.split('\t')
    if len(cols) != 4:
      raise SystemExit(f'{paths["u.data"]} line {number}: expected 4 tab-separated columns')
    ratings.append('::'.join(cols))
  for number, line in enumerate(_lines(paths['u.user']), 1):
    cols = line.split('|')
    if len(cols) != 5 or not cols[1].isdigit() or cols[3] not in OCCUPATIONS:
      raise SystemExit(f'{paths["u.user"]} line {number}: expected user|age|gender|occupation|'
                       f'zip with a known occupation, got {line!r}')
    user, age, gender, occupation, zip_code = cols
    users.append(f'{user}::{gender}::{age_bracket(int(age))}::{OCCUPATIONS[occupation]}::'
                 f'{zip_code}')
  for number, line in enumerate(_lines(paths['u.item']), 1):
    cols = line.split('|')
    flags = cols[-len(GENRES):]
    if len(cols) != 5 + len(GENRES) or any(f not in ('0', '1') for f in flags):
      raise SystemExit(f'{paths["u.item"]} line {number}: expected 24 |-separated columns '
                       'ending in 19 genre flags')
    genres = '|'.join(g for g, flag in zip(GENRES, flags) if flag == '1')
    movies.append(f'{cols[0]}::{cols[1]}::{genres}')
  os.makedirs(out, exist_ok=True)
  _write(os.path.join(out, 'ratings.dat'), ratings)
  _write(os.path.join(out, 'users.dat'), users)
  _write(os.path.join(out, 'movies.dat'), movies)
  return {'ratings': len(ratings), 'users': len(users), 'movies': len(movies)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--src', required=True, help='the ml-100k folder: u.data, u.user, u.item')
  parser.add_argument('--out', required=True, help='folder for ratings.dat, users.dat, movies.dat')
  args = parser.parse_args()
  counts = convert(args.src, args.out)
  print(f'wrote {counts["ratings"]:,} ratings, {counts["users"]:,} users and '
        f'{counts["movies"]:,} movies to {args.out}')


if __name__ == '__main__':
  main()
