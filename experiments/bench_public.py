"""Steps per second of the public PyTorch PEP prune loop and of ours, on one MovieLens-1M folder.

    python experiments/bench_public.py --public-code=/tmp/public_pep --data=/data/ml-1m
    python experiments/bench_public.py --public-code=/tmp/public_pep --make-data=/tmp/ml_bench \
        --steps=3000 --json=bench_public.json

``--public-code`` is a checkout of github.com/ssui-liu/learnable-embed-sizes-for-RecSys (its
``engine.py`` and ``train_ml-1m.py``); nothing of it is copied here, it is imported from that
folder in a child process. It needs torch, torchfm, pandas, scikit-learn and tensorboardX, which
are not dependencies of this project: install them for measuring only
(``pip install torch torchfm pandas scikit-learn tensorboardX``).

Both sides read the same folder (``users.dat``, ``movies.dat``, ``ratings.dat``, ``::``-separated)
with the public ML-1M settings: FM, d=32, ``s_init=-15``, feature-dimension thresholds, batch
1024, Adam 1e-3 with coupled L2 1e-5 and the gradient norm clipped to 100.

* Public side: its own entry ``train_ml-1m.py`` (all hyper-parameters from that file), run with
  ``use_cuda=False``, ``max_steps=--steps`` and ``data_path=--data`` set on its option dict, and
  ``numpy.long`` restored where NumPy lacks it. Its prune loop is
  ``Engine.train_an_episode``: one ``FMFactorizer.update`` per step (batch, forward, backward,
  clip, Adam), then the non-zero count of the whole table, the budget check and two TensorBoard
  scalars. The wall time of every ``update`` call is recorded; the rate is over the steps after
  the first ``--warmup`` (the first batch builds the DataLoader), to the loop's end.
  ``torch.set_num_threads(os.cpu_count())`` unless ``--torch-threads`` says otherwise. Its
  OpenMP threads wait for each other at every operation, so a step stalls (up to ~0.6 s seen on
  a 2-core machine, against a ~10 ms median) while other work holds a core: the JSON has the
  step-time percentiles, the table the median.
* Our side: ``pep_jax.experiment.run`` with ``configs/movielens_fm.py``, ``stage='search'``,
  ``methods=('pep',)``, one budget of 2 non-zeros (out of reach, so no ticket is written and the
  loop runs on) and ``prune.max_epochs`` the fewest epochs holding ``--steps`` steps. The rate
  is ``(steps - warmup_steps) / (seconds - warmup_seconds)`` from ``prune/result.json`` (the
  first compiled call excluded). XLA uses every core.

Start-up (imports, reading the data, the cache build, compilation) is excluded on both sides.
The two sides run in turn ``--rounds`` times (3): the speed of a shared 2-core VM drifts by up to
a factor of two between runs of a few seconds, so each round pairs the two sides run next to each
other in time, and the round with the median ratio is the one the table shows; every round's
rates and ratio are in the JSON (``rounds``).
``--make-data=DIR`` first writes a MovieLens-1M-format folder with numpy (deterministic; see
:func:`write_movielens`). Prints a table and writes it, with the torch and jax versions and the
machine, to ``--json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the public code imports besides NumPy (lmdb only serves its Criteo/Avazu readers).
PUBLIC_PACKAGES = {'torch': 'torch', 'torchfm': 'torchfm', 'pandas': 'pandas',
                   'sklearn': 'scikit-learn', 'tensorboardX': 'tensorboardX'}
PUBLIC_ENTRY = 'train_ml-1m.py'
# The public option keys (after train_ml-1m.py's set_defaults) that make up the settings.
PUBLIC_SETTINGS = ('model', 'latent_dim', 'threshold_init', 'threshold_type', 'g_type',
                   'batch_size_train', 'fm_optimizer', 'fm_lr', 'fm_l2_regularization',
                   'fm_grad_clip', 'candidate_p')

# MovieLens-1M's vocabularies.
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western")
AGES = (1, 18, 25, 35, 45, 50, 56)
OCCUPATIONS = 21
# MovieLens-100K's shape, the default size: 100,000 ratings of which 27,145 are 3s, 943 users,
# 1,682 movies, about 7 months of timestamps.
ML100K_KEPT, ML100K_THREES, ML100K_USERS, ML100K_MOVIES = 72_855, 27_145, 943, 1_682
FIRST_TIMESTAMP, TIMESTAMP_SPAN = 874_724_710, 18_600_000
ZIPS_PER_USER = 1.02  # size of the zip-code pool per user (~1,283 features at the default size)


def write_movielens(folder: str, ratings: int = ML100K_KEPT, seed: int = 0) -> dict:
  """Writes ``users.dat``, ``movies.dat`` and ``ratings.dat`` as MovieLens-1M has them.

  Lines are ``UserID::Gender::Age::Occupation::Zip``, ``MovieID::Title (YYYY)::Genre|Genre``
  and ``UserID::MovieID::Rating::Timestamp``. Users and movies scale with ``ratings`` from
  MovieLens-100K's 943 and 1,682. ``ratings`` lines have a rating of 1, 2, 4 or 5 and are the
  rows both loaders keep; ``27,145 / 72,855`` as many more have rating 3, which both drop.

  Built so that the public loader's field sizes (distinct values of the kept rows) hold every
  index its label encoders give, and its timestamp origin (the minimum over all ratings) is
  ours (the minimum over kept ratings): every user and movie has a kept rating, the earliest
  timestamp belongs to a kept rating and rating-3 lines reuse kept ratings' timestamps. Genre
  lists are in one fixed order, so a genre combination is one string for our loader as it is
  one set for the public one.

  Args:
    folder: created if missing; the three files are overwritten.
    ratings: kept rows (rating != 3).
    seed: of the numpy generator; the same arguments write the same bytes.

  Returns:
    ``{'ratings': kept rows, 'rating_3': dropped lines, 'users', 'movies'}``.
  """
  rng = np.random.default_rng(seed)
  scale = ratings / ML100K_KEPT
  num_users = max(10, round(ML100K_USERS * scale))
  num_movies = max(10, round(ML100K_MOVIES * scale))
  if ratings < max(num_users, num_movies):
    raise ValueError(f'--ratings={ratings}: at least {max(num_users, num_movies)} needed so that '
                     'every user and movie has a kept rating')
  os.makedirs(folder, exist_ok=True)

  zips = rng.integers(0, 100_000, max(1, round(ZIPS_PER_USER * num_users)))
  users = [f'{u}::{"FM"[rng.integers(2)]}::{AGES[rng.integers(len(AGES))]}::'
           f'{rng.integers(OCCUPATIONS)}::{zips[rng.integers(len(zips))]:05d}'
           for u in range(1, num_users + 1)]

  years = np.clip(np.round(1998 - rng.exponential(12, num_movies)), 1919, 2000).astype(int)
  genre_weights = 1 / np.arange(1, len(GENRES) + 1) ** 0.8
  movies = []
  for m in range(num_movies):
    k = 1 + min(int(rng.poisson(0.7)), 4)
    chosen = np.sort(rng.choice(len(GENRES), k, replace=False,
                                p=genre_weights / genre_weights.sum()))
    movies.append(f'{m + 1}::Movie {m + 1} ({years[m]})::{"|".join(GENRES[g] for g in chosen)}')

  def popular(n: int, size: int, exponent: float) -> np.ndarray:
    """``size`` ids in 1..n, Zipf-like; the first ``n`` cover every id once."""
    weights = 1 / np.arange(1, n + 1) ** exponent
    return np.concatenate([np.arange(n), rng.choice(n, size - n, p=weights / weights.sum())]) + 1

  user = popular(num_users, ratings, 0.6)
  movie = popular(num_movies, ratings, 0.9)
  rating = rng.choice([1, 2, 4, 5], ratings, p=[0.08, 0.15, 0.45, 0.32])
  stamp = FIRST_TIMESTAMP + rng.integers(0, TIMESTAMP_SPAN, ratings)
  stamp[0] = FIRST_TIMESTAMP  # the earliest rating is a kept one
  threes = round(ratings * ML100K_THREES / ML100K_KEPT)
  user = np.concatenate([user, rng.integers(1, num_users + 1, threes)])
  movie = np.concatenate([movie, rng.integers(1, num_movies + 1, threes)])
  rating = np.concatenate([rating, np.full(threes, 3)])
  stamp = np.concatenate([stamp, stamp[rng.integers(0, ratings, threes)]])
  order = rng.permutation(len(user))
  lines = [f'{u}::{m}::{r}::{t}' for u, m, r, t in
           zip(user[order], movie[order], rating[order], stamp[order])]

  for name, rows in (('users.dat', users), ('movies.dat', movies), ('ratings.dat', lines)):
    with open(os.path.join(folder, name), 'w', encoding='latin-1', newline='\n') as f:
      f.write('\n'.join(rows) + '\n')
  return {'ratings': ratings, 'rating_3': threes, 'users': num_users, 'movies': num_movies}


def our_data_config(data_dir: str, cache_dir: str):
  """``configs/movielens_fm.py``'s data section pointed at ``data_dir``, cached in ``cache_dir``."""
  config = load_our_config()
  config.data.dir = data_dir
  config.data.cache_dir = cache_dir
  return config


