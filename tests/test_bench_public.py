"""experiments/bench_public.py without torch: the folder it writes, its flags, its torch check."""

import importlib.util

import numpy as np
import pytest

from pep_jax.data import load_dataset



@pytest.fixture(scope='module')
def bench():
  return importlib.import_module('experiments.bench_public')


def read_dat(path):
  with open(path, encoding='latin-1') as f:
    return [line.rstrip('\n').split('::') for line in f]


def test_written_folder_reads_in_our_loader(bench, tmp_path):
  made = bench.write_movielens(str(tmp_path / 'ml'), ratings=2000)
  data = load_dataset(bench.our_data_config(str(tmp_path / 'ml'), str(tmp_path / 'cache')).data)
  assert len(data.train) + len(data.valid) + len(data.test) == made['ratings'] == 2000
  assert data.field_names == ('timestamp', 'gender', 'age', 'occupation', 'zip', 'year',
                              'genres')
  assert data.field_dims[1] == 3  # F, M and the out-of-vocabulary index
  assert data.info['num_bad_lines'] == 0

  ratings = np.array(read_dat(tmp_path / 'ml' / 'ratings.dat'), np.int64)
  assert len(ratings) == made['ratings'] + made['rating_3']
  kept, threes = ratings[ratings[:, 2] != 3], ratings[ratings[:, 2] == 3]
  assert len(threes) == made['rating_3']
  # What keeps the public loader's field sizes and timestamp origin equal to ours.
  assert set(kept[:, 0]) == set(range(1, made['users'] + 1))
  assert set(kept[:, 1]) == set(range(1, made['movies'] + 1))
  assert kept[:, 3].min() == ratings[:, 3].min()
  assert set(threes[:, 3]) <= set(kept[:, 3])
  titles = [m[1] for m in read_dat(tmp_path / 'ml' / 'movies.dat')]
  assert all(t[-6] == '(' and t[-5:-1].isdigit() and t[-1] == ')' for t in titles)

  again = bench.write_movielens(str(tmp_path / 'again'), ratings=2000)
  assert again == made
  for name in ('users.dat', 'movies.dat', 'ratings.dat'):
    assert (tmp_path / 'ml' / name).read_bytes() == (tmp_path / 'again' / name).read_bytes()


def test_make_data_alone_prints_our_feature_count(bench, tmp_path, capsys):
  bench.main([f'--make-data={tmp_path / "ml"}', '--ratings=1000'])
  out = capsys.readouterr().out
  assert 'our loader: 1,000 rows' in out and 'features' in out


def test_help(bench, capsys):
  with pytest.raises(SystemExit) as exit_info:
    bench.main(['--help'])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  for flag in ('--public-code', '--data', '--make-data', '--steps', '--steps-per-dispatch',
               '--json'):
    assert flag in out


def test_missing_torch_is_named(bench, tmp_path, monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'torch' else find_spec(name, *a))
  with pytest.raises(SystemExit, match=r'needs torch\b.*pip install torch'):
    bench.main([f'--public-code={tmp_path}', f'--data={tmp_path}'])


def side(steps_per_second, **extra):
  return {'steps': 120, 'timed_steps': 100, 'timed_seconds': 100 / steps_per_second,
          'steps_per_second': steps_per_second, 'load_before': 0.1, **extra}


def test_report_ratio_and_stall_caveat(bench, capsys):
  settings = {'model': 'fm', 'latent_dim': 32, 'threshold_init': -15,
              'threshold_type': 'feature_dim', 'batch_size_train': 1024, 'fm_optimizer': 'adam',
              'fm_lr': 1e-3, 'fm_l2_regularization': 1e-5, 'fm_grad_clip': 100}
  ours_settings = {'model': 'fm', 'dim': 32, 's_init': -15.0, 'granularity': 'feature_dimension',
                   'batch_size': 1024, 'optimizer.name': 'adam',
                   'optimizer.learning_rate': 1e-3, 'optimizer.weight_decay': 1e-5,
                   'optimizer.decoupled_weight_decay': False, 'optimizer.clip_norm': 100.0}
  public = side(50.0, torch='2.x', threads=2, rows=10, features=7, settings=settings,
                median_step_seconds=0.01,
                step_seconds_percentiles={'10': 0.01, '50': 0.01, '90': 0.02, '99': 0.5,
                                          '100': 0.6})
  ours = side(100.0, jax='0.x', device='cpu', rows=10, features=14, settings=ours_settings,
              steps_per_dispatch=1, warmup_steps=1, warmup_seconds=1.0, caveats=[])
  doc = bench.report(bench.parse_args(['--data=/tmp/x']), public, ours)
  assert doc['ratio_ours_over_public'] == pytest.approx(2.0)
  assert doc['torch'] == '2.x' and doc['jax'] == '0.x' and doc['machine']['cpus'] >= 1
  assert len(doc['caveats']) == 1 and 'stalled' in doc['caveats'][0]
  assert 'ratio ours/public: 2.00x' in capsys.readouterr().out


def test_the_median_round_is_shown_and_every_round_kept(bench):
  def side(rate, load=1.0):
    return {'steps_per_second': rate, 'load_before': load}
  sides = [(side(100.0), side(1500.0)), (side(150.0), side(1500.0)), (side(100.0), side(2400.0))]
  # ratios 15, 10 and 24: the median is the first round's
  assert bench.median_round(sides) == 0
  assert bench.median_round(sides[1:]) == 0  # of two, the lower
  rounds = bench.rounds_summary(sides)
  assert [r['ratio'] for r in rounds] == [15.0, 10.0, 24.0]
  assert rounds[2] == {'public_steps_per_second': 100.0, 'ours_steps_per_second': 2400.0,
                       'ratio': 24.0, 'load_before_public': 1.0, 'load_before_ours': 1.0}


def test_rounds_must_be_positive(bench):
  with pytest.raises(SystemExit, match='--rounds=0 must be at least 1'):
    bench.main(['--rounds=0'])
