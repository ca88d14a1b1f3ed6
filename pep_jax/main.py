"""Command line: ``python -m pep_jax.main --config=configs/demo.py --workdir=runs/demo``.

Overrides come after the config: ``--config.prune.budgets='(0.5,0.2)'``,
``--config.methods='("ue",)'``. The config is locked, so a mistyped key fails instead of being ignored.
"""

from absl import flags
from ml_collections import config_flags

from pep_jax import cli
from pep_jax.parallel import initialize_distributed
from pep_jax import experiment

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, tickets, metrics and summary.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  cli.exit_if_argv(argv)
  import jax
  initialize_distributed()
  if jax.process_index() == 0:
    print(f'JAX devices: {jax.devices()} (process {jax.process_index()} of '
          f'{jax.process_count()})')
  cli.exit_on_user_error(experiment.run, FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  cli.run(main)
