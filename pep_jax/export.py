"""Export a finished run as a compact artifact for serving.

    python -m pep_jax.export --workdir=runs/demo --out=runs/demo_artifact
    python -m pep_jax.export --workdir=runs/demo --run=ue_d16 --out=runs/demo_ue16

Without ``--run`` the best ticket is exported: the ``pep_b*`` run with the highest validation
AUC. The artifact (see docs/serving.md)::

    manifest.json      format version, size and SHA-256 of every file, compact_bytes,
                       dense_table_bytes, and the check below
    config.json        the run's config (as the work directory's config.json)
    weights.npz        the embedding in its compact layout (params/embedding/*) and every
                       dense parameter: first-order weights, MLP, attention, BatchNorm statistics
    scorer.jaxexport   the scorer serialised by jax.export (StableHLO, symbolic batch size):
                       score(weights, ids int32 [b, F]) -> probabilities float32 [b]
    vocab/             real data only: the cache's meta.json and vocabulary (the row encoder)

Before anything is written the export scores the test split three ways (the in-memory model
of the run, the compact model, the deserialised StableHLO scorer) and refuses to write an
artifact whose probabilities differ by more than ``1e-6`` relative; the numbers go into the
manifest. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from pep_jax import __version__, cli, serving
from pep_jax import config as config_lib
from pep_jax.data import load_dataset
from pep_jax.data.base import CTRDataset, Split
from pep_jax.metrics import auc
from pep_jax import methods as methods_lib
from pep_jax.methods.base import Context, read_json
from pep_jax.methods.mgqe import quantize
from pep_jax.train import loop
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.setup import Stage

RTOL = 1e-6  # the largest relative difference an export accepts between compact and reference
DEFAULT_LAYOUT = 'bitmask'  # of a pruned table; 'csr' above 32 dimensions (docs/serving.md)
EXPORT_BATCH = 4096  # rows per call while checking

# The layer a run trained -> the kind of its compact form (COMPACT_FORMS).
LAYER_KINDS = {'PlainEmbedding': 'plain', 'MaskedEmbedding': 'masked',
               'FieldWidthEmbedding': 'fieldwidth', 'MDEEmbedding': 'mde',
               'MGQEEmbedding': 'mgqe'}
ROW_PARAMS = ('params/linear/weight',)  # laid out like the table: padding rows are dropped


@dataclasses.dataclass
class Run:
  """A finished run, rebuilt in memory.

  Attributes:
    name: the run folder (``pep_b<budget>``, ``ue_d<dim>``, ``sseds_b<budget>``, ...).
    config: the work directory's config.
    data: the dataset (loaded as training loaded it).
    kind: the kind of its embedding's compact form (a key of :data:`COMPACT_FORMS`).
    dim: the table's width.
    stage: the stage the run trained (model, eval step, shardings).
    state: the best checkpoint's state.
    constants: non-trained variables (a ticket mask, an index map).
    result: the run's ``result.json``.
  """

  name: str
  config: Any
  data: CTRDataset
  kind: str
  dim: int
  stage: Stage
  state: Any
  constants: dict
  result: dict

  @property
  def num_rows(self) -> int:
    return int(self.data.num_features)


def _read_json(path: str, what: str) -> dict:
  """The JSON document at ``path``; a missing one is a ``FileNotFoundError`` saying ``what``."""
  document = read_json(path)
  if document is None:
    raise FileNotFoundError(f'{path} not found: {what}')
  return document


def best_ticket_run(workdir: str) -> str:
  """The finished ``pep_b*`` run with the highest validation AUC."""
  root = os.path.join(workdir, 'retrain')
  scores = {}
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    path = os.path.join(root, name, 'result.json')
    if re.fullmatch(r'pep_b\d+', name) and os.path.isfile(path):
      scores[name] = _read_json(path, 'the run is not finished')['valid_auc']
  if not scores:
    raise FileNotFoundError(f'no finished pep_b<budget> run in {root}: finish the retrain stage, '
                            'or name a run with --run')
  return max(scores, key=scores.get)


def _find_candidate(ctx: Context, name: str):
  """The method and candidate that trained the run folder ``name``."""
  known = []
  for method in methods_lib.METHODS.values():
    try:
      cands = method.candidates(ctx, search=False)
    except FileNotFoundError:  # that method's search never ran in this work directory
      continue
    for cand in cands:
      if cand.run == name:
        return method, cand
      if ctx.finished(cand.run) is not None:
        known.append(cand.run)
  raise ValueError(f'--run={name}: not a run of this work directory; its finished runs are '
                   f'{sorted(known)}')


def load_run(workdir: str, run: str | None = None) -> Run:
  """Rebuilds a finished run of ``workdir``: config, data, model, best state, embedding kind.

  The one place that knows how a run is laid out in a work directory.

  Args:
    workdir: the work directory (``python -m pep_jax.main --workdir``).
    run: a folder of ``workdir/retrain``; None picks :func:`best_ticket_run`.

  Raises:
    FileNotFoundError, ValueError: naming the missing or unusable file or run.
  """
  config_path = os.path.join(workdir, 'config.json')
  flat = _read_json(config_path, 'not a pep_jax work directory')
  try:
    config = serving.config_from_flat(flat)
  except (AttributeError, KeyError, TypeError) as e:
    raise ValueError(f'{config_path}: not a config this pep_jax can rebuild ({e!r})') from e
  name = run or best_ticket_run(workdir)
  data = load_dataset(config.data)
  ctx = Context(config, data, workdir, None)
  method, cand = _find_candidate(ctx, name)
  run_dir = os.path.join(workdir, 'retrain', name)
  result = _read_json(os.path.join(run_dir, 'result.json'), f'run {name} is not finished')
  stage = method.build(ctx, cand)
  _, constants = method.initial(ctx, cand, stage)
  best = Checkpointer(os.path.join(run_dir, 'best'), max_to_keep=None)
  state, _ = best.restore(int(result['best_epoch']), stage.abstract_state())
  best.close()
  layer = type(stage.embedding).__name__
  if layer not in LAYER_KINDS:
    raise ValueError(f'run {name}: its embedding layer {layer} has no compact form')
  kind, dim = LAYER_KINDS[layer], int(stage.embedding.dim)
  return Run(name, config, data, kind, dim, stage, state, constants, result)


# ----------------------------------------------------------------------------- compact forms


def plain_compact(embedding_params: dict, embedding_constants: dict, num_rows: int,
                  layout: str | None) -> tuple[str, dict[str, np.ndarray]]:
  """A uniform table: its real rows, dense."""
  del embedding_constants, layout
  return 'dense', serving.encode_dense(np.asarray(embedding_params['table'])[:num_rows])


def masked_compact(embedding_params: dict, embedding_constants: dict, num_rows: int,
                   layout: str | None) -> tuple[str, dict[str, np.ndarray]]:
  """A retrained ticket: the non-zero entries of ``table * mask`` in a sparse layout."""
  table = np.asarray(embedding_params['table'])[:num_rows]
  mask = np.asarray(embedding_constants['mask'])[:num_rows]
  effective = table * mask.astype(table.dtype)  # as MaskedEmbedding computes it
  layout = layout or (DEFAULT_LAYOUT if table.shape[1] <= 32 else 'csr')
  if layout not in ('bitmask', 'csr'):
    raise ValueError(f'--layout={layout}: a pruned table is stored as bitmask or csr')
  return layout, serving.ENCODERS[layout](effective)


def _stored_as_is(layout: str):
  """A layer whose parameters are already its compact form (per-field tables, MDE blocks);
  its index maps (constants) are stored beside them as ``row_<name>``."""

  def compact(embedding_params: dict, embedding_constants: dict, num_rows: int,
              requested: str | None) -> tuple[str, dict[str, np.ndarray]]:
    del num_rows, requested
    arrays = {k: np.asarray(v) for k, v in embedding_params.items()}
    arrays.update({f'row_{k}': np.asarray(v) for k, v in embedding_constants.items()})
    return layout, arrays

  return compact


def mgqe_compact(embedding_params: dict, embedding_constants: dict, num_rows: int,
                 layout: str | None) -> tuple[str, dict[str, np.ndarray]]:
  """The codes of every feature and the centroids; the query table is not kept."""
  del layout
  centroids = np.asarray(embedding_params['centroids'])
  table = np.asarray(embedding_params['table'])[:num_rows]
  limits = np.asarray(embedding_constants['limit'])[:num_rows]
  codes = np.asarray(jax.jit(quantize)(table, centroids, limits))
  return 'codes', {'codes': codes.astype(serving.smallest_uint(centroids.shape[1] - 1)),
                   'centroids': centroids}


# Embedding kind -> its compact form: (embedding params, embedding constants, real rows,
# requested layout or None) -> (layout, arrays of the layout).
COMPACT_FORMS = {'plain': plain_compact, 'masked': masked_compact,
                 'fieldwidth': _stored_as_is('fieldwidth'), 'mde': _stored_as_is('mde'),
                 'mgqe': mgqe_compact}


def compact_weights(run: Run, layout: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
  """Every array the compact model needs, flat (``'params/linear/weight'``), on the host."""
  if run.kind not in COMPACT_FORMS:
    raise ValueError(f'run {run.name}: no compact form for embedding kind {run.kind!r}')
  params = jax.device_get(run.state.params)
  constants = jax.device_get(run.constants)
  embedding_constants = {k: v for collection in constants.values()
                         for k, v in collection.get('embedding', {}).items()}
  layout, arrays = COMPACT_FORMS[run.kind](params['embedding'], embedding_constants,
                                           run.num_rows, layout)
  dense = {'params': {k: v for k, v in params.items() if k != 'embedding'},
           'batch_stats': jax.device_get(run.state.batch_stats)}
  flat = {k: np.asarray(v) for k, v in serving.flatten(dense).items()}
  for key in ROW_PARAMS:
    if key in flat:
      flat[key] = flat[key][:run.num_rows]
  flat.update({f'params/embedding/{k}': v for k, v in arrays.items()})
  return layout, flat


# ----------------------------------------------------------------------------- check


def reference_probs(run: Run, split: Split) -> np.ndarray:
  """The in-memory model's probabilities on ``split`` (as the run's evaluation computes them)."""
  return loop.predict(run.stage, run.state, run.constants, split)


def batched(fn, ids: np.ndarray, batch_size: int = EXPORT_BATCH) -> np.ndarray:
  """``fn(ids [b, F]) -> [b]`` over ``ids`` in chunks, float64 ``[N]``."""
  out = [np.asarray(fn(jnp.asarray(ids[lo:lo + batch_size], jnp.int32)))
         for lo in range(0, len(ids), batch_size)]
  return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def compare(probs: np.ndarray, reference: np.ndarray) -> dict:
  """Largest absolute and relative differences of two probability vectors."""
  diff = np.abs(probs - reference)
  rel = diff / np.maximum(np.abs(reference), np.finfo(np.float32).tiny)
  return {'max_abs_diff': float(diff.max(initial=0.0)), 'max_rel_diff': float(rel.max(initial=0.0))}


def export_function(score, weights: dict[str, np.ndarray], num_fields: int) -> jax.export.Exported:
  """``score(weights, ids)`` as StableHLO with a symbolic batch size ``b``."""
  (batch,) = jax.export.symbolic_shape('b')
  specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights.items()}
  ids = jax.ShapeDtypeStruct((batch, num_fields), jnp.int32)
  return jax.export.export(jax.jit(score))(specs, ids)


def check_scores(run: Run, score, serialized: bytes, weights: dict[str, np.ndarray]) -> dict:
  """The test split scored by the trained model, the compact model and the StableHLO scorer.

  Returns:
    The ``check`` of the manifest: each compact version's largest differences from the
    trained model, both test AUCs, and ``passed`` (every relative difference within RTOL).
  """
  test = run.data.test
  ids = np.asarray(test.ids)
  reference = reference_probs(run, test)
  device_weights = {k: jnp.asarray(v) for k, v in weights.items()}
  compact_fn = jax.jit(score)
  compact = batched(lambda batch: compact_fn(device_weights, batch), ids)
  restored = jax.export.deserialize(serialized)
  standalone = batched(lambda batch: restored.call(device_weights, batch), ids)
  labels = np.asarray(test.labels, np.float64)
  check = {
      'split': 'test', 'rows': len(test), 'rtol': RTOL,
      'compact': compare(compact, reference), 'stablehlo': compare(standalone, reference),
      'test_auc_reference': auc(labels, reference) if len(test) else None,
      'test_auc_compact': auc(labels, compact) if len(test) else None,
  }
  check['passed'] = all(check[k]['max_rel_diff'] <= RTOL for k in ('compact', 'stablehlo'))
  return check


# ----------------------------------------------------------------------------- export


def _write_files(tmp: str, run: Run, flat: dict, exported: bytes) -> None:
  np.savez(os.path.join(tmp, serving.WEIGHTS), **flat)
  with open(os.path.join(tmp, serving.EXPORTED), 'wb') as f:
    f.write(exported)
  with open(os.path.join(tmp, serving.CONFIG), 'w') as f:
    json.dump(config_lib.flatten(run.config.to_dict()), f, indent=1)
  cache_dir = run.data.info.get('cache_dir')
  if cache_dir:
    os.makedirs(os.path.join(tmp, serving.VOCAB))
    for name in ('meta.json', 'vocab_keys.npy', 'vocab_counts.npy'):
      shutil.copyfile(os.path.join(cache_dir, name), os.path.join(tmp, serving.VOCAB, name))


def _listing(folder: str) -> dict:
  files = {}
  for dirpath, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(dirpath, name)
      files[os.path.relpath(path, folder)] = {'bytes': os.path.getsize(path),
                                              'sha256': serving.sha256_file(path)}
  return dict(sorted(files.items()))


def export(workdir: str, out: str, run: str | None = None, layout: str | None = None) -> dict:
  """Exports a finished run of ``workdir`` to the folder ``out``; returns the manifest.

  Raises:
    FileExistsError: ``out`` exists (an artifact is never overwritten).
    ValueError: the compact model does not reproduce the run on the test split.
  """
  out = os.path.abspath(out)
  if os.path.exists(out):
    raise FileExistsError(f'--out={out} exists; choose a new folder or delete it')
  loaded = load_run(workdir, run)
  layout, flat = compact_weights(loaded, layout)
  embedding = {k.split('/')[-1]: v for k, v in flat.items() if k.startswith('params/embedding/')}
  model = serving.compact_model(loaded.config, loaded.data.field_dims, layout, loaded.dim,
                                embedding)
  score = serving.score_function(model)
  exported = export_function(score, flat, loaded.data.num_fields)
  serialized = exported.serialize()

  check = check_scores(loaded, score, serialized, flat)
  if not check['passed']:
    raise ValueError(f'run {loaded.name}: the compact model differs from the trained one on the '
                     f'test split (compact {check["compact"]}, StableHLO {check["stablehlo"]}, '
                     f'tolerance {RTOL} relative); nothing was written')

  embedding_bytes = serving.nbytes(embedding)
  dense_table_bytes = loaded.num_rows * loaded.dim * np.dtype(np.float32).itemsize
  manifest = {
      'format_version': serving.FORMAT_VERSION,
      'pep_jax_version': __version__,
      'jax_version': jax.__version__,
      'workdir': os.path.abspath(workdir),
      'run': loaded.name,
      'kind': loaded.kind,
      'dataset': loaded.config.data.name,
      'model': {'name': loaded.config.model.name, 'layout': layout, 'dim': loaded.dim,
                'field_names': list(loaded.data.field_names),
                'field_dims': [int(d) for d in loaded.data.field_dims]},
      'params': loaded.result.get('params'),
      'compact_bytes': embedding_bytes,
      'dense_table_bytes': int(dense_table_bytes),
      'compact_fraction': embedding_bytes / dense_table_bytes,
      'dense_parameter_bytes': serving.nbytes(flat) - embedding_bytes,
      'result': {k: v for k, v in loaded.result.items() if k != 'history'},
      'check': check,
      'scorer': {'file': serving.EXPORTED, 'inputs': ['weights (the arrays of weights.npz)',
                                                      'ids int32 [b, F]'],
                 'output': 'click probabilities float32 [b]', 'batch': 'symbolic'},
  }
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = f'{out}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    _write_files(tmp, loaded, flat, serialized)
    manifest['files'] = _listing(tmp)
    with open(os.path.join(tmp, serving.MANIFEST), 'w') as f:
      json.dump(manifest, f, indent=1)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return manifest


# ----------------------------------------------------------------------------- command line

def define_flags() -> None:
  """The flags of ``python -m pep_jax.export`` (defined only when run as a command)."""
  flags.DEFINE_string('workdir', None, 'work directory of a finished run')
  flags.DEFINE_string('run', None, 'run folder under WORKDIR/retrain (default: the '
                      'pep_b<budget> run with the best validation AUC)')
  flags.DEFINE_string('out', None, 'the artifact folder to create')
  flags.DEFINE_enum('layout', None, ['bitmask', 'csr'], 'sparse layout of a pruned table '
                    f'(default: {DEFAULT_LAYOUT}, csr above 32 dimensions)')
  flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  cli.exit_if_argv(argv)
  args = flags.FLAGS
  manifest = cli.exit_on_user_error(export, args.workdir, args.out, args.run, args.layout)
  check = manifest['check']
  print(f'exported {manifest["run"]} ({manifest["kind"]}, layout {manifest["model"]["layout"]}) '
        f'to {os.path.abspath(args.out)}')
  print(f'embedding: {manifest["compact_bytes"]:,} bytes compact, '
        f'{manifest["dense_table_bytes"]:,} dense ({manifest["compact_fraction"]:.1%}); '
        f'dense parameters {manifest["dense_parameter_bytes"]:,} bytes')
  print(f'check on {check["rows"]:,} test rows: max relative difference '
        f'{check["compact"]["max_rel_diff"]:.2e} (compact), '
        f'{check["stablehlo"]["max_rel_diff"]:.2e} (StableHLO); test AUC '
        f'{check["test_auc_compact"]:.4f}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
