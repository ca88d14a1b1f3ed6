"""TensorFlow Datasets: MovieLens-1M from ``movielens/1m-ratings``, and builders for Criteo/Avazu.

Nothing here is imported by the default path (raw files -> columnar cache); TFDS is imported
inside the functions. Reading a prepared ``movielens/1m-ratings`` uses ``tfds.data_source``
(ArrayRecord, no TensorFlow) and falls back to ``tfds.as_numpy`` (needs TensorFlow).
``tfds build`` itself needs TensorFlow to serialise examples.

The Criteo and Avazu builders are manual-download builders over the same raw files and the same
line checks as :mod:`pep_jax.data.criteo` / :mod:`pep_jax.data.avazu`; they store each good line's
label and raw feature values, so the vocabulary is still made by :mod:`pep_jax.data.cache`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pep_jax.data import avazu, cache, criteo, movielens, parsing
from pep_jax.errors import ConfigError, MissingError

# TFDS's 1m-ratings turns occupation codes into these texts and renames "Children's".
_OCCUPATIONS = ('other/not specified', 'academic/educator', 'artist', 'clerical/admin',
                'college/grad student', 'customer service', 'doctor/health care',
                'executive/managerial', 'farmer', 'homemaker', 'K-12 student', 'lawyer',
                'programmer', 'retired', 'sales/marketing', 'scientist', 'self-employed',
                'technician/engineer', 'tradesman/craftsman', 'unemployed', 'writer')


def _tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError('data.source=tfds needs tensorflow-datasets (pip install '
                      'tensorflow-datasets)') from e
  return tfds


def _movielens_records(data_config):
  """The examples of the prepared ``movielens/1m-ratings`` train split and its DatasetInfo."""
  tfds = _tfds()
  data_dir = data_config.tfds_data_dir or None
  try:
    source = tfds.data_source('movielens/1m-ratings', split='train', data_dir=data_dir)
    return iter(source), source.dataset_info
  except Exception as first:  # not prepared as ArrayRecord: the TensorFlow reader
    try:
      import tensorflow  # noqa: F401
    except ImportError:
      raise RuntimeError(
          'data.source=tfds: movielens/1m-ratings is not prepared as ArrayRecord in '
          f'{data_dir or "the TFDS default data_dir"} ({str(first).splitlines()[0][:200]}); '
          'reading TFRecord files needs '
          'TensorFlow (pip install tensorflow), or prepare it with '
          '`tfds build movielens/1m-ratings --file_format=array_record` (needs TensorFlow '
          'once), or use data.source=raw with the ml-1m files') from first
    ds, info = tfds.load('movielens/1m-ratings', split='train', data_dir=data_dir, with_info=True)
    return iter(tfds.as_numpy(ds)), info


def movielens_tables(records, genre_names) -> tuple[dict, dict, dict]:
  """Users, movies and ratings tables (as :func:`movielens.ratings_chunk` takes them) from
  TFDS examples, with TFDS's renamings undone so keys equal those of the raw files."""
  users, movies, ratings = {}, {}, {k: [] for k in movielens.RATING_COLUMNS}
  for ex in records:
    user, movie = int(ex['user_id']), int(ex['movie_id'])
    ratings['user'].append(user)
    ratings['movie'].append(movie)
    ratings['rating'].append(int(round(float(ex['user_rating']))))
    ratings['timestamp'].append(int(ex['timestamp']))
    if user not in users:
      occupation = ex['user_occupation_text']
      occupation = occupation.decode() if isinstance(occupation, bytes) else str(occupation)
      users[user] = (b'M' if ex['user_gender'] else b'F',
                     str(int(ex['bucketized_user_age'])).encode(),
                     str(_OCCUPATIONS.index(occupation)).encode(),
                     bytes(ex['user_zip_code']))
    if movie not in movies:
      genres = [genre_names[g] for g in ex['movie_genres']]
      genres = ["Children's" if g == 'Children' else g for g in genres]
      movies[movie] = (bytes(ex['movie_title']).decode('utf-8').encode('latin-1'),
                       '|'.join(genres).encode('latin-1'))
  user_ids = np.array(sorted(users), np.int64)
  movie_ids = np.array(sorted(movies), np.int64)
  users_table = {'user': user_ids, **{c: [users[u][i] for u in user_ids]
                                      for i, c in enumerate(movielens.USER_COLUMNS[1:])}}
  movies_table = {'movie': movie_ids, **{c: [movies[m][i] for m in movie_ids]
                                         for i, c in enumerate(movielens.MOVIE_COLUMNS[1:])}}
  return {k: np.array(v, np.int64) for k, v in ratings.items()}, users_table, movies_table


