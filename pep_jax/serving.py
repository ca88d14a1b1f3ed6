"""Compact inference: score ids with a model whose embedding stays in its stored layout.

An artifact (written by :mod:`pep_jax.export`) stores the embedding in the compact layout its
method declares (:class:`pep_jax.methods.base.Method`: ``compact`` writes it, ``layouts``
serves it; the layouts themselves are in :mod:`pep_jax.layers.compact`): a uniform model's
``dense`` table, a pruned table's ``bitmask`` or ``csr`` non-zeros, per-field tables, MDE's
blocks, MGQE's packed codes; its tables float32, or quantised to 8 or 4 bits
(:mod:`pep_jax.layers.quant`). :class:`CompactEmbedding` holds a layout's arrays and calls its
lookup, with the call signature of the training embeddings (per-field ids ``[B, F] -> [B, F,
D]``), so :func:`pep_jax.models.ctr.build_model` turns it into the scorer. A lookup gathers only
the batch's rows (and dequantises only those); the ``[N, D]`` table of a pruned model exists
nowhere, neither in the artifact nor in memory.

``load(DIR)`` checks the artifact (format version, size and SHA-256 of every file) before it
reads any array, computes once what the layout derives from the stored arrays (a pruned table's
row offsets), and returns a :class:`Scorer`.
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
import numpy as np

from pep_jax import config as config_lib
from pep_jax import methods as methods_lib
from pep_jax.errors import InputError, UserError
from pep_jax.layers import compact as compact_lib
from pep_jax.layers import quant
from pep_jax.layers.embedding import field_offsets
from pep_jax.models.ctr import build_model

# 3: derived arrays (a bitmask's offsets, a csr's row pointers) are not stored; quantised tables.
# 2: the manifest names the method whose layout the embedding is stored in.
FORMAT_VERSION = 3
MANIFEST = 'manifest.json'
WEIGHTS = 'weights.npz'
CONFIG = 'config.json'
EXPORTED = 'scorer.jaxexport'
DERIVE = 'derive.jaxexport'
VOCAB = 'vocab'  # folder: the cache's meta.json, vocab_keys.npy, vocab_counts.npy
EMBEDDING = 'params/embedding/'  # the embedding's arrays in the flat weights


class ArtifactError(UserError, ValueError):
  """An artifact is missing, damaged, of another format version, or does not fit its model."""


class CompactEmbedding(nn.Module):
  """A trained embedding in its stored layout, called like the training embeddings.

  Attributes:
    field_dims: vocabulary size of each field.
    dim: ``D``.
    layout: the layout's :class:`~pep_jax.layers.compact.Layout` (its lookup and what it
      derives).
    shapes: ``((name, shape, dtype) | (name, quant.Spec), ...)`` of the arrays held in
      ``params``: the stored ones and the ones the layout derives from them.
  """

  field_dims: Sequence[int]
  dim: int
  layout: compact_lib.Layout
  shapes: tuple

  @property
  def num_rows(self) -> int:
    return int(sum(self.field_dims))

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    arrays = {}
    for name, *facts in self.shapes:
      if isinstance(facts[0], quant.Spec):
        spec = facts[0]
        leaves = self.param(name, lambda key, s=spec: quant.zeros(s))
        arrays[name] = quant.Quantized.from_leaves(leaves, spec)
      else:
        shape, dtype = facts
        arrays[name] = self.param(name, lambda key, s=shape, d=dtype: jnp.zeros(s, d))
    gids = ids + jnp.asarray(field_offsets(self.field_dims))[None, :]  # [B, F]
    return self.layout.lookup(arrays, ids, gids, self.dim)  # [B, F, D]


def nbytes(arrays: dict) -> int:
  """Bytes of a dict of arrays (float or quantised)."""
  return compact_lib.nbytes(arrays)


def array_shapes(arrays: dict) -> tuple:
  """The ``shapes`` attribute of :class:`CompactEmbedding` for a layout's arrays."""
  return tuple((name, a.spec) if isinstance(a, quant.Quantized)
               else (name, tuple(a.shape), np.dtype(a.dtype).name)
               for name, a in sorted(arrays.items()))


