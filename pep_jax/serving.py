"""Compact inference: score ids with a pruned model whose table is never made dense.

An artifact (written by :mod:`pep_jax.export`) stores the embedding in a *compact layout*:

* ``dense`` (a uniform model): ``table [N, D]``, the real rows only;
* ``bitmask`` (a pruned table, ``D <= 32``): per feature a bit mask of its non-zero
  dimensions, ``bits [N]`` (uint8/16/32), the first position of its values, ``offsets [N]``
  (int32), and the non-zero values row after row, ``values [nnz]``;
* ``csr`` (a pruned table, any ``D``): ``indptr [N + 1]`` (int32), ``cols [nnz]`` (the
  dimension of each value, uint8/16) and ``values [nnz]``.

Each layout is one small Flax module with the call signature of the training embeddings
(per-field ids ``[B, F] -> [B, F, D]``), so :func:`pep_jax.models.ctr.build_model` turns it
into the scorer. A lookup gathers only the batch's rows; the ``[N, D]`` table of a pruned
model exists nowhere, neither in the artifact nor in memory.

``load(DIR)`` checks the artifact (format version, size and SHA-256 of every file) before it
reads any array, and returns a :class:`Scorer`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pep_jax.config import default_config
from pep_jax.layers.embedding import field_offsets
from pep_jax.models.ctr import build_model

FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
WEIGHTS = 'weights.npz'
CONFIG = 'config.json'
EXPORTED = 'scorer.jaxexport'
VOCAB = 'vocab'  # folder: the cache's meta.json, vocab_keys.npy, vocab_counts.npy


class ArtifactError(ValueError):
  """An artifact is missing, damaged, of another format version, or does not fit its model."""


# ----------------------------------------------------------------------------- lookups


def dense_rows(table: jax.Array, gids: jax.Array) -> jax.Array:
  """``table[gids]``: ``[N, D]``, ``[B, F]`` -> ``[B, F, D]``."""
  return jnp.take(table, gids, axis=0)


def bitmask_rows(bits: jax.Array, offsets: jax.Array, values: jax.Array, gids: jax.Array,
                 dim: int) -> jax.Array:
  """Rows of a table stored as per-feature bit masks and packed non-zero values.

  Entry ``k`` of row ``g`` is ``values[offsets[g] + popcount(bits[g] & (2^k - 1))]`` when bit
  ``k`` of ``bits[g]`` is set, else 0.

  Args:
    bits: uint ``[N]``; bit ``k`` set where entry ``k`` of the row is non-zero.
    offsets: int32 ``[N]``: position in ``values`` of the row's first non-zero entry.
    values: ``[nnz]`` non-zero entries, row by row, dimension order inside a row.
    gids: int ``[B, F]`` table rows.
    dim: ``D``.

  Returns:
    ``[B, F, D]``.
  """
  row_bits = jnp.take(bits, gids, axis=0)[..., None]  # [B, F, 1]
  k = jnp.arange(dim, dtype=bits.dtype)
  one = jnp.ones((), bits.dtype)
  present = (row_bits >> k) & one  # [B, F, D]
  before = jax.lax.population_count(row_bits & ((one << k) - one)).astype(jnp.int32)
  if values.shape[0] == 0:
    return jnp.zeros(gids.shape + (dim,), values.dtype)
  pos = jnp.take(offsets, gids, axis=0)[..., None] + before  # [B, F, D]
  return jnp.where(present == one, jnp.take(values, pos, mode='clip'), 0).astype(values.dtype)


def csr_rows(indptr: jax.Array, cols: jax.Array, values: jax.Array, gids: jax.Array,
             dim: int) -> jax.Array:
  """Rows of a table in compressed sparse rows: row ``g`` holds ``values[indptr[g]:indptr[g+1]]``
  at the dimensions ``cols[indptr[g]:indptr[g+1]]``.

  Args:
    indptr: int32 ``[N + 1]``.
    cols: uint ``[nnz]``.
    values: ``[nnz]``.
    gids: int ``[B, F]`` table rows.
    dim: ``D``.

  Returns:
    ``[B, F, D]``.
  """
  if values.shape[0] == 0:
    return jnp.zeros(gids.shape + (dim,), values.dtype)
  start = jnp.take(indptr, gids, axis=0)  # [B, F]
  length = jnp.take(indptr, gids + 1, axis=0) - start
  k = jnp.arange(dim, dtype=jnp.int32)
  pos = start[..., None] + k  # [B, F, D]: up to D entries per row
  present = k < length[..., None]
  val = jnp.where(present, jnp.take(values, pos, mode='clip'), 0)
  col = jnp.where(present, jnp.take(cols, pos, mode='clip').astype(jnp.int32), dim)
  flat_val, flat_col = val.reshape(-1, dim), col.reshape(-1, dim)  # [B * F, D]
  # Entries past a row's length go to the spare slot D, dropped afterwards.
  rows = jax.vmap(lambda c, v: jnp.zeros(dim + 1, values.dtype).at[c].set(v))(flat_col, flat_val)
  return rows[:, :dim].reshape(gids.shape + (dim,))


# ----------------------------------------------------------------------------- encoders


def smallest_uint(limit: int) -> np.dtype:
  """The narrowest unsigned dtype holding ``0 .. limit``."""
  for dtype in (np.uint8, np.uint16, np.uint32):
    if limit <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  raise ValueError(f'{limit} does not fit 32 bits')


def encode_dense(table: np.ndarray) -> dict[str, np.ndarray]:
  """The ``dense`` layout of a ``[N, D]`` table: the table itself."""
  return {'table': np.ascontiguousarray(table)}


def encode_bitmask(table: np.ndarray) -> dict[str, np.ndarray]:
  """The ``bitmask`` layout of a ``[N, D]`` table (``D <= 32``); see :func:`bitmask_rows`."""
  rows, dim = table.shape
  if dim > 32:
    raise ValueError(f'the bitmask layout holds at most 32 dimensions, the table has {dim}; '
                     'use the csr layout')
  nonzero = table != 0  # [N, D]
  weights = (np.uint64(1) << np.arange(dim, dtype=np.uint64))
  bits = (nonzero.astype(np.uint64) * weights).sum(axis=1)
  counts = nonzero.sum(axis=1)
  offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
  return {'bits': bits.astype(smallest_uint((1 << dim) - 1)), 'offsets': offsets,
          'values': table[nonzero].astype(table.dtype)}


def encode_csr(table: np.ndarray) -> dict[str, np.ndarray]:
  """The ``csr`` layout of a ``[N, D]`` table; see :func:`csr_rows`."""
  nonzero = table != 0
  indptr = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int32)
  cols = np.nonzero(nonzero)[1].astype(smallest_uint(table.shape[1] - 1))
  return {'indptr': indptr, 'cols': cols, 'values': table[nonzero].astype(table.dtype)}


ENCODERS = {'dense': encode_dense, 'bitmask': encode_bitmask, 'csr': encode_csr}


def nbytes(arrays: dict[str, np.ndarray]) -> int:
  """Bytes of a layout's arrays."""
  return int(sum(np.asarray(a).nbytes for a in arrays.values()))


