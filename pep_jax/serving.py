"""Compact inference: score ids with a model whose embedding stays in its stored layout.

An artifact (written by :mod:`pep_jax.export`) stores the embedding in the compact layout its
method declares (:class:`pep_jax.methods.base.Method`: ``compact`` writes it, ``layouts``
looks it up; the layouts themselves are in :mod:`pep_jax.layers.compact`): a uniform model's
``dense`` table, a pruned table's ``bitmask`` or ``csr`` non-zeros, per-field tables, MDE's
blocks, MGQE's packed codes. :class:`CompactEmbedding` holds a layout's arrays and calls its
lookup, with the call signature of the training embeddings (per-field ids ``[B, F] -> [B, F,
D]``), so :func:`pep_jax.models.ctr.build_model` turns it into the scorer. A lookup gathers only
the batch's rows; the ``[N, D]`` table of a pruned model exists nowhere, neither in the artifact
nor in memory.

``load(DIR)`` checks the artifact (format version, size and SHA-256 of every file) before it
reads any array, and returns a :class:`Scorer`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pep_jax import config as config_lib
from pep_jax import methods as methods_lib
from pep_jax.errors import InputError, UserError
from pep_jax.layers.embedding import field_offsets
from pep_jax.models.ctr import build_model

FORMAT_VERSION = 2  # 2: the manifest names the method whose layout the embedding is stored in
MANIFEST = 'manifest.json'
WEIGHTS = 'weights.npz'
CONFIG = 'config.json'
EXPORTED = 'scorer.jaxexport'
VOCAB = 'vocab'  # folder: the cache's meta.json, vocab_keys.npy, vocab_counts.npy


class ArtifactError(UserError, ValueError):
  """An artifact is missing, damaged, of another format version, or does not fit its model."""


class CompactEmbedding(nn.Module):
  """A trained embedding in its stored layout, called like the training embeddings.

  Attributes:
    field_dims: vocabulary size of each field.
    dim: ``D``.
    lookup: the layout's lookup, ``(arrays, ids [B, F], global rows [B, F], D) -> [B, F, D]``.
    shapes: ``((name, shape, dtype), ...)`` of the layout's arrays, held in ``params``.
  """

  field_dims: Sequence[int]
  dim: int
  lookup: Callable
  shapes: tuple

  @property
  def num_rows(self) -> int:
    return int(sum(self.field_dims))

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    arrays = {name: self.param(name, lambda key, s=shape, d=dtype: jnp.zeros(s, d))
              for name, shape, dtype in self.shapes}
    gids = ids + jnp.asarray(field_offsets(self.field_dims))[None, :]  # [B, F]
    return self.lookup(arrays, ids, gids, self.dim)  # [B, F, D]


def nbytes(arrays: dict[str, np.ndarray]) -> int:
  """Bytes of a dict of arrays."""
  return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def array_shapes(arrays: dict[str, np.ndarray]) -> tuple:
  """The ``shapes`` attribute of :class:`CompactEmbedding` for a layout's arrays."""
  return tuple((name, tuple(a.shape), np.dtype(a.dtype).name) for name, a in sorted(arrays.items()))


def lookup_of(method: str, layout: str, where: str = 'the artifact') -> Callable:
  """The lookup of ``layout`` as method ``method`` declares it.

  Raises:
    ArtifactError: naming ``where``, for a method or layout this pep_jax does not know.
  """
  if method not in methods_lib.METHODS:
    raise ArtifactError(f'{where}: method {method!r} is not one of {sorted(methods_lib.METHODS)}')
  layouts = methods_lib.METHODS[method].layouts
  if layout not in layouts:
    raise ArtifactError(f'{where}: method {method!r} has no layout {layout!r}; it stores '
                        f'{sorted(layouts)}')
  return layouts[layout]


# ----------------------------------------------------------------------------- model


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


def compact_model(config, field_dims: Sequence[int], lookup: Callable, dim: int,
                  embedding_arrays: dict[str, np.ndarray]) -> nn.Module:
  """The run's model around a :class:`CompactEmbedding` holding ``embedding_arrays``."""
  embedding = CompactEmbedding(tuple(int(d) for d in field_dims), int(dim), lookup,
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


MODEL_KEYS = {'layout': str, 'dim': int, 'field_names': list, 'field_dims': list}


def manifest_model(manifest: dict, path: str) -> dict:
  """The manifest's ``model`` facts, checked: ``method``, ``model.layout``, ``dim``, fields.

  Raises:
    ArtifactError: naming the file and the missing or mistyped key.
  """
  if not isinstance(manifest.get('method'), str):
    raise ArtifactError(f'{path} lacks the key method; export the run again')
  facts = manifest.get('model')
  if not isinstance(facts, dict):
    raise ArtifactError(f'{path} lacks the key model; export the run again')
  for key, kind in MODEL_KEYS.items():
    if not isinstance(facts.get(key), kind):
      raise ArtifactError(f'{path}: model.{key} is missing or not a {kind.__name__}; export the '
                          'run again')
  return facts


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
      InputError: for ids of another shape or outside ``0 .. field_dims - 1``.
    """
    ids = np.asarray(ids)
    shape_ok = ids.ndim == 2 and ids.shape[1] == self.num_fields
    if not (shape_ok and np.issubdtype(ids.dtype, np.integer)):
      raise InputError(f'expected integer ids of shape [rows, {self.num_fields}], got '
                       f'{ids.dtype} {ids.shape}')
    bad = np.flatnonzero(((ids < 0) | (ids >= self.field_dims[None, :])).any(axis=1))
    if len(bad):
      raise InputError(f'rows {bad[:10].tolist()} have ids outside 0..field_dims-1 '
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
  config_file = os.path.join(directory, CONFIG)
  try:
    with open(config_file) as f:
      config = config_lib.from_flat(json.load(f))
  except (ValueError, AttributeError, KeyError, TypeError) as e:
    raise ArtifactError(f'{config_file}: not a config this pep_jax can rebuild ({e!r}); export '
                        'the run again') from e
  weights_path = os.path.join(directory, WEIGHTS)
  try:
    with np.load(weights_path, allow_pickle=False) as npz:
      flat = {name: npz[name] for name in npz.files}
  except (OSError, ValueError) as e:
    raise ArtifactError(f'{weights_path} could not be read ({e}); export the run again') from e
  model_facts = manifest_model(manifest, os.path.join(directory, MANIFEST))
  prefix = 'params/embedding/'
  embedding = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
  field_dims = np.asarray(model_facts['field_dims'], np.int64)
  lookup = lookup_of(manifest['method'], model_facts['layout'],
                     os.path.join(directory, MANIFEST))
  model = compact_model(config, field_dims, lookup, model_facts['dim'], embedding)
  vocab = os.path.join(directory, VOCAB)
  return Scorer(manifest=manifest, config=config,
                field_names=tuple(model_facts['field_names']), field_dims=field_dims,
                weights={k: jnp.asarray(v) for k, v in flat.items()},
                score=jax.jit(score_function(model)),
                vocab_dir=vocab if os.path.isdir(vocab) else None)