def load_our_config():
  """The public-settings config ``configs/movielens_fm.py`` (FM, d=32, s_init=-15, ...)."""
  path = os.path.join(ROOT, 'configs', 'movielens_fm.py')
  spec = importlib.util.spec_from_file_location('movielens_fm', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def missing_public_packages() -> list[str]:
  """Pip names of the packages the public code imports that are not installed here."""
  return [pip for module, pip in PUBLIC_PACKAGES.items()
          if importlib.util.find_spec(module) is None]


def require_public_packages() -> None:
  """Exits with a message naming every missing package of the public code."""
  missing = missing_public_packages()
  if missing:
    raise SystemExit(
        f'bench_public.py: the public PyTorch code needs {", ".join(missing)}, not installed in '
        f'{sys.executable}. Install for measuring only (they are not dependencies of pep_jax): '
        f'pip install {" ".join(missing)}')


def machine() -> dict:
  return {'platform': platform.platform(), 'processor': platform.processor() or platform.machine(),
          'cpus': os.cpu_count()}


# --------------------------------------------------------------------------- child processes


def public_worker(args: argparse.Namespace) -> dict:
  """Runs the public ``train_ml-1m.py`` for ``--steps`` steps and times every step."""
  import runpy
  import types

  if not hasattr(np, 'long'):  # gone in NumPy 1.24-1.26 (back as C long in 2.x)
    np.long = np.int64
  if importlib.util.find_spec('lmdb') is None:  # imported by its Criteo/Avazu readers only
    sys.modules['lmdb'] = types.ModuleType('lmdb')
  t_start = time.perf_counter()
  import torch
  torch.set_num_threads(args.torch_threads or os.cpu_count())
  code = os.path.abspath(args.public_code)
  sys.path.insert(0, code)
  os.chdir(args.workdir)  # it writes ./tmp/runs (TensorBoard) and ./tmp/embedding
  import engine
  from models import factorizer

  starts, facts, end = [], {}, []
  update, init, train = factorizer.FMFactorizer.update, engine.Engine.__init__, engine.Engine.train

  def timed_update(self, sampler):
    starts.append(time.perf_counter())
    return update(self, sampler)

  def configured_init(self, opt):
    opt.update(use_cuda=False, max_steps=args.steps, data_path=os.path.join(args.data, ''))
    init(self, opt)
    sampler = self._sampler
    facts.update(field_dims=[int(x) for x in self._opt['field_dims']],
                 rows=len(sampler.train_data) + len(sampler.valid_data) + len(sampler.test_data),
                 train_rows=len(sampler.train_data), batches_per_epoch=sampler.num_batches_train,
                 settings={k: _jsonable(opt[k]) for k in PUBLIC_SETTINGS})

  def timed_train(self):
    try:
      train(self)
    finally:
      end.append(time.perf_counter())

  factorizer.FMFactorizer.update = timed_update
  engine.Engine.__init__ = configured_init
  engine.Engine.train = timed_train
  stopped = 'max_steps'
  try:
    runpy.run_path(os.path.join(code, PUBLIC_ENTRY), run_name='__main__')
  except SystemExit:  # it exits once every budget has its embedding
    stopped = 'every budget reached'
  steps = len(starts)
  if steps <= args.warmup or not end:
    raise RuntimeError(f'the public loop ran {steps} steps, not more than --warmup={args.warmup}')
  timed = end[0] - starts[args.warmup]
  durations = np.diff(starts[args.warmup:] + end)  # each timed step, start to next start
  return {'torch': torch.__version__, 'threads': torch.get_num_threads(), **facts,
          'features': sum(facts['field_dims']), 'steps': steps,
          'timed_steps': steps - args.warmup, 'timed_seconds': timed,
          'steps_per_second': (steps - args.warmup) / timed,
          'median_step_seconds': float(np.median(durations)),
          'step_seconds_percentiles': {str(q): float(np.percentile(durations, q))
                                       for q in (10, 50, 90, 99, 100)},
          'startup_seconds': starts[0] - t_start, 'first_step_seconds': starts[1] - starts[0],
          'stopped': stopped}


def ours_worker(args: argparse.Namespace) -> dict:
  """Runs our prune stage on ``--data`` for about ``--steps`` steps; reads its result."""
  sys.path.insert(0, ROOT)
  import jax
  from pep_jax.data import load_dataset, pipeline
  from pep_jax import experiment
  from pep_jax import workdir as wd

  config = our_data_config(os.path.abspath(args.data), os.path.join(args.workdir, 'cache'))
  config.stage = 'search'
  config.methods = ('pep',)
  # 2 non-zeros, out of reach: no ticket is cut and the loop runs on (1 would mean all: a
  # budget <= 1 is a fraction of the table).
  config.prune.budgets = (2,)
  caveats = []
  if 'steps_per_dispatch' in config.train:
    if args.steps_per_dispatch:
      config.train.steps_per_dispatch = args.steps_per_dispatch
    per_dispatch = int(config.train.steps_per_dispatch)
  else:
    per_dispatch = 1
    if args.steps_per_dispatch not in (0, 1):
      caveats.append(f'this checkout has no train.steps_per_dispatch: '
                     f'--steps-per-dispatch={args.steps_per_dispatch} ignored (1 step per call)')
  data = load_dataset(config.data)  # builds the cache (start-up); run() reads it back
  per_epoch = pipeline.num_batches(len(data.train), config.train.batch_size)
  config.prune.max_epochs = max(1, math.ceil(args.steps / per_epoch))
  workdir = os.path.join(args.workdir, 'run')
  experiment.run(config, workdir)
  result = wd.search_result(workdir, *wd.PRUNE)
  steps, seconds = result['steps'], result['seconds']
  if 'warmup_steps' in result:
    warmup_steps, warmup_seconds = result['warmup_steps'], result['warmup_seconds']
  else:
    warmup_steps, warmup_seconds = 0, 0.0
    caveats.append('prune/result.json has no warmup_steps/warmup_seconds in this checkout: '
                   'steps/s is steps / seconds, the first step\'s compilation included')
  emb = config.embedding
  return {'jax': jax.__version__, 'device': jax.devices()[0].device_kind,
          'field_dims': [int(x) for x in data.field_dims], 'features': data.num_features,
          'rows': len(data.train) + len(data.valid) + len(data.test),
          'train_rows': len(data.train), 'batches_per_epoch': per_epoch,
          'settings': {'model': config.model.name, 'dim': emb.dim, 's_init': emb.s_init,
                       'granularity': emb.granularity, 'gate': emb.gate,
                       'batch_size': config.train.batch_size,
                       **{f'optimizer.{k}': v for k, v in config.optimizer.items()},
                       'prune.budgets': list(config.prune.budgets),
                       'prune.max_epochs': config.prune.max_epochs},
          'steps_per_dispatch': per_dispatch, 'steps': steps, 'seconds': seconds,
          'warmup_steps': warmup_steps, 'warmup_seconds': warmup_seconds,
          'timed_steps': steps - warmup_steps, 'timed_seconds': seconds - warmup_seconds,
          'steps_per_second': (steps - warmup_steps) / (seconds - warmup_seconds),
          'caveats': caveats}


def _jsonable(value):
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def run_worker(side: str, args: argparse.Namespace, workdir: str) -> dict:
  """Runs one side in a fresh Python process; returns its result (exits on failure)."""
  folder = os.path.abspath(os.path.join(workdir, side))
  os.makedirs(folder, exist_ok=True)
  result_path, log_path = os.path.join(folder, 'result.json'), os.path.join(folder, 'log.txt')
  command = [sys.executable, os.path.abspath(__file__), f'--worker={side}',
             f'--result={result_path}', f'--workdir={folder}',
             f'--data={os.path.abspath(args.data)}',
             f'--public-code={os.path.abspath(args.public_code)}', f'--steps={args.steps}',
             f'--warmup={args.warmup}', f'--steps-per-dispatch={args.steps_per_dispatch}',
             f'--torch-threads={args.torch_threads}']
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT,
                                                                  os.environ.get('PYTHONPATH')])))
  print(f'{side}: {args.steps} steps ... (log: {log_path})', flush=True)
  load = os.getloadavg()[0]  # other work on the machine skews both sides
  with open(log_path, 'w') as log:
    code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
  if code != 0 or not os.path.exists(result_path):
    with open(log_path) as f:
      tail = f.read()[-4000:]
    raise SystemExit(f'bench_public.py: the {side} side failed (exit {code}); end of its log:\n'
                     f'{tail}')
  with open(result_path) as f:
    return {**json.load(f), 'load_before': load}