# ----------------------------------------------------------------------------- layers


class CompactEmbedding(nn.Module):
  """A trained table in a compact layout, called like the training embeddings.

  Attributes:
    field_dims: vocabulary size of each field.
    dim: ``D``.
    layout: a key of :data:`LOOKUPS`: ``'dense'``, ``'bitmask'`` or ``'csr'`` tables (see the
      module docstring), ``'fieldwidth'``, ``'mde'`` or ``'codes'`` (MGQE).
    shapes: ``((name, shape, dtype), ...)`` of the layout's arrays, held in ``params``.
  """

  field_dims: Sequence[int]
  dim: int
  layout: str
  shapes: tuple

  @property
  def num_rows(self) -> int:
    return int(sum(self.field_dims))

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    arrays = {name: self.param(name, lambda key, s=shape, d=dtype: jnp.zeros(s, d))
              for name, shape, dtype in self.shapes}
    gids = ids + jnp.asarray(field_offsets(self.field_dims))[None, :]  # [B, F]
    if self.layout not in LOOKUPS:
      raise ArtifactError(f'unknown compact layout {self.layout!r}; expected one of '
                          f'{sorted(LOOKUPS)}')
    return LOOKUPS[self.layout](arrays, ids, gids, self.dim)  # [B, F, D]


def fieldwidth_rows(arrays: dict, ids: jax.Array, dim: int) -> jax.Array:
  """Per-field tables ``field_<f> [vocab_f, w_f]`` and projections ``proj_<f> [w_f, D]``.

  ``ids [B, F]`` are per-field indices; a field without a table (width 0) gives zeros.
  """
  fields = []
  for f in range(ids.shape[1]):
    if f'field_{f}' in arrays:
      rows = jnp.take(arrays[f'field_{f}'], ids[:, f], axis=0)  # [B, w_f]
      fields.append(rows @ arrays[f'proj_{f}'])  # [B, D]
    else:
      fields.append(jnp.zeros((ids.shape[0], dim), jnp.float32))
  return jnp.stack(fields, axis=1)  # [B, F, D]


