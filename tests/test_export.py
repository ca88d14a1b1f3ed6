"""Export a finished tiny run, load it back, and score: the same numbers without the dense table,
or with its tables quantised, the test AUC the export recorded."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from pep_jax import export, predict, serving
from pep_jax.layers import compact
from pep_jax.data.base import Split
from pep_jax import experiment
from pep_jax.metrics import auc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('run'))
  config = demo.get_config('tiny')
  config.prune.budgets = (0.5,)  # the tiny prune never reaches 0.2: stop at the first ticket
  experiment.run(config, path)
  return path


@pytest.fixture(scope='module')
def artifact(workdir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('artifacts') / 'best')
  manifest = export.export(workdir, out)
  return out, manifest


@pytest.fixture(scope='module')
def quantized(workdir, tmp_path_factory):
  """The best ticket exported in each quantised form: ``{form: (folder, manifest)}``."""
  out = {}
  for form in ('int8', 'int4'):
    folder = str(tmp_path_factory.mktemp('artifacts') / form)
    out[form] = folder, export.export(workdir, folder, quantize=form, max_auc_drop=0.01)
  return out


@pytest.fixture(scope='module')
def ticket_run(workdir, artifact):
  return export.load_run(workdir, artifact[1]['run'])


def embedding_bytes_on_disk(folder: str) -> int:
  """Bytes of the embedding's arrays in an artifact's weights.npz, as read back."""
  with np.load(os.path.join(folder, 'weights.npz')) as npz:
    return sum(npz[k].nbytes for k in npz.files if k.startswith('params/embedding/'))


def reference(run, ids):
  """The trained model's probabilities, through the run's own eval step."""
  return export.reference_probs(run, Split(np.asarray(ids, np.int32), np.zeros(len(ids))))


def adversarial_ids(run, rng, mask):
  """Random rows, all-OOV rows, rows through fully pruned features, the largest ids."""
  dims = np.asarray(run.data.field_dims)
  offsets = np.concatenate([[0], np.cumsum(dims)[:-1]])
  rows = [rng.integers(0, dims, size=(300, len(dims))), np.zeros((3, len(dims)), np.int64),
          np.tile(dims - 1, (2, 1))]
  empty = np.flatnonzero(mask.sum(axis=1) == 0)  # features whose whole row was pruned
  for g in empty:
    field = int(np.searchsorted(offsets, g, side='right') - 1)
    row = rng.integers(0, dims, size=len(dims))
    row[field] = g - offsets[field]
    rows.append(row[None])
  return np.concatenate(rows), len(empty)


def ticket_mask(run):
  return np.asarray(run.constants['ticket']['embedding']['mask'])[:run.num_rows]


def test_manifest_records_sizes_checksums_and_the_check(artifact, ticket_run):
  out, manifest = artifact
  with open(os.path.join(out, 'manifest.json')) as f:
    assert json.load(f) == manifest
  assert manifest['format_version'] == serving.FORMAT_VERSION
  assert manifest['run'] == 'pep_b1472' and manifest['method'] == 'pep'
  assert manifest['model']['layout'] == 'bitmask'  # the default up to 32 dimensions
  assert set(manifest['files']) == {'config.json', 'weights.npz', 'derive.jaxexport',
                                    'scorer.jaxexport'}
  for name, facts in manifest['files'].items():
    assert serving.sha256_file(os.path.join(out, name)) == facts['sha256']
  mask = ticket_mask(ticket_run)
  nnz = int(mask.sum())
  assert manifest['params'] <= nnz
  rows = ticket_run.num_rows
  assert manifest['dense_table_bytes'] == rows * 8 * 4
  # bitmask layout: a uint8 mask per feature (offsets are derived at load), a float32 per
  # non-zero
  assert manifest['compact_bytes'] == rows * 1 + manifest['params'] * 4
  assert manifest['compact_bytes'] == embedding_bytes_on_disk(out)
  assert manifest['quantize'] == 'none' and manifest['model']['quantized'] == {}
  check = manifest['check']
  assert check['passed'] and check['rows'] == len(ticket_run.data.test)
  assert check['compact']['max_rel_diff'] <= 1e-6 and check['stablehlo']['max_rel_diff'] <= 1e-6
  assert check['test_auc_compact'] == pytest.approx(ticket_run.result['test_auc'], abs=1e-6)


def test_loaded_scorer_matches_the_trained_model_on_adversarial_rows(artifact, ticket_run):
  scorer = serving.load(artifact[0])
  ids, num_empty = adversarial_ids(ticket_run, np.random.default_rng(0), ticket_mask(ticket_run))
  assert num_empty > 0  # the tiny ticket has features with every entry pruned
  np.testing.assert_allclose(scorer(ids), reference(ticket_run, ids), rtol=1e-6)
  np.testing.assert_allclose(scorer(ids, batch_size=7), scorer(ids), rtol=1e-6)


def test_the_compact_table_is_the_masked_table(artifact, ticket_run):
  scorer = serving.load(artifact[0])
  params = jax.device_get(ticket_run.state.params)
  effective = params['embedding']['table'][:ticket_run.num_rows] * ticket_mask(ticket_run)
  w = {k[len('params/embedding/'):]: v for k, v in scorer.weights.items()
       if k.startswith('params/embedding/')}
  gids = jnp.arange(ticket_run.num_rows)[:, None]
  rows = compact.bitmask_lookup(w, None, gids, ticket_run.dim)
  np.testing.assert_array_equal(np.asarray(rows)[:, 0], effective)
  np.testing.assert_array_equal(scorer.weights['params/linear/weight'],
                                params['linear']['weight'][:ticket_run.num_rows])


@pytest.mark.parametrize('layout', ['bitmask', 'csr'])
def test_a_field_with_every_row_pruned(ticket_run, layout):
  run = ticket_run
  mask = np.asarray(run.constants['ticket']['embedding']['mask']).copy()
  dims = np.asarray(run.data.field_dims)
  start = int(dims[:2].sum())
  mask[start:start + dims[2]] = False  # field 2: every feature pruned
  pruned = export.Run(**{**run.__dict__, 'constants': {'ticket': {'embedding': {
      'mask': jax.device_put(mask, run.stage.row_sharding)}}}})
  stored, flat = export.compact_weights(pruned, layout)
  assert stored.layout == layout
  served = run.method.layouts[layout]
  derived = serving.derived_arrays(served, stored.arrays)
  model = serving.compact_model(run.config, dims, served, run.dim, {**stored.arrays, **derived})
  score = jax.jit(serving.score_function(model))
  ids, _ = adversarial_ids(run, np.random.default_rng(1), mask[:run.num_rows])
  weights = {k: jnp.asarray(v) for k, v in flat.items()}
  weights.update(serving.flat_embedding(derived))
  got = np.asarray(score(weights, jnp.asarray(ids, jnp.int32)))
  np.testing.assert_allclose(got, reference(pruned, ids), rtol=1e-6)


def test_uniform_run_exports_its_dense_table(workdir, tmp_path):
  manifest = export.export(workdir, str(tmp_path / 'ue'), run='ue_d8')
  assert manifest['method'] == 'ue' and manifest['model']['layout'] == 'dense'
  assert manifest['compact_bytes'] == manifest['dense_table_bytes'] == 368 * 8 * 4
  run = export.load_run(workdir, 'ue_d8')
  ids, _ = adversarial_ids(run, np.random.default_rng(2), np.ones((368, 8)))
  np.testing.assert_allclose(serving.load(str(tmp_path / 'ue'))(ids), reference(run, ids),
                             rtol=1e-6)


@pytest.mark.parametrize('dim', [1, 3, 16, 32, 40])
def test_layouts_reproduce_the_table(dim):
  rng = np.random.default_rng(dim)
  table = rng.normal(size=(60, dim)).astype(np.float32)
  table[rng.random(table.shape) < 0.7] = 0
  table[10:20] = 0  # a field of empty rows
  gids = rng.integers(0, 60, size=(9, 5))
  layouts = {'dense': (compact.encode_dense, compact.DENSE),
             'bitmask': (compact.encode_bitmask, compact.BITMASK),
             'csr': (compact.encode_csr, compact.CSR)}

  def read(layout, stored, rows):
    arrays = compact.with_derived(layout, {k: jnp.asarray(v) for k, v in stored.items()})
    return np.asarray(layout.lookup(arrays, None, jnp.asarray(rows), dim))

  for name, (encode, layout) in layouts.items():
    if name == 'bitmask' and dim > 32:
      with pytest.raises(ValueError, match='csr'):
        encode(table)
      continue
    np.testing.assert_array_equal(read(layout, encode(table), gids), table[gids], err_msg=name)
    empty = encode(np.zeros((4, dim), np.float32))
    assert not read(layout, empty, np.zeros((2, 3), np.int32)).any()


def _flip_byte(path):
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0xFF
  open(path, 'wb').write(bytes(data))


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def _bump_version(path):
  manifest = json.load(open(path))
  manifest['format_version'] += 1
  json.dump(manifest, open(path, 'w'))


@pytest.mark.parametrize('name, damage, message', [
    ('weights.npz', _flip_byte, 'SHA-256'),
    ('scorer.jaxexport', _truncate, 'truncated'),
    ('config.json', os.remove, 'missing'),
    ('manifest.json', _bump_version, 'format version'),
    ('manifest.json', _truncate, 'not valid JSON'),
])
def test_a_damaged_artifact_is_refused_naming_the_file(artifact, tmp_path, name, damage, message):
  copy = str(tmp_path / 'copy')
  shutil.copytree(artifact[0], copy)
  damage(os.path.join(copy, name))
  with pytest.raises(serving.ArtifactError, match=message) as error:
    serving.load(copy)
  assert os.path.join(copy, name) in str(error.value)
  assert '\n' not in str(error.value)


def test_export_refuses_an_existing_folder_and_an_unknown_run(workdir, artifact, tmp_path):
  with pytest.raises(FileExistsError, match='exists'):
    export.export(workdir, artifact[0])
  for name in ('prune', 'pep_b7'):
    with pytest.raises(ValueError, match=f'--run={name}: not a run of this work directory; its '
                                         r"finished runs are \['pep_b\d+', 'ue_d8'\]"):
      export.export(workdir, str(tmp_path / 'x'), run=name)
  assert not os.path.exists(tmp_path / 'x')


@pytest.mark.parametrize('form', ['none', 'int4'])
def test_the_readme_lines_run_the_artifact_with_only_jax_and_numpy(artifact, quantized,
                                                                   ticket_run, tmp_path, form):
  out = artifact[0] if form == 'none' else quantized[form][0]
  expected = (lambda ids: reference(ticket_run, ids)) if form == 'none' else serving.load(out)
  with open(os.path.join(ROOT, 'README.md')) as f:
    blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
  (readme,) = [b for b in blocks if 'jax.export.deserialize' in b]
  assert "folder = 'runs/demo_artifact'" in readme and '(3, 20)' in readme
  num_fields = ticket_run.data.num_fields
  ids, _ = adversarial_ids(ticket_run, np.random.default_rng(3), ticket_mask(ticket_run))
  np.save(tmp_path / 'ids.npy', ids.astype(np.int32))
  script = readme.replace("'runs/demo_artifact'", repr(out)).replace('(3, 20)',
                                                                     f'(3, {num_fields})')
  script += textwrap.dedent(f"""
      np.save({str(tmp_path / 'probs.npy')!r},
              np.asarray(scorer.call(weights, np.load({str(tmp_path / 'ids.npy')!r}))))
      import sys
      assert not any(m.startswith('pep_jax') for m in sys.modules), 'pep_jax was imported'
      """)
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  printed = np.array(proc.stdout.strip().strip('[]').split(), np.float64)
  zeros = np.zeros((3, num_fields), np.int32)
  np.testing.assert_allclose(printed, expected(zeros), rtol=1e-6)
  np.testing.assert_allclose(np.load(tmp_path / 'probs.npy'), expected(ids), rtol=1e-6)


def test_export_command_line(workdir, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = tmp_path / 'cli'
  proc = subprocess.run([sys.executable, '-m', 'pep_jax.export', f'--workdir={workdir}',
                         f'--out={out}', '--layout=csr', '--quantize=int8'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr
  assert 'exported pep_b1472 (pep, layout csr, int8)' in proc.stdout
  assert 'test AUC' in proc.stdout and 'at most 0.001' in proc.stdout
  manifest = serving.load(str(out)).manifest
  assert manifest['model']['layout'] == 'csr' and manifest['quantize'] == 'int8'
  proc = subprocess.run([sys.executable, '-m', 'pep_jax.export', f'--workdir={tmp_path}/none',
                         f'--out={tmp_path}/x'], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=180)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and 'config.json' in lines[0]


def test_an_export_that_fails_its_check_writes_nothing(workdir, tmp_path, monkeypatch):
  monkeypatch.setattr(export, 'RTOL', -1.0)  # no difference, not even 0, passes
  with pytest.raises(ValueError, match='nothing was written'):
    export.export(workdir, str(tmp_path / 'x'))
  assert not os.listdir(tmp_path)


def test_a_quantised_form_that_moves_the_auc_too_far_writes_nothing(workdir, quantized,
                                                                    tmp_path):
  drop = quantized['int4'][1]['check']['auc_drop']
  assert drop != 0
  with pytest.raises(export.InputError) as error:
    export.export(workdir, str(tmp_path / 'x'), quantize='int4', max_auc_drop=abs(drop) / 2)
  message = str(error.value)
  assert '--quantize=int4 moves the test AUC' in message and '--max_auc_drop=' in message
  assert 'nothing was written' in message and '\n' not in message
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('form', ['int8', 'int4'])
def test_a_quantised_artifact_records_its_check_and_scores_as_recorded(quantized, artifact,
                                                                       ticket_run, form):
  folder, manifest = quantized[form]
  check = manifest['check']
  assert check['passed'] and check['quantize'] == form == manifest['quantize']
  assert check['max_auc_drop'] == 0.01 and abs(check['auc_drop']) <= 0.01
  assert check['test_auc_reference'] == pytest.approx(ticket_run.result['test_auc'], abs=1e-6)
  assert check['stablehlo_vs_compact']['max_rel_diff'] <= 1e-6
  assert 0 < check['compact']['max_abs_diff'] < 0.1  # quantised: close, not equal
  for key in ('test_logloss_reference', 'test_logloss_compact'):
    assert 0 < check[key] < 1
  # What the artifact stores for the embedding is what the manifest says.
  assert manifest['compact_bytes'] == embedding_bytes_on_disk(folder)
  specs = manifest['model']['quantized']
  assert set(specs) == {'values'} and specs['values']['bits'] == int(form[3:])
  nnz, rows = manifest['params'], ticket_run.num_rows
  scheme = export.scheme_of(form)
  groups = -(-nnz // scheme.group)
  per_group = 4 if scheme.symmetric else 8  # a scale, and an offset when affine
  words = -(-nnz // (32 // scheme.bits))  # the codes, packed in uint32 words
  assert manifest['compact_bytes'] == rows + 4 * words + per_group * groups
  assert manifest['compact_bytes'] < artifact[1]['compact_bytes']
  # serving.load reproduces the recorded AUC on the test split.
  scorer = serving.load(folder)
  test = ticket_run.data.test
  assert auc(np.asarray(test.labels), scorer(np.asarray(test.ids))) == pytest.approx(
      check['test_auc_compact'], abs=1e-9)


def test_predict_scores_a_quantised_artifact(quantized, ticket_run, tmp_path):
  folder = quantized['int8'][0]
  ids, _ = adversarial_ids(ticket_run, np.random.default_rng(4), ticket_mask(ticket_run))
  np.save(tmp_path / 'ids.npy', ids)
  probs = predict.predict_file(folder, str(tmp_path / 'ids.npy'), str(tmp_path / 'p.txt'))
  np.testing.assert_allclose(probs, serving.load(folder)(ids), rtol=1e-6)
  np.testing.assert_allclose(np.loadtxt(tmp_path / 'p.txt'), probs, atol=1e-8)


def _shrink_spec(path):
  manifest = json.load(open(path))
  manifest['model']['quantized']['values']['shape'][0] -= 64  # the codes no longer fit it
  json.dump(manifest, open(path, 'w'))


@pytest.mark.parametrize('name, damage, message, named', [
    ('weights.npz', _flip_byte, 'SHA-256', 'weights.npz'),
    ('manifest.json', _shrink_spec, 'does not match its quantisation spec', 'weights.npz'),
])
def test_a_damaged_quantised_artifact_is_refused_naming_the_file(quantized, tmp_path, name,
                                                                 damage, message, named):
  copy = str(tmp_path / 'copy')
  shutil.copytree(quantized['int4'][0], copy)
  damage(os.path.join(copy, name))
  with pytest.raises(serving.ArtifactError, match=message) as error:
    serving.load(copy)
  assert os.path.join(copy, named) in str(error.value) and '\n' not in str(error.value)


def test_a_manifest_entry_without_its_checksum_is_refused(artifact, tmp_path):
  copy = str(tmp_path / 'copy')
  shutil.copytree(artifact[0], copy)
  path = os.path.join(copy, 'manifest.json')
  manifest = json.load(open(path))
  del manifest['files']['weights.npz']['sha256']
  json.dump(manifest, open(path, 'w'))
  with pytest.raises(serving.ArtifactError, match='weights.npz lacks its bytes or sha256'):
    serving.load(copy)


@pytest.mark.parametrize('key', ['model', 'method'])
def test_a_manifest_without_its_model_facts_is_refused_naming_the_key(artifact, tmp_path, key):
  copy = str(tmp_path / 'copy')
  shutil.copytree(artifact[0], copy)
  path = os.path.join(copy, 'manifest.json')
  manifest = json.load(open(path))
  del manifest[key]
  json.dump(manifest, open(path, 'w'))
  with pytest.raises(serving.ArtifactError, match=f'lacks the key {key}') as error:
    serving.load(copy)
  assert path in str(error.value)