# --------------------------------------------------------------------------- report


def report(args: argparse.Namespace, public: dict, ours: dict) -> dict:
  """Prints the comparison and returns it as the JSON document."""
  ratio = ours['steps_per_second'] / public['steps_per_second']
  bs = public['settings']['batch_size_train']
  m = machine()
  print()
  print(f'machine: {m["platform"]}, {m["processor"]}, {m["cpus"]} CPUs')
  print(f'torch {public["torch"]} (torch.set_num_threads({public["threads"]})); '
        f'jax {ours["jax"]} ({ours["device"]}, XLA on every core)')
  print(f'data: {os.path.abspath(args.data)}: {public["rows"]:,} rows in the public loader, '
        f'{ours["rows"]:,} in ours (rating 3 dropped, label rating > 3); features: public '
        f'{public["features"]:,}, ours {ours["features"]:,} (one extra OOV index per field)')
  s = public['settings']
  print(f'public settings ({PUBLIC_ENTRY}): {s["model"]}, d={s["latent_dim"]}, '
        f's_init={s["threshold_init"]}, {s["threshold_type"]} thresholds, batch {bs}, '
        f'{s["fm_optimizer"]} {s["fm_lr"]}, L2 {s["fm_l2_regularization"]}, '
        f'clip {s["fm_grad_clip"]}')
  o = ours['settings']
  print(f'our settings (configs/movielens_fm.py): {o["model"]}, d={o["dim"]}, '
        f's_init={o["s_init"]}, {o["granularity"]} thresholds, batch {o["batch_size"]}, '
        f'{o["optimizer.name"]} {o["optimizer.learning_rate"]}, L2 {o["optimizer.weight_decay"]} '
        f'(decoupled={o["optimizer.decoupled_weight_decay"]}), clip {o["optimizer.clip_norm"]}; '
        f'{ours["steps_per_dispatch"]} step(s) per dispatch')
  print()
  print(f'{"side":8s} {"steps":>6s} {"timed":>6s} {"seconds":>8s} {"steps/s":>8s} '
        f'{"samples/s":>10s}  excluded')
  if ours['caveats'] and not ours['warmup_steps']:
    ours_excluded = 'nothing (see the caveat)'
  else:
    ours_excluded = f'first call ({ours["warmup_steps"]} steps, {ours["warmup_seconds"]:.2f} s)'
  rows = (('public', public, f'first {args.warmup} steps'), ('ours', ours, ours_excluded))
  for name, side, excluded in rows:
    print(f'{name:8s} {side["steps"]:6d} {side["timed_steps"]:6d} {side["timed_seconds"]:8.2f} '
          f'{side["steps_per_second"]:8.1f} {side["steps_per_second"] * bs:10,.0f}  {excluded}')
  median_ms = 1e3 * public['median_step_seconds']
  print(f'ratio ours/public: {ratio:.2f}x (public median step {median_ms:.1f} ms)')
  print('load average (1 min) before each side: public {:.2f}, ours {:.2f}'.format(
      public['load_before'], ours['load_before']))
  caveats = list(ours['caveats'])
  p99 = 1e3 * public['step_seconds_percentiles']['99']
  if p99 > 10 * median_ms:  # torch's threads wait for a descheduled one at every operation
    caveats.append(f'the public loop stalled: 1% of its steps took over {p99:.0f} ms against a '
                   f'{median_ms:.1f} ms median ({1e3 / median_ms:.0f} steps/s), as torch\'s '
                   f'threads do while other work holds a core; rerun on a quiet machine or '
                   f'with --torch-threads=1')
  for caveat in caveats:
    print(f'caveat: {caveat}')
  return {'torch': public['torch'], 'jax': ours['jax'], 'machine': m,
          'torch_threads': public['threads'], 'device': ours['device'],
          'data': os.path.abspath(args.data), 'steps': args.steps, 'warmup': args.warmup,
          'public': public, 'ours': ours, 'ratio_ours_over_public': ratio, 'caveats': caveats}


