"""Builds the columnar cache of a real dataset ahead of training.

    python -m pep_jax.data.prepare --config=configs/criteo_fm.py --config.data.dir=/data/criteo

Prints the cache folder and its summary (field dims, rows, bad lines). ``--force`` rebuilds.
"""

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from pep_jax import cli
from pep_jax.data import cache, real, registry

_CONFIG = config_flags.DEFINE_config_file('config', None, 'experiment config file',
                                          lock_config=True)
_FORCE = flags.DEFINE_bool('force', False, 'rebuild even if a valid cache exists')


def main(argv):
  cli.exit_if_argv(argv)
  data_config = _CONFIG.value.data
  if not cli.exit_on_user_error(registry.dataset, data_config.name).FILES:
    raise app.UsageError(f'config key data.name is {data_config.name}: there is nothing to '
                         'prepare')
  folder = cli.exit_on_user_error(real.prepare, data_config, force=_FORCE.value)
  with open(os.path.join(folder, 'meta.json')) as f:
    meta = json.load(f)
  logging.info('cache ready: %s', folder)
  print(f'cache: {folder}')
  print(cache.summary(meta))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  cli.run(main)