def block_rows(arrays: dict, gids: jax.Array, dim: int) -> jax.Array:
  """MDE blocks ``block_<b> [n_b, w_b]``, projections ``proj_<b>`` (where ``w_b < D``) and the
  feature -> (block, row) maps ``row_block``, ``row_local`` ``[N]``."""
  block = jnp.take(arrays['row_block'], gids).astype(jnp.int32)  # [B, F]
  local = jnp.take(arrays['row_local'], gids).astype(jnp.int32)  # [B, F]
  out = jnp.zeros(gids.shape + (dim,), jnp.float32)
  b = 0
  while f'block_{b}' in arrays:
    mine = block == b
    rows = jnp.take(arrays[f'block_{b}'], jnp.where(mine, local, 0), axis=0)  # [B, F, w_b]
    if f'proj_{b}' in arrays:
      rows = rows @ arrays[f'proj_{b}']
    out = jnp.where(mine[..., None], rows, out)
    b += 1
  return out  # [B, F, D]


def code_rows(codes: jax.Array, centroids: jax.Array, gids: jax.Array) -> jax.Array:
  """Product-quantised rows: ``codes [N, S]``, ``centroids [S, K, D_s]`` -> ``[B, F, S * D_s]``."""
  picked = jnp.take(codes, gids, axis=0).astype(jnp.int32)  # [B, F, S]
  chosen = centroids[jnp.arange(centroids.shape[0]), picked]  # [B, F, S, D_s]
  return chosen.reshape(gids.shape + (-1,))


# Layout -> lookup ``(arrays, ids, gids, dim) -> [B, F, D]`` (per-field and global ids).
LOOKUPS = {
    'dense': lambda a, ids, gids, dim: dense_rows(a['table'], gids),
    'bitmask': lambda a, ids, gids, dim: bitmask_rows(a['bits'], a['offsets'], a['values'], gids,
                                                      dim),
    'csr': lambda a, ids, gids, dim: csr_rows(a['indptr'], a['cols'], a['values'], gids, dim),
    'fieldwidth': lambda a, ids, gids, dim: fieldwidth_rows(a, ids, dim),
    'mde': lambda a, ids, gids, dim: block_rows(a, gids, dim),
    'codes': lambda a, ids, gids, dim: code_rows(a['codes'], a['centroids'], gids),
}


def array_shapes(arrays: dict[str, np.ndarray]) -> tuple:
  """The ``shapes`` attribute of :class:`CompactEmbedding` for a layout's arrays."""
  return tuple((name, tuple(a.shape), np.dtype(a.dtype).name) for name, a in sorted(arrays.items()))


# ----------------------------------------------------------------------------- model


def config_from_flat(flat: dict) -> ml_collections.ConfigDict:
  """The experiment config from its flattened form (``config.json`` of a work directory)."""
  config = default_config()
  for key, value in flat.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return config


def unflatten(flat: dict[str, Any]) -> dict:
  """``{'a/b': x}`` -> ``{'a': {'b': x}}``."""
  out: dict = {}
  for key, value in flat.items():
    *parents, leaf = key.split('/')
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


def flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  """``{'a': {'b': x}}`` -> ``{'a/b': x}``."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}/'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def compact_model(config, field_dims: Sequence[int], layout: str, dim: int,
                  embedding_arrays: dict[str, np.ndarray]) -> nn.Module:
  """The run's model around a :class:`CompactEmbedding` holding ``embedding_arrays``."""
  embedding = CompactEmbedding(tuple(int(d) for d in field_dims), int(dim), layout,
                               array_shapes(embedding_arrays))
  return build_model(config.model, field_dims, embedding)


