"""Scoring files: raw Criteo, Avazu and MovieLens rows (with or without labels) and id rows."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import demo
from pep_jax import export, predict, serving
from pep_jax.data import avazu, cache, criteo, movielens
from pep_jax import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATS = [b'68fd1e64', b'80e26c9b', b'fb936136', b'', b'7e0ccccf']


def criteo_line(rng, label=True, unknown=False):
  ints = [b'' if rng.random() < 0.2 else str(int(rng.integers(-3, 40))).encode()
          for _ in range(13)]
  cats = [CATS[int(rng.integers(0, len(CATS)))] for _ in range(26)]
  if unknown:  # values no vocabulary has seen
    ints[0], cats[0], cats[5] = b'987654321987', b'zzzzzzzz', b'never-seen-before'
  return b'\t'.join(([b'1' if rng.random() < 0.3 else b'0'] if label else []) + ints + cats)


def avazu_line(rng, i, click=True, unknown=False):
  values = [b'1fbe01fe', b'f3845767', b'14102100', b'1005', b'0', b'']
  cols = [values[int(rng.integers(0, len(values)))] for _ in range(22)]
  if unknown:
    cols[3] = b'unseen-site'
  return b','.join([str(10**18 + i).encode()] + ([b'0'] if click else []) + cols)


USERS = [b'1::F::1::10::48067', b'2::M::56::16::70072', b'3::M::25::15::55117']
MOVIES = [b'1::Toy Story (1995)::Animation|Comedy', b'2::Jumanji (1995)::Adventure',
          b'3::Heat (1995)::Action|Crime|Thriller']


def ratings_line(rng, rating=True):
  user, movie = int(rng.integers(1, 4)), int(rng.integers(1, 4))
  ts = 978300000 + int(rng.integers(0, 10**6))
  middle = b'::%d' % int(rng.choice([1, 2, 4, 5])) if rating else b''
  return b'%d::%d%s::%d' % (user, movie, middle, ts)


def write_raw(name, folder, rng):
  folder.mkdir()
  if name == 'criteo':
    (folder / 'train.txt').write_bytes(b'\n'.join(criteo_line(rng) for _ in range(800)) + b'\n')
  elif name == 'avazu':
    lines = [avazu.HEADER] + [avazu_line(rng, i) for i in range(800)]
    (folder / 'train').write_bytes(b'\n'.join(lines) + b'\n')
  else:
    (folder / 'users.dat').write_bytes(b'\n'.join(USERS) + b'\n')
    (folder / 'movies.dat').write_bytes(b'\n'.join(MOVIES) + b'\n')
    lines = [ratings_line(rng) for _ in range(800)]
    (folder / 'ratings.dat').write_bytes(b'\n'.join(lines) + b'\n')


@pytest.fixture(scope='module', params=['criteo', 'avazu', 'movielens'])
def artifact(request, tmp_path_factory):
  """A uniform FM on a tiny raw dataset, trained one epoch and exported."""
  name = request.param
  root = tmp_path_factory.mktemp(name)
  write_raw(name, root / 'raw', np.random.default_rng(0))
  config = demo.get_config('tiny')
  config.data.name = name
  config.data.dir = str(root / 'raw')
  config.data.min_count = 2
  config.data.workers = 1
  config.methods = ('ue',)
  config.ue.dims = (4,)
  config.train.max_epochs = 1
  experiment.run(config, str(root / 'work'))
  export.export(str(root / 'work'), str(root / 'artifact'), run='ue_d4')
  return name, str(root / 'artifact'), root


def expected_ids(name, scorer, rows):
  """Ids of raw rows, one row at a time through the readers' row_keys and the vocabulary."""
  vocab = cache.Vocabulary.load(scorer.vocab_dir)
  with open(os.path.join(scorer.vocab_dir, 'meta.json')) as f:
    meta = json.load(f)  # MovieLens: the minimum timestamp of training shifts every timestamp
  row_keys = {'criteo': criteo.row_keys, 'avazu': avazu.row_keys,
              'movielens': movielens.row_keys}[name]
  return np.stack([vocab.encode(row_keys(row, meta)) for row in rows])