def round_ratio(public: dict, ours: dict) -> float:
  return ours['steps_per_second'] / public['steps_per_second']


def median_round(sides: list[tuple[dict, dict]]) -> int:
  """The round whose ratio is the median of the rounds' (the lower middle one of an even
  count): its two sides are the ones the table shows."""
  order = sorted(range(len(sides)), key=lambda r: round_ratio(*sides[r]))
  return order[(len(order) - 1) // 2]


def rounds_summary(sides: list[tuple[dict, dict]]) -> list[dict]:
  """Each round's rates, ratio and load, printed and returned for the JSON."""
  out = [{'public_steps_per_second': p['steps_per_second'],
          'ours_steps_per_second': o['steps_per_second'], 'ratio': round_ratio(p, o),
          'load_before_public': p['load_before'], 'load_before_ours': o['load_before']}
         for p, o in sides]
  if len(out) > 1:
    print(f'{len(out)} rounds, each side in turn; ratios: '
          + ', '.join(f'{r["ratio"]:.2f}x' for r in out)
          + f' (the table shows the median round)')
  return out


def count_our_features(data_dir: str) -> tuple[int, int, list[int]]:
  """Rows, features and field sizes of ``data_dir`` in our loader (cache in a temp dir)."""
  sys.path.insert(0, ROOT)
  from pep_jax.data import load_dataset
  with tempfile.TemporaryDirectory() as cache:
    data = load_dataset(our_data_config(data_dir, cache).data)
    rows = len(data.train) + len(data.valid) + len(data.test)
    return rows, data.num_features, [int(x) for x in data.field_dims]


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--public-code', default='',
                      help='checkout of ssui-liu/learnable-embed-sizes-for-RecSys (engine.py, '
                           f'{PUBLIC_ENTRY})')
  parser.add_argument('--data', default='',
                      help='folder with users.dat, movies.dat, ratings.dat (MovieLens-1M format)')
  parser.add_argument('--make-data', default='',
                      help='write a MovieLens-1M-format folder here first and use it as --data')
  parser.add_argument('--ratings', type=int, default=ML100K_KEPT,
                      help='kept ratings (rating != 3) of the folder --make-data writes')
  parser.add_argument('--steps', type=int, default=3000, help='prune-loop steps of each side')
  parser.add_argument('--warmup', type=int, default=20,
                      help='first steps of the public loop left out of its rate')
  parser.add_argument('--torch-threads', type=int, default=0,
                      help='torch.set_num_threads for the public side; 0: every core')
  parser.add_argument('--steps-per-dispatch', type=int, default=0,
                      help='our train.steps_per_dispatch (where the config has it); 0: its default')
  parser.add_argument('--rounds', type=int, default=3,
                      help='rounds of both sides in turn; the median round is reported (the '
                           'speed of a shared machine drifts between runs)')
  parser.add_argument('--json', default='bench_public.json', help='write the results here')
  parser.add_argument('--workdir', default='',
                      help='where both sides write their outputs (default: a temp dir, removed)')
  parser.add_argument('--worker', choices=('public', 'ours'), help=argparse.SUPPRESS)
  parser.add_argument('--result', default='', help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.worker:
    result = public_worker(args) if args.worker == 'public' else ours_worker(args)
    with open(args.result, 'w') as f:
      json.dump(result, f, indent=2)
    return
  if args.rounds < 1:
    raise SystemExit(f'bench_public.py: --rounds={args.rounds} must be at least 1')
  if args.public_code:
    require_public_packages()
    if not os.path.exists(os.path.join(args.public_code, PUBLIC_ENTRY)):
      raise SystemExit(f'bench_public.py: --public-code={args.public_code} has no {PUBLIC_ENTRY}')
  if args.make_data and args.data:
    raise SystemExit('bench_public.py: give --data or --make-data, not both')
  if args.make_data:
    made = write_movielens(args.make_data, args.ratings)
    args.data = args.make_data
    rows, features, dims = count_our_features(args.data)
    print(f'wrote {args.data}: {made["ratings"]:,} kept ratings + {made["rating_3"]:,} rated 3, '
          f'{made["users"]:,} users, {made["movies"]:,} movies; our loader: {rows:,} rows, '
          f'{features:,} features {dims}')
  if not args.data:
    raise SystemExit('bench_public.py: give --data=DIR (MovieLens-1M files) or --make-data=DIR')
  if not args.public_code:
    if args.make_data:
      return
    raise SystemExit('bench_public.py: give --public-code=DIR (the public PEP checkout)')
  if args.steps <= args.warmup:
    raise SystemExit(f'bench_public.py: --steps={args.steps} must exceed --warmup={args.warmup}')

  sides = []  # (public, ours) of each round
  with tempfile.TemporaryDirectory() as scratch:
    for r in range(args.rounds):
      workdir = os.path.join(args.workdir or scratch, f'round{r}')
      sides.append((run_worker('public', args, workdir), run_worker('ours', args, workdir)))
  doc = report(args, *sides[median_round(sides)])
  doc['rounds'] = rounds_summary(sides)
  with open(args.json, 'w') as f:
    json.dump(doc, f, indent=2)
  print(f'wrote {args.json}')


if __name__ == '__main__':
  main()
