"""Export a finished tiny run, load it back, and score: the same numbers without the dense table."""

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
from pep_jax import export, serving
from pep_jax.layers import compact
from pep_jax.data.base import Split
from pep_jax import experiment

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
def ticket_run(workdir, artifact):
  return export.load_run(workdir, artifact[1]['run'])


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
  assert set(manifest['files']) == {'config.json', 'weights.npz', 'scorer.jaxexport'}
  for name, facts in manifest['files'].items():
    assert serving.sha256_file(os.path.join(out, name)) == facts['sha256']
  mask = ticket_mask(ticket_run)
  nnz = int(mask.sum())
  assert manifest['params'] <= nnz
  rows = ticket_run.num_rows
  assert manifest['dense_table_bytes'] == rows * 8 * 4
  # bitmask layout: a uint8 mask and an int32 offset per feature, a float32 per non-zero
  assert manifest['compact_bytes'] == rows * (1 + 4) + manifest['params'] * 4
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
  model = serving.compact_model(run.config, dims, run.method.layouts[layout], run.dim,
                                stored.arrays)
  score = jax.jit(serving.score_function(model))
  ids, _ = adversarial_ids(run, np.random.default_rng(1), mask[:run.num_rows])
  got = np.asarray(score({k: jnp.asarray(v) for k, v in flat.items()}, jnp.asarray(ids, jnp.int32)))
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
  layouts = {'dense': (compact.encode_dense, compact.dense_lookup),
             'bitmask': (compact.encode_bitmask, compact.bitmask_lookup),
             'csr': (compact.encode_csr, compact.csr_lookup)}
  for layout, (encode, lookup) in layouts.items():
    if layout == 'bitmask' and dim > 32:
      with pytest.raises(ValueError, match='csr'):
        encode(table)
      continue
    arrays = {k: jnp.asarray(v) for k, v in encode(table).items()}
    got = lookup(arrays, None, jnp.asarray(gids), dim)
    np.testing.assert_array_equal(np.asarray(got), table[gids], err_msg=layout)
    empty = encode(np.zeros((4, dim), np.float32))
    got = lookup({k: jnp.asarray(v) for k, v in empty.items()}, None,
                 jnp.zeros((2, 3), jnp.int32), dim)
    assert not np.asarray(got).any()


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


def test_the_readme_lines_run_the_artifact_with_only_jax_and_numpy(artifact, ticket_run,
                                                                   tmp_path):
  out, _ = artifact
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
  np.testing.assert_allclose(printed, reference(ticket_run, zeros), rtol=1e-6)
  np.testing.assert_allclose(np.load(tmp_path / 'probs.npy'), reference(ticket_run, ids),
                             rtol=1e-6)


def test_export_command_line(workdir, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = tmp_path / 'cli'
  proc = subprocess.run([sys.executable, '-m', 'pep_jax.export', f'--workdir={workdir}',
                         f'--out={out}', '--layout=csr'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr
  assert 'exported pep_b1472 (pep, layout csr)' in proc.stdout
  assert serving.load(str(out)).manifest['model']['layout'] == 'csr'
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