def test_raw_rows_with_and_without_labels_score_like_their_ids(artifact, tmp_path):
  name, folder, root = artifact
  scorer = serving.load(folder)
  rng = np.random.default_rng(1)
  if name == 'criteo':
    lines = [criteo_line(rng, unknown=i % 5 == 0) for i in range(50)]
    rows = [line.split(b'\t')[1:] for line in lines]
    unlabelled = [b'\t'.join(r) for r in rows]
    files = {'train.txt': lines, 'test.txt': unlabelled}
  elif name == 'avazu':
    lines = [avazu_line(rng, i, unknown=i % 5 == 0) for i in range(50)]
    rows = [line.split(b',')[2:] for line in lines]
    no_click = [b','.join(line.split(b',')[:1] + line.split(b',')[2:]) for line in lines]
    files = {'train.csv': [avazu.HEADER] + lines, 'test': no_click}
  else:
    lines = [ratings_line(rng) for _ in range(50)]
    unlabelled = [b'::'.join(line.split(b'::')[:2] + line.split(b'::')[3:]) for line in lines]
    for f in ('users.dat', 'movies.dat'):
      (tmp_path / f).write_bytes((root / 'raw' / f).read_bytes())
    users = {u.split(b'::')[0]: u.split(b'::')[1:] for u in USERS}
    movies = {m.split(b'::')[0]: m.split(b'::')[1:] for m in MOVIES}
    rows = [[line.split(b'::')[3], *users[line.split(b'::')[0]], *movies[line.split(b'::')[1]]]
            for line in lines]
    files = {'ratings.dat': lines, 'test.dat': unlabelled}
  ids = expected_ids(name, scorer, rows)
  expected = scorer(ids)
  for file, content in files.items():
    path = tmp_path / file
    path.write_bytes(b'\n'.join(content) + b'\n')
    np.testing.assert_array_equal(predict.encode_file(str(path), scorer), ids, err_msg=file)
    np.testing.assert_allclose(predict.predict_file(folder, str(path)), expected, rtol=1e-6)
  if name != 'movielens':
    assert (ids[::5] == 0).any(axis=1).all()  # unknown values went to the OOV index


def test_bad_rows_are_refused_by_line_number(artifact, tmp_path):
  name, folder, root = artifact
  rng = np.random.default_rng(2)
  if name == 'criteo':
    bad_int = criteo_line(rng).split(b'\t')
    bad_int[3] = b'12x'
    lines = [criteo_line(rng), b'\t'.join(bad_int), criteo_line(rng), b'1\t2\t3']
    path = tmp_path / 'rows.txt'
  elif name == 'avazu':
    lines = [avazu.HEADER, avazu_line(rng, 0), avazu_line(rng, 1)[:20], avazu_line(rng, 2),
             avazu_line(rng, 3).replace(b',0,', b',7,', 1)]
    path = tmp_path / 'rows.csv'
  else:
    for f in ('users.dat', 'movies.dat'):
      (tmp_path / f).write_bytes((root / 'raw' / f).read_bytes())
    lines = [ratings_line(rng), b'9::1::4::978300760', ratings_line(rng), b'1::2::x::978300760']
    path = tmp_path / 'ratings.dat'
  path.write_bytes(b'\n'.join(lines) + b'\n')
  output = tmp_path / 'probs.txt'
  first, second = (3, 5) if name == 'avazu' else (2, 4)  # line 1 of the Avazu file: header
  with pytest.raises(ValueError, match=rf'first: {first} \(.*\), {second} \(') as error:
    predict.predict_file(folder, str(path), str(output))
  assert str(path) in str(error.value) and '\n' not in str(error.value)
  assert not output.exists()


def test_id_rows_from_csv_and_npy(artifact, tmp_path):
  name, folder, _ = artifact
  scorer = serving.load(folder)
  rng = np.random.default_rng(3)
  ids = rng.integers(0, scorer.field_dims, size=(40, scorer.num_fields))
  np.save(tmp_path / 'ids.npy', ids)
  np.savetxt(tmp_path / 'ids.csv', ids, fmt='%d', delimiter=',')
  expected = scorer(ids)
  np.testing.assert_array_equal(predict.predict_file(folder, str(tmp_path / 'ids.npy')), expected)
  got = predict.predict_file(folder, str(tmp_path / 'ids.csv'), fmt='ids')
  np.testing.assert_array_equal(got, expected)
  ids[7, 1] = scorer.field_dims[1]  # one past the last index
  np.savetxt(tmp_path / 'bad.csv', ids, fmt='%d', delimiter=',')
  with pytest.raises(ValueError, match=r'first: 8 \(field 1 outside'):
    predict.predict_file(folder, str(tmp_path / 'bad.csv'), fmt='ids')
  np.save(tmp_path / 'bad.npy', ids)
  with pytest.raises(ValueError, match=r'\[7\]'):
    predict.predict_file(folder, str(tmp_path / 'bad.npy'))


@pytest.mark.parametrize('artifact', ['criteo'], indirect=True)  # one dataset is enough
def test_predict_command_line(artifact, tmp_path):
  _, folder, _ = artifact
  rng = np.random.default_rng(4)
  path = tmp_path / 'rows.txt'
  path.write_bytes(b'\n'.join(criteo_line(rng, label=False) for _ in range(30)) + b'\n')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = tmp_path / 'probs.txt'
  proc = subprocess.run([sys.executable, '-m', 'pep_jax.predict', f'--artifact={folder}',
                         f'--input={path}', f'--output={out}'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr
  probs = np.loadtxt(out)
  assert probs.shape == (30,) and ((probs > 0) & (probs < 1)).all()
  np.testing.assert_allclose(probs, predict.predict_file(folder, str(path)), atol=1e-8)
  proc = subprocess.run([sys.executable, '-m', 'pep_jax.predict', f'--artifact={tmp_path}',
                         f'--input={path}'], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=180)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and 'manifest.json' in lines[0] and lines[0].startswith('error: ')