def source(data_config) -> cache.Source:
  """The cache source for ``data.source='tfds'`` (MovieLens-1M only)."""
  if data_config.name != movielens.NAME:
    raise ConfigError("config key data.source='tfds' is for data.name='movielens'; Criteo and "
                     "Avazu are read from their raw files (their TFDS builders are in "
                     "pep_jax.data.tfds_builders for `tfds build` users)")
  tfds_dir = data_config.tfds_data_dir or 'default'

  def read(bad: list, info: dict) -> Iterator[parsing.Chunk]:
    records, ds_info = _movielens_records(data_config)
    report = parsing.BadLines(f'tfds:movielens/1m-ratings ({tfds_dir})')
    bad.append(report)
    ratings, users, movies = movielens_tables(
        records, ds_info.features['movie_genres'].feature.names)
    report.total_lines = len(ratings['user'])
    chunk, facts = movielens.ratings_chunk(ratings, users, movies)
    info.update(facts)
    yield chunk

  return cache.Source(name=movielens.NAME, field_names=movielens.FIELD_NAMES,
                      field_kinds=movielens.FIELD_KINDS,
                      inputs=(f'tfds:movielens/1m-ratings@{tfds_dir}',), read=read)


def good_raw_rows(module, path: str, *,
                  block_bytes: int = 32 << 20) -> Iterator[tuple[int, dict]]:
  """``(line number, {'label': 0/1, field: raw bytes})`` for every good line of a raw file,
  parsed in blocks of about ``block_bytes``."""
  columns, skip = module.layout(path, parsing.BadLines(path))
  line0 = 2 if skip else 1
  for block in parsing.read_blocks(path, block_bytes, skip=skip):
    table, lines, dropped = parsing.parse_block(block, columns, module.DELIMITER)
    checks = module.convert(table)
    is_bad = np.zeros(table.num_rows, bool)
    for _, mask in checks.problems:
      is_bad |= mask
    values = {name: table.column(name).to_pylist() for name in module.FIELD_NAMES}
    for r in np.flatnonzero(~is_bad):
      yield int(line0 + lines[r]), {'label': int(checks.labels[r]),
                                    **{name: values[name][r] for name in module.FIELD_NAMES}}
    line0 += table.num_rows + len(dropped)


def make_builder(module):
  """A TFDS manual-download builder class for :mod:`criteo` or :mod:`avazu`."""
  tfds = _tfds()

  class Builder(tfds.core.GeneratorBasedBuilder):
    __doc__ = f'{module.NAME}: raw lines (label and feature values), bad lines left out.'
    name = f'{module.NAME}_raw'
    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Raw values of every well-formed line.'}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f'{module.DOWNLOAD}. Place {", ".join(module.FILES)} in the manual_dir '
        '(`tfds build --manual_dir=...`, default ~/tensorflow_datasets/downloads/manual).')

    def _info(self):
      features = {'label': tfds.features.ClassLabel(num_classes=2)}
      features.update({name: tfds.features.Tensor(shape=(), dtype=np.object_)
                       for name in module.FIELD_NAMES})
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features),
                                            supervised_keys=None)

    def _split_generators(self, dl_manager):
      paths = module.raw_paths(str(dl_manager.manual_dir))
      if not paths:
        raise MissingError(f'{dl_manager.manual_dir}: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
      return {'train': self._generate_examples(paths[0])}

    def _generate_examples(self, path):
      yield from good_raw_rows(module, path)

  Builder.__name__ = Builder.__qualname__ = f'{module.NAME.capitalize()}Raw'
  return Builder


# `tfds build criteo_raw --imports=pep_jax.data.tfds_builders --manual_dir=<folder with train.txt>`
CriteoRaw = make_builder(criteo)
AvazuRaw = make_builder(avazu)