def score_function(model: nn.Module):
  """``score(weights, ids) -> probs [B]``; ``weights`` flat (``'params/linear/weight'``)."""

  def score(weights: dict[str, jax.Array], ids: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(model.apply(unflatten(weights), ids, train=False))

  return score


# ----------------------------------------------------------------------------- artifact


def sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while block := f.read(1 << 20):
      digest.update(block)
  return digest.hexdigest()


def verify(directory: str) -> dict:
  """The manifest of an artifact, once every listed file has its size and SHA-256.

  Raises:
    ArtifactError: naming the file that is missing, damaged or of another format version.
  """
  path = os.path.join(directory, MANIFEST)
  if not os.path.isfile(path):
    raise ArtifactError(f'{path} not found: {directory} is not an exported artifact '
                        '(python -m pep_jax.export writes one)')
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise ArtifactError(f'{path} is not valid JSON ({e}); export the run again') from e
  version = manifest.get('format_version') if isinstance(manifest, dict) else None
  if version != FORMAT_VERSION:
    raise ArtifactError(f'{path}: format version {version!r}, this pep_jax reads version '
                        f'{FORMAT_VERSION}; export the run again with this version')
  files = manifest.get('files')
  if not isinstance(files, dict) or WEIGHTS not in files or CONFIG not in files:
    raise ArtifactError(f'{path} lists no {WEIGHTS} or {CONFIG}; export the run again')
  for name, facts in sorted(files.items()):
    file = os.path.join(directory, name)
    if not (isinstance(facts, dict) and isinstance(facts.get('bytes'), int)
            and isinstance(facts.get('sha256'), str)):
      raise ArtifactError(f'{path}: the entry of {name} lacks its bytes or sha256; export the '
                          'run again')
    if not os.path.isfile(file):
      raise ArtifactError(f'{file} is missing (listed in {path})')
    if os.path.getsize(file) != facts['bytes']:
      raise ArtifactError(f'{file} has {os.path.getsize(file)} bytes, the manifest says '
                          f'{facts["bytes"]}: truncated or replaced; export the run again')
    if sha256_file(file) != facts['sha256']:
      raise ArtifactError(f'{file} fails its SHA-256 check: damaged; export the run again')
  return manifest


@dataclasses.dataclass
class Scorer:
  """A loaded artifact: ``scorer(ids [N, F]) -> probabilities float64 [N]``.

  Attributes:
    manifest: the artifact's ``manifest.json``.
    config: the run's experiment config.
    field_names, field_dims: the model's fields.
    weights: flat arrays on the device (the compact embedding and every dense parameter).
    score: jitted ``score(weights, ids [B, F] int32) -> probs [B]``.
    vocab_dir: folder of the vocabulary (real data), or None (ids are already encoded).
  """

  manifest: dict
  config: Any
  field_names: tuple[str, ...]
  field_dims: np.ndarray
  weights: dict[str, jax.Array]
  score: Any
  vocab_dir: str | None

  @property
  def num_fields(self) -> int:
    return len(self.field_dims)

  def __call__(self, ids: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Probabilities of rows of per-field ids, in fixed-size (padded) batches.

    Raises:
      ValueError: for ids of another shape or outside ``0 .. field_dims - 1``.
    """
    ids = np.asarray(ids)
    shape_ok = ids.ndim == 2 and ids.shape[1] == self.num_fields
    if not (shape_ok and np.issubdtype(ids.dtype, np.integer)):
      raise ValueError(f'expected integer ids of shape [rows, {self.num_fields}], got '
                       f'{ids.dtype} {ids.shape}')
    bad = np.flatnonzero(((ids < 0) | (ids >= self.field_dims[None, :])).any(axis=1))
    if len(bad):
      raise ValueError(f'rows {bad[:10].tolist()} have ids outside 0..field_dims-1 '
                       f'(field_dims {self.field_dims.tolist()})')
    out = []
    for lo in range(0, len(ids), batch_size):
      chunk = ids[lo:lo + batch_size]
      size = batch_size if len(ids) > batch_size else max(len(chunk), 1)
      padded = np.zeros((size, self.num_fields), np.int32)
      padded[:len(chunk)] = chunk
      out.append(np.asarray(self.score(self.weights, padded))[:len(chunk)])
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def load(directory: str) -> Scorer:
  """Checks an artifact, then loads it as a :class:`Scorer` (compiled on first call).

  Raises:
    ArtifactError: naming the file, for a missing, truncated, corrupted or version-mismatched
      artifact; nothing is loaded then.
  """
  manifest = verify(directory)
  with open(os.path.join(directory, CONFIG)) as f:
    config = config_from_flat(json.load(f))
  weights_path = os.path.join(directory, WEIGHTS)
  try:
    with np.load(weights_path, allow_pickle=False) as npz:
      flat = {name: npz[name] for name in npz.files}
  except (OSError, ValueError) as e:
    raise ArtifactError(f'{weights_path} could not be read ({e}); export the run again') from e
  model_facts = manifest['model']
  prefix = 'params/embedding/'
  embedding = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
  field_dims = np.asarray(model_facts['field_dims'], np.int64)
  model = compact_model(config, field_dims, model_facts['layout'], model_facts['dim'], embedding)
  vocab = os.path.join(directory, VOCAB)
  return Scorer(manifest=manifest, config=config,
                field_names=tuple(model_facts['field_names']), field_dims=field_dims,
                weights={k: jnp.asarray(v) for k, v in flat.items()},
                score=jax.jit(score_function(model)),
                vocab_dir=vocab if os.path.isdir(vocab) else None)
