"""Export a finished run as a compact artifact for serving.

    python -m pep_jax.export --workdir=runs/demo --out=runs/demo_artifact
    python -m pep_jax.export --workdir=runs/demo --run=ue_d16 --out=runs/demo_ue16
    python -m pep_jax.export --workdir=runs/demo --out=runs/demo_int8 --quantize=int8

Without ``--run`` the best ticket is exported: the finished PEP run (``pep_b<budget>``) with the
highest validation AUC. The embedding is stored in the layout its method declares
(:class:`pep_jax.methods.base.Method`: ``compact``), the same layout whose bytes the summary
reports; with ``--quantize=int8|int4`` its tables in 8 or 4 bits per entry, a scale per group of
entries (:mod:`pep_jax.layers.quant`). The artifact (see docs/serving.md)::

    manifest.json      format version, method, size and SHA-256 of every file, compact_bytes,
                       dense_table_bytes, and the check below
    config.json        the run's config (as the work directory's config.json)
    weights.npz        the embedding in its compact layout (params/embedding/*) and every
                       dense parameter: first-order weights, MLP, attention, BatchNorm statistics
    derive.jaxexport   derive(weights) -> the arrays the layout derives from the stored ones (a
                       pruned table's row offsets; {} for most layouts), serialised by jax.export
    scorer.jaxexport   the scorer serialised by jax.export (StableHLO, symbolic batch size):
                       score(weights and derived, ids int32 [b, F]) -> probabilities float32 [b]
    vocab/             real data only: the cache's meta.json and vocabulary (the row encoder)

Before anything is written the export scores the test split three ways (the in-memory model
of the run, the compact model, the deserialised StableHLO scorer). A float form is refused when
its probabilities differ from the trained model's by more than ``1e-6`` relative; a quantised
form when its test AUC moves by more than ``--max_auc_drop`` (0.001), or when the StableHLO
scorer differs from the compact model by more than ``1e-6`` relative. The AUCs, loglosses and
largest differences go into the manifest. The folder is written under a temporary name and
renamed when complete.
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
from pep_jax.layers import quant
from pep_jax.methods.base import Compact, quantized
from pep_jax.methods.runs import Run, load_run  # noqa: F401  (load_run: part of this API)
from pep_jax.metrics import auc, logloss
from pep_jax.train import evaluation

RTOL = 1e-6  # the largest relative difference an export accepts between compact and reference
MAX_AUC_DROP = 1e-3  # the largest test AUC change a quantised form may make
EXPORT_BATCH = 4096  # rows per call while checking
ROW_PARAMS = ('params/linear/weight',)  # laid out like the table: padding rows are dropped


def scheme_of(quantize: str) -> quant.Scheme | None:
  """The scheme of ``--quantize`` (None for ``none``).

  Raises:
    InputError: naming ``--quantize``, for another value.
  """
  if quantize not in quant.SCHEMES:
    raise InputError(f'--quantize={quantize}: expected one of {sorted(quant.SCHEMES)}')
  return quant.SCHEMES[quantize]


def compact_weights(run: Run, layout: str | None = None, quantize: str = 'none'
                    ) -> tuple[Compact, dict[str, np.ndarray]]:
  """The stored embedding (quantised by ``--quantize``) and every array an artifact stores,
  flat (``'params/linear/weight'``, ``'params/embedding/values/codes'``), on the host."""
  stored = quantized(run.method, run.method.compact(run.ctx, run.candidate, run.stage,
                                                    run.state, run.constants, layout),
                     scheme_of(quantize))
  params = jax.device_get(run.state.params)
  dense = {'params': {k: v for k, v in params.items() if k != 'embedding'},
           'batch_stats': jax.device_get(run.state.batch_stats)}
  flat = {k: np.asarray(v) for k, v in serving.flatten(dense).items()}
  for key in ROW_PARAMS:
    if key in flat:
      flat[key] = flat[key][:run.num_rows]
  flat.update(serving.flat_embedding(stored.arrays))
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


def _specs(weights: dict) -> dict:
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights.items()}


def export_function(score, weights: dict, num_fields: int) -> jax.export.Exported:
  """``score(weights, ids)`` as StableHLO with a symbolic batch size ``b``."""
  (batch,) = jax.export.symbolic_shape('b')
  ids = jax.ShapeDtypeStruct((batch, num_fields), jnp.int32)
  return jax.export.export(jax.jit(score))(_specs(weights), ids)


def export_derive(derive, stored: dict) -> jax.export.Exported:
  """``derive(stored weights) -> derived weights`` as StableHLO."""
  return jax.export.export(jax.jit(derive))(_specs(stored))


def check_scores(run: Run, score, weights: dict, serialized: tuple[bytes, bytes], stored: dict,
                 quantize: str = 'none', max_auc_drop: float = MAX_AUC_DROP) -> dict:
  """The test split scored by the trained model, the compact model and the StableHLO scorer.

  Args:
    run: the trained run.
    score: the compact model's ``score(weights, ids)``.
    weights: its flat weights: the stored arrays and what the layout derives from them.
    serialized: ``derive.jaxexport`` and ``scorer.jaxexport``: the derived arrays computed from
      ``stored`` by the first, once, then the second scores.
    stored: the flat arrays the artifact stores.
    quantize: the form (``none``, ``int8``, ``int4``).
    max_auc_drop: the largest change of the test AUC a quantised form may make.

  Returns:
    The ``check`` of the manifest: each compact version's largest differences from the trained
    model and from each other, test AUC and logloss of the trained and the compact model, the
    AUC's change and ``passed``: for the float form every relative difference within RTOL; for
    a quantised one the StableHLO scorer within RTOL of the compact model and the AUC's change
    within ``max_auc_drop``.
  """
  test = run.data.test
  ids = np.asarray(test.ids)
  reference = reference_probs(run, test)
  device_weights = {k: jnp.asarray(v) for k, v in weights.items()}
  compact_fn = jax.jit(score)
  compact = batched(lambda batch: compact_fn(device_weights, batch), ids)
  derive, restored = (jax.export.deserialize(s) for s in serialized)
  device_stored = {k: jnp.asarray(v) for k, v in stored.items()}
  device_stored.update(derive.call(device_stored))
  standalone = batched(lambda batch: restored.call(device_stored, batch), ids)
  labels = np.asarray(test.labels, np.float64)
  rows = len(test)
  check = {
      'split': 'test', 'rows': rows, 'quantize': quantize, 'rtol': RTOL,
      'compact': compare(compact, reference), 'stablehlo': compare(standalone, reference),
      'stablehlo_vs_compact': compare(standalone, compact),
      'test_auc_reference': auc(labels, reference) if rows else None,
      'test_auc_compact': auc(labels, compact) if rows else None,
      'test_logloss_reference': logloss(labels, reference) if rows else None,
      'test_logloss_compact': logloss(labels, compact) if rows else None,
  }
  drop = (check['test_auc_reference'] - check['test_auc_compact']) if rows else None
  check['auc_drop'] = drop
  if quantize == 'none':
    check['passed'] = all(check[k]['max_rel_diff'] <= RTOL for k in ('compact', 'stablehlo'))
  else:
    check['max_auc_drop'] = max_auc_drop
    check['passed'] = bool(check['stablehlo_vs_compact']['max_rel_diff'] <= RTOL
                           and drop is not None and abs(drop) <= max_auc_drop)
  return check


def refusal(name: str, check: dict) -> str:
  """Why an export whose check failed is refused, on one line."""
  if check['quantize'] == 'none':
    return (f'run {name}: the compact model differs from the trained one on the test split '
            f'(compact {check["compact"]}, StableHLO {check["stablehlo"]}, tolerance {RTOL} '
            'relative); nothing was written')
  if check['stablehlo_vs_compact']['max_rel_diff'] > RTOL:
    return (f'run {name}: the StableHLO scorer differs from the compact model on the test split '
            f'({check["stablehlo_vs_compact"]}, tolerance {RTOL} relative); nothing was written')
  return (f'run {name}: --quantize={check["quantize"]} moves the test AUC from '
          f'{check["test_auc_reference"]:.5f} to {check["test_auc_compact"]:.5f} '
          f'({-check["auc_drop"]:+.5f}), more than --max_auc_drop={check["max_auc_drop"]:g}; '
          'nothing was written')


# ----------------------------------------------------------------------------- export


def _write_files(tmp: str, run: Run, flat: dict, serialized: tuple[bytes, bytes]) -> None:
  np.savez(os.path.join(tmp, serving.WEIGHTS), **flat)
  for name, data in zip((serving.DERIVE, serving.EXPORTED), serialized):
    with open(os.path.join(tmp, name), 'wb') as f:
      f.write(data)
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


def export(workdir: str, out: str, run: str | None = None, layout: str | None = None,
           quantize: str = 'none', max_auc_drop: float = MAX_AUC_DROP) -> dict:
  """Exports a finished run of ``workdir`` to the folder ``out``; returns the manifest.

  Args:
    workdir: the work directory.
    out: the artifact folder to create.
    run: a run folder; None for the best PEP ticket.
    layout: a layout of the run's method (``bitmask``, ``csr``); None for its default.
    quantize: ``none``, ``int8`` or ``int4`` (:data:`pep_jax.layers.quant.SCHEMES`).
    max_auc_drop: the largest change of the test AUC a quantised form may make.

  Raises:
    ExistsError: ``out`` exists (an artifact is never overwritten).
    InputError: the compact model does not reproduce the run on the test split (a quantised
      one: moves its AUC by more than ``max_auc_drop``); nothing is written.
  """
  out = os.path.abspath(out)
  if os.path.exists(out):
    raise ExistsError(f'--out={out} exists; choose a new folder or delete it')
  scheme = scheme_of(quantize)
  loaded = load_run(workdir, run)
  stored, flat = compact_weights(loaded, layout, quantize)
  layout = stored.layout
  served = serving.layout_of(loaded.method.name, layout, f'run {loaded.name}')
  derived = serving.derived_arrays(served, stored.arrays)
  model = serving.compact_model(loaded.config, loaded.data.field_dims, served, loaded.dim,
                                {**stored.arrays, **derived})
  score = serving.score_function(model)
  weights = {**flat, **serving.flat_embedding(derived)}  # what the scorer reads
  specs = serving.quantized_specs(stored.arrays)
  serialized = (export_derive(serving.derive_function(served, specs), flat).serialize(),
                export_function(score, weights, loaded.data.num_fields).serialize())

  check = check_scores(loaded, score, weights, serialized, flat, quantize, max_auc_drop)
  if not check['passed']:
    raise InputError(refusal(loaded.name, check))

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
                'field_dims': [int(d) for d in loaded.data.field_dims],
                'quantized': specs},
      'quantize': quantize,
      'quantization': None if scheme is None else scheme._asdict(),
      'params': loaded.result.get('params'),
      'compact_bytes': embedding_bytes,
      'dense_table_bytes': int(dense_table_bytes),
      'compact_fraction': embedding_bytes / dense_table_bytes,
      'dense_parameter_bytes': serving.nbytes(flat) - embedding_bytes,
      'result': {k: v for k, v in loaded.result.items() if k != 'history'},
      'check': check,
      'scorer': {'file': serving.EXPORTED, 'derive': serving.DERIVE,
                 'inputs': ['weights (the arrays of weights.npz and what derive.jaxexport '
                            'computes from them)', 'ids int32 [b, F]'],
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
  flags.DEFINE_enum('quantize', 'none', list(quant.SCHEMES), 'store the embedding\'s tables in '
                    '8 or 4 bits per entry, a scale per group of entries')
  flags.DEFINE_float('max_auc_drop', MAX_AUC_DROP, 'a quantised form is refused when it moves '
                     'the test AUC by more than this')
  flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  cli.exit_if_argv(argv)
  args = flags.FLAGS
  manifest = cli.exit_on_user_error(export, args.workdir, args.out, args.run, args.layout,
                                    args.quantize, args.max_auc_drop)
  check = manifest['check']
  print(f'exported {manifest["run"]} ({manifest["method"]}, layout {manifest["model"]["layout"]}, '
        f'{manifest["quantize"]}) to {os.path.abspath(args.out)}')
  print(f'embedding: {manifest["compact_bytes"]:,} bytes compact, '
        f'{manifest["dense_table_bytes"]:,} dense ({manifest["compact_fraction"]:.1%}); '
        f'dense parameters {manifest["dense_parameter_bytes"]:,} bytes')
  if check['quantize'] == 'none':
    print(f'check on {check["rows"]:,} test rows: max relative difference '
          f'{check["compact"]["max_rel_diff"]:.2e} (compact), '
          f'{check["stablehlo"]["max_rel_diff"]:.2e} (StableHLO); test AUC '
          f'{check["test_auc_compact"]:.4f}')
  else:
    print(f'check on {check["rows"]:,} test rows: test AUC {check["test_auc_reference"]:.5f} '
          f'trained, {check["test_auc_compact"]:.5f} {check["quantize"]} '
          f'(drop {check["auc_drop"]:+.5f}, at most {check["max_auc_drop"]:g}); largest '
          f'probability difference {check["compact"]["max_abs_diff"]:.2e}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
