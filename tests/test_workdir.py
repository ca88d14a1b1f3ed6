"""The work directory: one config per folder, documents of the right shape, runs found by
their record. Everything here reads and writes small files; nothing trains."""

import json
import os

import pytest

from configs import demo
from pep_jax import workdir as wd
from pep_jax.errors import ConfigError, InputError, MissingError


def test_a_config_is_recorded_then_a_different_one_refused(tmp_path):
  root = str(tmp_path)
  config = demo.get_config('tiny')
  wd.check_config(config, root, ('stage',))
  saved = json.load(open(wd.config_path(root)))
  assert saved['optimizer.learning_rate'] == config.optimizer.learning_rate
  config.stage = 'retrain'
  wd.check_config(config, root, ('stage',))  # a resumable key may change
  config.optimizer.learning_rate = 0.5
  with pytest.raises(ConfigError, match=r'optimizer.learning_rate: 0.001 -> 0.5'):
    wd.check_config(config, root, ('stage',))


def test_runs_without_their_config_are_refused(tmp_path):
  """A folder holding runs but no config.json: nothing says which config made them."""
  root = str(tmp_path)
  os.makedirs(wd.run_dir(root, 'ue_d8'))
  with pytest.raises(ConfigError, match='config.json is missing, but .* holds retrain'):
    wd.check_config(demo.get_config('tiny'), root, ())
  assert not os.path.exists(wd.config_path(root))  # nothing was recorded


@pytest.mark.parametrize('text, message', [
    ('[]', 'holds a JSON list, expected a dict'),
    ('{"a": ', 'is not valid JSON'),
])
def test_a_config_json_of_the_wrong_shape_is_named(tmp_path, text, message):
  root = str(tmp_path)
  with open(wd.config_path(root), 'w') as f:
    f.write(text)
  with pytest.raises(InputError, match=message) as error:
    wd.check_config(demo.get_config('tiny'), root, ())
  assert wd.config_path(root) in str(error.value)
  with pytest.raises(InputError, match=message):
    wd.read_config(root)


def test_a_result_without_its_keys_is_named(tmp_path):
  root = str(tmp_path)
  os.makedirs(wd.run_dir(root, 'ue_d8'))
  path = os.path.join(wd.run_dir(root, 'ue_d8'), 'result.json')
  with open(path, 'w') as f:
    json.dump({'test_auc': 0.7}, f)
  with pytest.raises(InputError, match="lacks the key 'best_epoch'") as error:
    wd.result(root, 'ue_d8')
  assert path in str(error.value)
  with open(path, 'w') as f:
    json.dump([1, 2], f)
  with pytest.raises(InputError, match='holds a JSON list'):
    wd.result(root, 'ue_d8')


def test_a_missing_work_directory_config_is_a_missing_error(tmp_path):
  with pytest.raises(MissingError, match='not a pep_jax work directory'):
    wd.read_config(str(tmp_path))


def test_the_best_run_of_a_series(tmp_path):
  """By validation AUC, among finished runs of that series only: a randomly re-initialised
  ticket (``pep_random``) is not a ``pep`` run, with or without a run record."""
  root = str(tmp_path)
  for run, auc in (('pep_b100', 0.70), ('pep_b50', 0.72), ('pep_random_b50', 0.80),
                   ('ue_d8', 0.90)):
    wd.finish(root, run, {'best_epoch': 0, 'valid_auc': auc})
  os.makedirs(wd.run_dir(root, 'pep_b10'))  # not finished
  assert wd.best_run(root, 'pep') == 'pep_b50'
  assert wd.best_run(root, 'pep_random') == 'pep_random_b50'
  wd.write_run_record(root, 'pep_random_b50', {
      'method': 'pep', 'candidate': {'method': 'pep', 'series': 'pep_random'}})
  assert wd.best_run(root, 'pep') == 'pep_b50'
  with pytest.raises(MissingError, match='no finished sseds run'):
    wd.best_run(root, 'sseds')


def test_results_set_aside_count_as_finished(tmp_path):
  root = str(tmp_path)
  wd.finish(root, 'ue_d8', {'best_epoch': 1})
  wd.set_aside_results(root)
  assert wd.result(root, 'ue_d8') is None and wd.was_finished(root, 'ue_d8')
  assert wd.finished_runs(root) == []
