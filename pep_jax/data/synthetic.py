"""A synthetic CTR dataset with a planted ground truth (the embedded default).

Shaped like Criteo: many categorical fields, Zipf-like value frequencies, vocabularies from a
handful to thousands of values. Labels come from a known FM teacher

    logit = b + sum_f w_f[x_f] + sum_{f<g} <u_f[x_f], u_g[x_g]>,    y ~ Bernoulli(sigmoid(logit)),

in which every *noise* field (intrinsic dimension 0) has ``w = 0`` and ``u = 0``, and every
informative field f has vectors ``u_f`` confined to ``k_f`` coordinates of a shared latent space
(its intrinsic dimension). A student embedding therefore needs no entries for noise fields and
at most ``k_f`` per feature of field f; the teacher's own AUC is the ceiling a student can reach.

Everything is a deterministic function of ``data.synthetic`` (seed included): no files.
"""

from __future__ import annotations

import numpy as np

from pep_jax.data.base import CTRDataset, Split
from pep_jax.data.split import split_rows
from pep_jax.errors import ConfigError
from pep_jax.metrics import auc as roc_auc

NAME = 'synthetic'
FILES = ()  # generated in memory from data.synthetic: nothing to read


def _check(cfg) -> None:
  if len(cfg.vocab_sizes) != len(cfg.intrinsic_dims):
    raise ConfigError('config keys data.synthetic.vocab_sizes and data.synthetic.intrinsic_dims '
                     f'must have the same length, got {len(cfg.vocab_sizes)} and '
                     f'{len(cfg.intrinsic_dims)}')
  if max(cfg.intrinsic_dims) > cfg.latent_dim:
    raise ConfigError(f'config key data.synthetic.latent_dim={cfg.latent_dim} is smaller than the '
                     f'largest intrinsic dimension {max(cfg.intrinsic_dims)}')
  if min(cfg.vocab_sizes) < 1 or cfg.num_rows < 10:
    raise ConfigError('config keys data.synthetic.vocab_sizes (>= 1 each) and '
                     'data.synthetic.num_rows (>= 10) are out of range')


def _zipf_sample(rng: np.random.Generator, vocab: int, exponent: float, n: int) -> np.ndarray:
  """``n`` draws of ``0..vocab-1`` with probability proportional to ``(i + 1) ** -exponent``."""
  cdf = np.cumsum(np.arange(1, vocab + 1, dtype=np.float64) ** -exponent)
  cdf /= cdf[-1]
  return np.minimum(np.searchsorted(cdf, rng.random(n)), vocab - 1).astype(np.int32)


def teacher_tables(cfg) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """The teacher's first-order weights ``w_f [V_f]`` and latent vectors ``u_f [V_f, K]``.

  Informative field f uses coordinates ``offset_f .. offset_f + k_f`` (mod K) of the latent
  space, so fields of low intrinsic dimension still interact with the others.
  """
  rng = np.random.default_rng([cfg.seed, 1])
  w, u = [], []
  start = 0
  for vocab, k in zip(cfg.vocab_sizes, cfg.intrinsic_dims):
    wf = np.zeros(vocab)
    uf = np.zeros((vocab, cfg.latent_dim))
    if k > 0:
      wf = rng.normal(size=vocab)
      cols = (start + np.arange(k)) % cfg.latent_dim
      uf[:, cols] = rng.normal(size=(vocab, k))
      start += k
    w.append(wf)
    u.append(uf)
  return w, u


def teacher_logits(ids: np.ndarray, w: list[np.ndarray], u: list[np.ndarray],
                   first_scale: float, pair_scale: float, bias: float) -> np.ndarray:
  """The teacher's logit of every row of ``ids [N, F]`` (float64 ``[N]``)."""
  first = np.zeros(len(ids))
  total = np.zeros((len(ids), u[0].shape[1]))
  squares = np.zeros(len(ids))
  for f in range(ids.shape[1]):
    first += w[f][ids[:, f]]
    vec = u[f][ids[:, f]]
    total += vec
    squares += np.sum(vec * vec, axis=1)
  pairs = 0.5 * (np.sum(total * total, axis=1) - squares)
  return bias + first_scale * first + pair_scale * pairs


def generate(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Draws ``ids [N, F]`` (int32), ``labels [N]`` (float32) and true logits ``[N]``."""
  _check(cfg)
  rng = np.random.default_rng([cfg.seed, 0])
  n = cfg.num_rows
  ids = np.stack([_zipf_sample(rng, v, cfg.zipf_exponent, n) for v in cfg.vocab_sizes], axis=1)
  # Shuffle each field's value ids so that frequency rank is not the index order.
  for f, vocab in enumerate(cfg.vocab_sizes):
    ids[:, f] = rng.permutation(vocab).astype(np.int32)[ids[:, f]]
  w, u = teacher_tables(cfg)
  raw_first = teacher_logits(ids, w, [np.zeros_like(x) for x in u], 1.0, 0.0, 0.0)
  raw_pairs = teacher_logits(ids, [np.zeros_like(x) for x in w], u, 0.0, 1.0, 0.0)
  # Scale both parts to their configured spread, then pick the bias for the base CTR.
  first_scale = cfg.first_order_std / max(raw_first.std(), 1e-12)
  pair_scale = cfg.interaction_std / max(raw_pairs.std(), 1e-12)
  mean = first_scale * raw_first.mean() + pair_scale * raw_pairs.mean()
  centred = first_scale * raw_first + pair_scale * raw_pairs - mean
  bias = _bias_for_ctr(centred, cfg.base_ctr) - mean
  logits = teacher_logits(ids, w, u, first_scale, pair_scale, bias)
  labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
  return ids, labels, logits


def _bias_for_ctr(centred_logits: np.ndarray, ctr: float) -> float:
  """The bias b with ``mean(sigmoid(centred + b)) == ctr`` (bisection)."""
  lo, hi = -20.0, 20.0
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    if np.mean(1.0 / (1.0 + np.exp(-(centred_logits + mid)))) < ctr:
      lo = mid
    else:
      hi = mid
  return 0.5 * (lo + hi)


def load(data_config) -> CTRDataset:
  """The synthetic dataset of ``data_config.synthetic``, split 80/10/10 by ``split_seed``."""
  cfg = data_config.synthetic
  ids, labels, logits = generate(cfg)
  train, valid, test = split_rows(len(ids), data_config.split, data_config.split_seed)
  names = tuple(f'{"noise" if k == 0 else "signal"}{f:02d}_k{k}'
                for f, k in enumerate(cfg.intrinsic_dims))
  info = {
      'teacher_test_auc': float(roc_auc(labels[test], logits[test])),
      'teacher_valid_auc': float(roc_auc(labels[valid], logits[valid])),
      'intrinsic_dims': [int(k) for k in cfg.intrinsic_dims],
      'ctr': float(labels.mean()),
  }
  return CTRDataset(
      name=NAME, field_names=names,
      field_dims=np.asarray(cfg.vocab_sizes, np.int64),
      train=Split(ids[train], labels[train]), valid=Split(ids[valid], labels[valid]),
      test=Split(ids[test], labels[test]), info=info)
