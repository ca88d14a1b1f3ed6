"""Export a finished run as a compact artifact for serving.

    python -m pep_jax.export --workdir=runs/demo --out=runs/demo_artifact
    python -m pep_jax.export --workdir=runs/demo --run=ue_d16 --out=runs/demo_ue16

Without ``--run`` the best ticket is exported: the finished PEP run (``pep_b<budget>``) with the
highest validation AUC. The embedding is stored in the layout its method declares
(:class:`pep_jax.methods.base.Method`: ``compact``), the same layout whose bytes the summary
reports. The artifact (see docs/serving.md)::

    manifest.json      format version, method, size and SHA-256 of every file, compact_bytes,
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

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from pep_jax import __version__, cli, serving
from pep_jax import config as config_lib
from pep_jax.data.base import Split
from pep_jax.errors import ExistsError, InputError
from pep_jax.methods.base import Compact
from pep_jax.methods.runs import Run, load_run  # noqa: F401  (load_run: part of this API)
from pep_jax.metrics import auc
from pep_jax.train import evaluation

RTOL = 1e-6  # the largest relative difference an export accepts between compact and reference
EXPORT_BATCH = 4096  # rows per call while checking
ROW_PARAMS = ('params/linear/weight',)  # laid out like the table: padding rows are dropped


def compact_weights(run: Run, layout: str | None = None) -> tuple[Compact, dict[str, np.ndarray]]:
  """The stored embedding and every array the compact model needs, flat
  (``'params/linear/weight'``), on the host."""
  stored = run.method.compact(run.ctx, run.candidate, run.stage, run.state, run.constants,
                              layout)
  params = jax.device_get(run.state.params)
  dense = {'params': {k: v for k, v in params.items() if k != 'embedding'},
           'batch_stats': jax.device_get(run.state.batch_stats)}
  flat = {k: np.asarray(v) for k, v in serving.flatten(dense).items()}
  for key in ROW_PARAMS:
    if key in flat:
      flat[key] = flat[key][:run.num_rows]
  flat.update({f'params/embedding/{k}': v for k, v in stored.arrays.items()})
  return stored, flat


# ----------------------------------------------------------------------------- check


def reference_probs(run: Run, split: Split) -> np.ndarray:
  """The in-memory model's probabilities on ``split`` (as the run's evaluation computes them)."""
  return evaluation.predict(run.stage, run.state, run.constants, split)


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
    ExistsError: ``out`` exists (an artifact is never overwritten).
    InputError: the compact model does not reproduce the run on the test split.
  """
  out = os.path.abspath(out)
  if os.path.exists(out):
    raise ExistsError(f'--out={out} exists; choose a new folder or delete it')
  loaded = load_run(workdir, run)
  stored, flat = compact_weights(loaded, layout)
  layout = stored.layout
  lookup = serving.lookup_of(loaded.method.name, layout, f'run {loaded.name}')
  model = serving.compact_model(loaded.config, loaded.data.field_dims, lookup, loaded.dim,
                                stored.arrays)
  score = serving.score_function(model)
  exported = export_function(score, flat, loaded.data.num_fields)
  serialized = exported.serialize()

  check = check_scores(loaded, score, serialized, flat)
  if not check['passed']:
    raise InputError(f'run {loaded.name}: the compact model differs from the trained one on the '
                     f'test split (compact {check["compact"]}, StableHLO {check["stablehlo"]}, '
                     f'tolerance {RTOL} relative); nothing was written')

  embedding_bytes = stored.bytes
  dense_table_bytes = loaded.num_rows * loaded.dim * np.dtype(np.float32).itemsize
  manifest = {
      'format_version': serving.FORMAT_VERSION,
      'pep_jax_version': __version__,
      'jax_version': jax.__version__,
      'workdir': os.path.abspath(workdir),
      'run': loaded.name,
      'method': loaded.method.name,
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
  flags.DEFINE_string('run', None, 'a run of WORKDIR, e.g. ue_d16 (default: the PEP run with '
                      'the best validation AUC)')
  flags.DEFINE_string('out', None, 'the artifact folder to create')
  flags.DEFINE_enum('layout', None, ['bitmask', 'csr'], 'sparse layout of a pruned table '
                    '(default: bitmask, csr above 32 dimensions)')
  flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  cli.exit_if_argv(argv)
  args = flags.FLAGS
  manifest = cli.exit_on_user_error(export, args.workdir, args.out, args.run, args.layout)
  check = manifest['check']
  print(f'exported {manifest["run"]} ({manifest["method"]}, layout {manifest["model"]["layout"]}) '
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