def layout_of(method: str, layout: str, where: str = 'the artifact') -> compact_lib.Layout:
  """The :class:`~pep_jax.layers.compact.Layout` of ``layout`` as method ``method`` declares it.

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


def derived_arrays(layout: compact_lib.Layout, arrays: dict) -> dict[str, jax.Array]:
  """What ``layout`` derives from the stored ``arrays``, computed once (on the device)."""
  if layout.derive is None:
    return {}
  return jax.jit(layout.derive)(jax.tree.map(jnp.asarray, arrays))


def derive_function(layout: compact_lib.Layout, specs: dict[str, dict]):
  """``derive(stored flat weights) -> flat derived weights`` (``{}`` for a layout that derives
  nothing): what ``derive.jaxexport`` holds, for a server without pep_jax to call once."""

  def derive(flat: dict[str, jax.Array]) -> dict[str, jax.Array]:
    if layout.derive is None:
      return {}
    return flat_embedding(layout.derive(_embedding(flat, specs)))

  return derive


def flat_embedding(arrays: dict) -> dict[str, Any]:
  """An embedding's arrays as flat weights: ``params/embedding/<name>``, and for a quantised
  one ``params/embedding/<name>/codes``, ``.../scale`` (and ``.../offset``)."""
  flat = {}
  for name, value in arrays.items():
    if isinstance(value, quant.Quantized):
      flat.update({f'{EMBEDDING}{name}/{leaf}': v for leaf, v in value.leaves().items()})
    else:
      flat[f'{EMBEDDING}{name}'] = value
  return flat


def quantized_specs(arrays: dict) -> dict[str, dict]:
  """``{name: spec}`` (JSON) of the quantised arrays, as the manifest records them."""
  return {name: a.spec.to_json() for name, a in sorted(arrays.items())
          if isinstance(a, quant.Quantized)}


def _embedding(flat: dict, specs: dict[str, dict]) -> dict:
  """The embedding's arrays of flat weights, unchecked (numpy or jax leaves)."""
  nested = unflatten({k[len(EMBEDDING):]: v for k, v in flat.items() if k.startswith(EMBEDDING)})
  return {name: quant.Quantized.from_leaves(v, quant.Spec.from_json(specs[name]))
          if isinstance(v, dict) else v for name, v in nested.items()}


def embedding_from_flat(flat: dict, specs: dict[str, dict], where: str) -> dict:
  """The embedding's arrays of flat weights, quantised ones rebuilt from their ``specs``.

  Raises:
    ArtifactError: naming ``where``, when the arrays do not match the specs.
  """
  nested = unflatten({k[len(EMBEDDING):]: v for k, v in flat.items() if k.startswith(EMBEDDING)})
  arrays = {}
  for name, value in nested.items():
    if not isinstance(value, dict):
      arrays[name] = value
      continue
    if name not in specs:
      raise ArtifactError(f'{where}: {EMBEDDING}{name} is quantised but the manifest records no '
                          'spec for it; export the run again')
    try:
      arrays[name] = quant.Quantized.from_leaves(value, quant.Spec.from_json(specs[name]))
      quant.check(arrays[name])
    except (KeyError, ValueError) as e:
      raise ArtifactError(f'{where}: {EMBEDDING}{name} does not match its quantisation spec '
                          f'(the manifest\'s model.quantized): {e}; export the run again') from e
  missing = sorted(set(specs) - set(arrays))
  if missing:
    raise ArtifactError(f'{where}: the quantised arrays {missing} are missing; export the run '
                        'again')
  return arrays


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


def compact_model(config, field_dims: Sequence[int], layout: compact_lib.Layout, dim: int,
                  embedding_arrays: dict) -> nn.Module:
  """The run's model around a :class:`CompactEmbedding` holding ``embedding_arrays``: the
  stored arrays and what the layout derives from them (:func:`derived_arrays`)."""
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


MODEL_KEYS = {'layout': str, 'dim': int, 'field_names': list, 'field_dims': list,
              'quantized': dict}


def manifest_model(manifest: dict, path: str) -> dict:
  """The manifest's ``model`` facts, checked: ``method``, ``model.layout``, ``dim``, fields,
  ``quantized`` (the spec of each quantised array, ``{}`` for a float form).

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
    weights: flat arrays on the device: the compact embedding, what its layout derives from
      it (computed at load) and every dense parameter.
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
  manifest_path = os.path.join(directory, MANIFEST)
  model_facts = manifest_model(manifest, manifest_path)
  embedding = embedding_from_flat(flat, model_facts['quantized'], weights_path)
  field_dims = np.asarray(model_facts['field_dims'], np.int64)
  layout = layout_of(manifest['method'], model_facts['layout'], manifest_path)
  derived = derived_arrays(layout, embedding)
  model = compact_model(config, field_dims, layout, model_facts['dim'], {**embedding, **derived})
  weights = {k: jnp.asarray(v) for k, v in flat.items()}
  weights.update(flat_embedding(derived))
  vocab = os.path.join(directory, VOCAB)
  return Scorer(manifest=manifest, config=config,
                field_names=tuple(model_facts['field_names']), field_dims=field_dims,
                weights=weights, score=jax.jit(score_function(model)),
                vocab_dir=vocab if os.path.isdir(vocab) else None)
