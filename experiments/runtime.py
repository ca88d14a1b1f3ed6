"""Seconds per training epoch of each method and model (the paper's Table 2 on this code).

    python experiments/runtime.py --workdir=runs/runtime                 # 100 steps each
    python experiments/runtime.py --workdir=runs/runtime --max_steps=0   # whole epochs
    python experiments/runtime.py --workdir=runs/runtime_criteo --config=configs/criteo_fm.py \
        --config.data.dir=/data/criteo --max_steps=200

By default on the embedded synthetic data (``pep_jax.presets.synthetic_analysis_config``: 400k
training rows, batch 1024). For every model of ``--models`` it times the model with uniform
embeddings (``base``) and the search step of every method that declares one
(``pep_jax.methods.base.Method.search_stage``), ``--max_steps`` train steps each (compilation
excluded), extrapolated to one epoch; ``--max_steps=0`` times the whole epoch. Everything
is measured in one run and written to ``runtime.md`` / ``.csv`` and ``runtime.json`` (with the
machine) in ``--workdir``.
"""

import dataclasses
import itertools
import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from pep_jax import analysis, presets
from pep_jax.data import load_dataset
from pep_jax.methods import METHODS
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


def timed_stages(config, data) -> list[tuple[str, object, object, dict]]:
  """``(name, stage, state, constants)`` of every step timed: ``base`` (the model with uniform
  embeddings) and the search step of every method that has one (PEP's pruning stage with its
  count, DartsEmb's bi-level supernet step, ...), in registry order."""
  base = build_stage(config, data, 'plain')
  out = [('base', base, base.initial_state(), {})]
  ctx = Context(config, data, '', None)
  for method in METHODS.values():
    if method.search_stage is None:
      continue
    stage, batch_map = method.search_stage(ctx)
    if batch_map is not None:  # per-step inputs are part of what is timed, as in the search
      steps, train_step = itertools.count(1), stage.train_step
      stage = dataclasses.replace(stage, steps=dataclasses.replace(
          stage.steps, train_step=lambda state, batch, c, f=train_step, m=batch_map:
          f(state, m(next(steps), batch), c)))
    out.append((method.name, stage, stage.initial_state(), {}))
  return out


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
    names = []
    for name, stage, state, constants in timed_stages(variant, data):
      timing = analysis.seconds_per_epoch(stage, state, constants, data.train,
                                          config.train.batch_size, max_steps=FLAGS.max_steps,
                                          seed=config.seed)
      row[f'{name}_s_per_epoch'] = timing['seconds_per_epoch']
      row[f'{name}_ms_per_step'] = timing['ms_per_step']
      row['steps_timed'], row['steps_per_epoch'] = timing['steps_timed'], timing['steps_per_epoch']
      print(f'{model} {name}: {timing["seconds_per_epoch"]:.2f} s/epoch '
            f'({timing["ms_per_step"]:.2f} ms/step)')
      names.append(name)
    rows.append(row)
  columns = ['model'] + [f'{n}_s_per_epoch' for n in names] + [
      f'{n}_ms_per_step' for n in names] + ['steps_timed', 'steps_per_epoch']
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
