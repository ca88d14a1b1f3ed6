"""Seconds per training epoch of each method and model (the paper's Table 2 on this code).

    python experiments/runtime.py --workdir=runs/runtime                 # 100 steps each
    python experiments/runtime.py --workdir=runs/runtime --max_steps=0   # whole epochs
    python experiments/runtime.py --workdir=runs/runtime_criteo --config=configs/criteo_fm.py \
        --config.data.dir=/data/criteo --max_steps=200

By default on the embedded synthetic data (``pep_jax.presets.synthetic_analysis_config``: 400k
training rows, batch 1024). For every model of ``--models`` and every method of ``METHODS`` it
builds the method's training stage and times ``--max_steps`` train steps (compilation
excluded), extrapolated to one epoch; ``--max_steps=0`` times the whole epoch. Everything
is measured in one run and written to ``runtime.md`` / ``.csv`` and ``runtime.json`` (with the
machine) in ``--workdir``.

A method is one entry of ``METHODS``: a name and a function giving the stage, initial state and
constants its training step runs with.
"""

import dataclasses
import itertools
import json
import os
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from pep_jax import analysis, presets
from pep_jax.data import load_dataset
from pep_jax.methods import dartsemb
from pep_jax.methods.base import Context
from pep_jax.train.setup import build_stage

config_flags.DEFINE_config_file('config', None, 'Experiment config (default: synthetic data).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder of the table and JSON.')
flags.DEFINE_list('models', ['fm', 'deepfm', 'autoint_plus'], 'Models (config key model.name).')
flags.DEFINE_integer('max_steps', 100, 'Steps timed per method; the epoch is extrapolated '
                     'from their mean (0: time the whole epoch).')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Method:
  """A method whose training step is timed.

  ``prepare(config, data) -> (stage, state, constants)`` builds what its step runs with.
  """

  name: str
  prepare: Callable


def _stage_of(kind: str) -> Callable:
  def prepare(config, data):
    stage = build_stage(config, data, kind)
    return stage, stage.initial_state(), {}
  return prepare


def _dartsemb_search(config, data):
  """DartsEmb's search step (weights on a training batch, architecture on a validation batch),
  over the first candidate set of ``dartsemb.candidate_sets``; adding the validation rows to
  each batch is part of what is timed, as in the search loop."""
  stage, add_valid = dartsemb.search_stage(Context(config, data, '', None),
                                           config.dartsemb.candidate_sets[0])
  steps, train_step = itertools.count(1), stage.train_step
  timed = dataclasses.replace(stage, steps=dataclasses.replace(
      stage.steps,
      train_step=lambda state, batch, c: train_step(state, add_valid(next(steps), batch), c)))
  return timed, stage.initial_state(), {}


METHODS = [
    Method('base', _stage_of('plain')),  # the model with uniform embeddings
    Method('pep', _stage_of('pep')),  # PEP's pruning stage (thresholds trained, count read)
    Method('dartsemb', _dartsemb_search),  # DartsEmb's search (supernet, bi-level steps)
]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config or presets.synthetic_analysis_config()
  data = load_dataset(config.data)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  rows = []
  for model in FLAGS.models:
    variant = analysis.variant(config, **{'model.name': model})
    row = {'model': model}
    for method in METHODS:
      stage, state, constants = method.prepare(variant, data)
      timing = analysis.seconds_per_epoch(stage, state, constants, data.train,
                                          config.train.batch_size, max_steps=FLAGS.max_steps,
                                          seed=config.seed)
      row[f'{method.name}_s_per_epoch'] = timing['seconds_per_epoch']
      row[f'{method.name}_ms_per_step'] = timing['ms_per_step']
      row['steps_timed'], row['steps_per_epoch'] = timing['steps_timed'], timing['steps_per_epoch']
      print(f'{model} {method.name}: {timing["seconds_per_epoch"]:.2f} s/epoch '
            f'({timing["ms_per_step"]:.2f} ms/step)')
    rows.append(row)
  columns = ['model'] + [f'{m.name}_s_per_epoch' for m in METHODS] + [
      f'{m.name}_ms_per_step' for m in METHODS] + ['steps_timed', 'steps_per_epoch']
  machine = analysis.machine()
  with open(os.path.join(FLAGS.workdir, 'runtime.json'), 'w') as f:
    json.dump({'machine': machine, 'data': config.data.name, 'dim': config.embedding.dim,
               'batch_size': config.train.batch_size, 'rows': rows}, f, indent=2)
  print(analysis.write_tables(
      rows, columns, FLAGS.workdir, 'runtime',
      f'Seconds per epoch ({config.data.name}, d={config.embedding.dim}, '
      f'batch {config.train.batch_size})',
      f'Measured on {machine["cpus"]} CPU cores ({machine["device"]}, {machine["platform"]}), '
      f'JAX {machine["jax"]}, load average {machine["load_average_1min"]:.1f} at the end.'))


if __name__ == '__main__':
  app.run(main)
