"""``configs/compare.py:movielens`` on a small MovieLens-1M-format folder: every method, the
budget bands and the summary's reasons where a method cannot reach one."""

import importlib
import json

import pytest

from configs import compare
from pep_jax import experiment
from pep_jax import methods as methods_lib
from pep_jax import workdir as wd
from pep_jax.errors import MissingError



def write_movielens(folder: str, ratings: int) -> None:
  importlib.import_module('experiments.bench_public').write_movielens(folder, ratings=ratings)


def test_every_real_data_variant_needs_its_data_dir(tmp_path):
  for dataset in compare.REAL_DATA:
    config = compare.get_config(dataset)
    assert config.data.name == dataset and tuple(config.methods) == tuple(methods_lib.METHODS)
    assert config.prune.budgets == config.sseds.budgets == compare.BUDGETS
    with pytest.raises(MissingError, match="data.dir"):
      experiment.run(config, str(tmp_path / dataset))


@pytest.mark.slow
def test_movielens_variant_compares_every_method_on_a_small_folder(tmp_path):
  raw = str(tmp_path / 'ml')
  write_movielens(raw, ratings=6000)
  config = compare.get_config('movielens')
  config.data.dir = raw
  # One seed and the smallest model of each grid (the variant's settings otherwise), so each
  # method has a model in the smallest bands it can reach, in about a minute.
  config.seeds = ()
  config.train.batch_size = 256  # 19 steps an epoch: PEP prunes within the variant's 300 epochs
  config.train.max_epochs = 2
  config.ue.dims = (32, 1)
  config.mde.alphas = (1.0,)
  config.mgqe.subspaces = (1,)
  config.mgqe.centroids = (16,)
  config.dartsemb.candidate_sets = ((1, 2),)
  config.dartsemb.search_epochs = 1
  config.train.parallel_runs = 1
  workdir = str(tmp_path / 'run')
  rows = experiment.run(config, workdir)
  methods = {r['method'] for r in rows}
  assert set(methods_lib.METHODS) <= methods
  entries = rows[0]['params']  # ue d=32 comes first: the whole table
  assert rows[0]['method'] == 'ue' and rows[0]['setting'] == 'd=32'
  for row in rows:
    if row['method'] in ('magnitude', 'random', 'sseds') or (
        row['method'] == 'pep' and row.get('budget')):
      assert row['params'] <= row['budget']
    if row['method'] != 'teacher':
      assert 0.4 < row['test_auc'] < 1 and row['params'] <= entries
  with open(wd.summary_paths(workdir)['md']) as f:
    summary = f.read()
  # UE, MDE, MGQE and DartsEmb keep an entry per feature (1/32 of the table is above 3%).
  for label in ('UE', 'MDE', 'DartsEmb'):
    assert f'- {label}: no model in 0-3% of the uniform table' in summary
  with open(wd.summary_paths(workdir)['comparison']) as f:
    comparison = json.load(f)
  qr_rows = [r for r in comparison if r['method'] == 'qr']
  assert qr_rows and all(r['params'] <= 0.3 * entries for r in qr_rows)
