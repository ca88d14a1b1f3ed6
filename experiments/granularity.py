"""The six granularities of the thresholds ``s``: pruning speed and retrained AUC at equal budgets.

    python experiments/granularity.py --workdir=runs/granularity
    python experiments/granularity.py --workdir=runs/gran_ml --config=configs/movielens_fm.py \
        --config.data.dir=/data/ml-1m --config.prune.budgets='(0.5,0.2)'

By default on the embedded synthetic data (``pep_jax.presets.synthetic_analysis_config``). Runs
the whole experiment once per granularity of ``pep_jax.ops.threshold.GRANULARITIES`` (global,
dimension, feature, feature_dimension, field, field_dimension), each in
``--workdir/<granularity>/`` (reused when the command is started again), and writes:

* ``granularity.png``: non-zero parameters against steps while pruning;
* ``granularity.md`` / ``.csv``: per granularity and budget, the step the ticket was cut and its
  retrained test AUC (``-`` where the budget was not reached).
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from pep_jax import analysis, presets
from pep_jax.ops.threshold import GRANULARITIES
from pep_jax.workdir import find_tickets

config_flags.DEFINE_config_file('config', None, 'Experiment config (default: synthetic data).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder of the runs, figure and table.')
flags.DEFINE_list('granularities', list(GRANULARITIES), 'Granularities to compare.')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config or presets.synthetic_analysis_config()
  unpruned = analysis.run_uniform(config, os.path.join(FLAGS.workdir, 'ue'),
                                  (config.embedding.dim,))[0]
  rows, curves = [], {}
  for granularity in FLAGS.granularities:
    workdir = os.path.join(FLAGS.workdir, granularity)
    out = analysis.run_variant(analysis.variant(config, **{'embedding.granularity': granularity}),
                               workdir)
    curves[granularity] = analysis.prune_curve(workdir)
    tickets = {t['budget']: t for t in find_tickets(workdir)}
    retrained = {r['budget']: r for r in out['rows'] if r['method'] == 'pep'}
    for budget in out['prune']['budgets']:
      row = {'granularity': granularity, 'budget': budget,
             'ticket_step': tickets[budget]['step'] if budget in tickets else None,
             'final_nonzeros': out['prune']['final_nonzeros']}
      if budget in retrained:
        row.update(nonzeros=retrained[budget]['nonzeros'],
                   test_auc=retrained[budget]['test_auc'])
      rows.append(row)

  plt = analysis.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for granularity, (steps, counts) in curves.items():
    ax.plot(steps, counts, label=granularity)
  for budget in sorted({r['budget'] for r in rows}):
    ax.axhline(budget, color='gray', linestyle=':', linewidth=0.8)
  ax.set_yscale('log')
  ax.set_xlabel('step')
  ax.set_ylabel('non-zero embedding parameters')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.workdir, 'granularity.png'), dpi=100)
  plt.close(fig)
  notes = f'Uniform model at d={unpruned["dim"]}: test AUC {unpruned["test_auc"]:.4f}.'
  columns = ['granularity', 'budget', 'ticket_step', 'nonzeros', 'test_auc', 'final_nonzeros']
  print(analysis.write_tables(rows, columns, FLAGS.workdir, 'granularity',
                              f'Threshold granularities ({config.data.name}, '
                              f'{config.model.name})', notes))


if __name__ == '__main__':
  app.run(main)
