"""Every config file loads, validates and carries the public scripts' hyper-parameters."""

import glob
import importlib.util
import os

import pytest

from pep_jax import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))


def load(path, arg=None):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize('path', FILES, ids=os.path.basename)
def test_config_validates_and_documents_its_command(path):
  config = load(path)
  config_lib.validate(config)
  with open(path) as f:
    assert f'--config=configs/{os.path.basename(path)}' in f.read()


def test_paper_settings():
  criteo = load(os.path.join(ROOT, 'configs', 'criteo_fm.py'))
  assert (criteo.embedding.dim, criteo.embedding.s_init) == (24, -150.0)
  assert tuple(criteo.prune.budgets) == (50_000, 30_000, 20_000)
  assert criteo.embedding.granularity == 'feature_dimension'
  assert (criteo.optimizer.learning_rate, criteo.optimizer.weight_decay) == (1e-3, 1e-5)
  assert not criteo.optimizer.decoupled_weight_decay and criteo.optimizer.clip_norm == 100
  assert (criteo.train.batch_size, criteo.seed, criteo.train.patience) == (1024, 42, 5)
  ml = load(os.path.join(ROOT, 'configs', 'movielens_deepfm.py'))
  assert (ml.embedding.dim, ml.embedding.s_init, tuple(ml.model.mlp_dims)) == (32, -15.0,
                                                                              (100, 100))
  assert load(os.path.join(ROOT, 'configs', 'avazu_autoint.py')).model.name == 'autoint_plus'
  assert load(os.path.join(ROOT, 'configs', 'criteo_fm.py'), 'small').train.max_epochs == 3


def test_validate_names_the_key():
  config = config_lib.default_config()
  config.train.patience = 0
  with pytest.raises(ValueError, match='train.patience'):
    config_lib.validate(config)
  config = config_lib.default_config()
  config.embedding.granularity = 'rows'
  with pytest.raises(ValueError, match='embedding.granularity'):
    config_lib.validate(config)


def test_locked_config_rejects_unknown_keys():
  config = config_lib.default_config()
  config.lock()
  with pytest.raises(AttributeError, match='batchsize'):
    config.train.batchsize = 3
