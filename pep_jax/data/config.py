"""Defaults of the ``data`` section of every experiment config."""

import ml_collections


def data_defaults() -> ml_collections.ConfigDict:
  """The ``config.data`` section; dataset configs override what differs."""
  c = ml_collections.ConfigDict()
  c.name = 'synthetic'  # a key of pep_jax.data.registry.DATASETS
  c.dir = ''  # folder with the raw files of a real dataset
  c.cache_dir = ''  # columnar cache; '' -> <dir>/cache
  c.split_seed = 42  # seed of the random 80/10/10 split
  c.split = (0.8, 0.1, 0.1)
  c.min_count = 10  # rarer values share one out-of-vocabulary index per field
  c.count_on = 'all'  # 'all' rows (as the paper) or 'train' split only
  c.max_bad_fraction = 0.001  # fail when more raw lines than this are malformed
  c.source = 'raw'  # 'raw' files in data.dir, or 'tfds' (movielens/1m-ratings, prepared)
  c.tfds_data_dir = ''  # TFDS data_dir for source='tfds'; '' -> TFDS's default
  c.workers = 0  # threads that parse and encode raw files; 0 -> every CPU
  c.verify_cache = True  # check the cache arrays' CRC32 before use (a few s for Criteo)

  s = ml_collections.ConfigDict()
  s.seed = 0
  s.num_rows = 500_000
  # One entry per field: vocabulary size and the teacher's intrinsic dimension (0 = noise).
  # Informative fields up to 1,000 values; the largest vocabularies are noise, as id-like
  # fields of real logs are: many values, little signal each.
  s.vocab_sizes = (3, 4, 7, 12, 25, 60, 150, 400, 1000, 500, 300, 800,
                   3, 5, 10, 30, 100, 2000, 8000, 20000)
  s.intrinsic_dims = (1, 2, 1, 3, 2, 4, 3, 6, 4, 8, 5, 6,
                      0, 0, 0, 0, 0, 0, 0, 0)
  s.zipf_exponent = 1.1
  s.latent_dim = 8  # width of the teacher's interaction space (max intrinsic dim)
  s.first_order_std = 0.4
  s.interaction_std = 1.2
  s.base_ctr = 0.25
  c.synthetic = s
  return c


def independent_synthetic(num_rows: int = 300_000) -> ml_collections.ConfigDict:
  """A ``data.synthetic`` preset in which vocabulary size and importance are independent.

  Every pairing of 4 vocabulary sizes (6, 60, 600, 6000) with 5 intrinsic dimensions (0, 1, 2,
  4, 8) is one field: 20 fields, 33,330 features, 4 of them pure noise. Vocabulary size and
  intrinsic dimension have a rank correlation of exactly 0, so a method that sizes fields by
  frequency alone gets no credit for recovering the truth (in the default preset the largest
  vocabularies are noise, and frequency and truth point the same way).
  """
  s = data_defaults().synthetic
  vocabs, dims = (6, 60, 600, 6000), (0, 1, 2, 4, 8)
  pairs = [(v, k) for i, k in enumerate(dims) for v in vocabs[i % 4:] + vocabs[:i % 4]]
  s.vocab_sizes = tuple(v for v, _ in pairs)
  s.intrinsic_dims = tuple(k for _, k in pairs)
  s.latent_dim = 8
  s.num_rows = num_rows
  return s
