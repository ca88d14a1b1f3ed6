"""The synthetic benchmark: deterministic, planted truth, Zipf frequencies; the batch pipeline."""

import numpy as np
import pytest

from pep_jax.config import default_config
from pep_jax.data import load_dataset, pipeline, synthetic
from pep_jax.data.split import split_rows


def small_config():
  c = default_config().data
  c.synthetic.num_rows = 30_000
  c.synthetic.vocab_sizes = (4, 50, 300, 20, 500)
  c.synthetic.intrinsic_dims = (1, 3, 2, 0, 0)
  c.synthetic.latent_dim = 4
  return c


def test_deterministic_from_the_seed():
  a, b = load_dataset(small_config()), load_dataset(small_config())
  np.testing.assert_array_equal(a.train.ids, b.train.ids)
  np.testing.assert_array_equal(a.test.labels, b.test.labels)
  c = small_config()
  c.synthetic.seed = 1
  assert not np.array_equal(load_dataset(c).train.ids, a.train.ids)


def test_shapes_split_and_ranges():
  d = load_dataset(small_config())
  assert (len(d.train), len(d.valid), len(d.test)) == (24_000, 3_000, 3_000)
  for split in (d.train, d.valid, d.test):
    assert split.ids.dtype == np.int32
    assert np.all(split.ids >= 0) and np.all(split.ids < d.field_dims)
  assert d.field_names[3].startswith('noise') and d.field_names[1].startswith('signal')
  assert 0.2 < d.info['ctr'] < 0.3
  assert 0.6 < d.info['teacher_test_auc'] < 1.0


def test_noise_fields_do_not_move_the_teacher():
  cfg = small_config().synthetic
  ids, _, logits = synthetic.generate(cfg)
  w, u = synthetic.teacher_tables(cfg)
  for f, k in enumerate(cfg.intrinsic_dims):
    nonzero_cols = np.flatnonzero(np.abs(u[f]).sum(axis=0))
    assert len(nonzero_cols) == k
    if k == 0:
      assert not np.any(w[f])
  shuffled = ids.copy()
  shuffled[:, 3] = np.random.default_rng(0).permutation(shuffled[:, 3])
  scale_first = 1.0  # the logit is linear in the tables, so compare with rescaled tables
  a = synthetic.teacher_logits(ids, w, u, scale_first, 1.0, 0.0)
  b = synthetic.teacher_logits(shuffled, w, u, scale_first, 1.0, 0.0)
  np.testing.assert_allclose(a, b)


def test_zipf_frequencies():
  counts = np.bincount(synthetic._zipf_sample(np.random.default_rng(0), 1000, 1.1, 200_000),
                       minlength=1000)
  assert counts[0] > 10 * counts[50] > 0
  assert np.all(np.diff(counts[:5]) < 0)


def test_bad_synthetic_config_names_the_keys():
  c = small_config()
  c.synthetic.intrinsic_dims = (1, 2)
  with pytest.raises(ValueError, match='data.synthetic.intrinsic_dims'):
    load_dataset(c)


def test_split_rows_partition():
  tr, va, te = split_rows(1001, (0.8, 0.1, 0.1), seed=3)
  assert len(tr) + len(va) + len(te) == 1001
  np.testing.assert_array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(1001))
  with pytest.raises(ValueError, match='data.split'):
    split_rows(10, (0.5, 0.5, 0.5), seed=0)


def test_batches_fixed_shape_padding_and_resume():
  d = load_dataset(small_config())
  all_batches = list(pipeline.batches(d.valid, 1024, shuffle=True, seed=5, epoch=2))
  assert len(all_batches) == 3
  assert {b['ids'].shape for b in all_batches} == {(1024, 5)}
  last = all_batches[-1]
  assert last['weights'].sum() == 3000 - 2048 and np.all(last['ids'][last['weights'] == 0] == 0)
  resumed = list(pipeline.batches(d.valid, 1024, shuffle=True, seed=5, epoch=2, start=1))
  for a, b in zip(all_batches[1:], resumed):
    np.testing.assert_array_equal(a['ids'], b['ids'])
  rows_seen = np.concatenate([b['labels'][b['weights'] > 0] for b in all_batches])
  assert rows_seen.sum() == d.valid.labels.sum()
  other = next(pipeline.batches(d.valid, 1024, shuffle=True, seed=5, epoch=3))
  assert not np.array_equal(other['ids'], all_batches[0]['ids'])
