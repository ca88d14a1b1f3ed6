"""The lottery-ticket ablation: rewind vs random re-initialisation vs no retraining vs unpruned.

    python experiments/lottery_ticket.py --workdir=runs/lottery_ticket
    python experiments/lottery_ticket.py --workdir=runs/lt_ml --config=configs/movielens_fm.py \
        --config.data.dir=/data/ml-1m

By default on the embedded synthetic data (``pep_jax.presets.synthetic_analysis_config``). At
each budget of ``prune.budgets`` it compares, on the test split:

* ``rewind``: the ticket retrained from ``V0 * mask`` (PEP's default);
* ``random``: the ticket retrained from a fresh random table times the mask;
* ``no retraining``: the pruning model as it is at the ticket's step;
* ``unpruned``: the uniform model at the base width (``ue_d<dim>``).

Writes ``lottery_ticket.png`` (test AUC against non-zeros) and ``lottery_ticket.md`` / ``.csv``
into ``--workdir``, whose sub-folder ``run/`` holds the experiment and is reused when the
command is started again. ``--results=docs/results/lottery_ticket.json`` also records the table,
the data's size and the machine there, for ``docs/analyses.md`` (``experiments/readme_results.py``).
"""

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from pep_jax import analysis, presets
from pep_jax.data import load_dataset
from pep_jax.workdir import find_tickets

config_flags.DEFINE_config_file('config', None, 'Experiment config (default: synthetic data).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder of the runs, figure and table.')
flags.DEFINE_string('results', None, 'A JSON file to record the table in, with the data and '
                    'the machine (docs/results/lottery_ticket.json).')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config or presets.synthetic_analysis_config()
  dim = int(config.embedding.dim)
  config = analysis.variant(config, **{'ue.dims': (dim,)})
  run_dir = os.path.join(FLAGS.workdir, 'run')
  out = analysis.run_variant(config, run_dir, uniform=True)
  if not out['prune']['reached']:
    raise SystemExit(f'no budget of {out["prune"]["budgets"]} was reached (non-zeros at the '
                     f'end: {out["prune"]["final_nonzeros"]}); raise prune.max_epochs, or '
                     'choose larger budgets')
  random_rows = analysis.run_random_reinit(config, run_dir)
  data = load_dataset(config.data)
  unpruned = [r for r in out['rows'] if r['method'] == 'ue'][0]

  scored_path = os.path.join(FLAGS.workdir, 'no_retraining.json')
  scored = {}
  if os.path.exists(scored_path):
    with open(scored_path) as f:
      scored = {int(k): v for k, v in json.load(f).items()}
  rows = []
  for ticket in find_tickets(run_dir):
    b = ticket['budget']
    if b not in scored:
      scored[b] = analysis.score_pruned_ticket(config, data, run_dir, ticket)
      analysis.write_json(scored_path, scored)
    by = {r['method']: r for r in random_rows if r.get('budget') == b}
    rows.append({'budget': b, 'ticket_step': ticket['step'], 'nonzeros': ticket['nonzeros'],
                 'rewind': by['pep']['test_auc'], 'random': by['pep_random']['test_auc'],
                 'no_retraining': scored[b]['test_auc'], 'unpruned': unpruned['test_auc'],
                 'unpruned_nonzeros': unpruned['nonzeros']})

  plt = analysis.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  x = [r['nonzeros'] for r in rows]
  for key, style in (('rewind', 'o-'), ('random', '^-'), ('no_retraining', 'v-')):
    ax.plot(x, [r[key] for r in rows], style, label=key.replace('_', ' '))
  ax.axhline(unpruned['test_auc'], color='gray', linestyle='--', label=f'unpruned (d={dim})')
  ax.set_xscale('log')
  ax.set_xlabel('embedding parameters (non-zeros)')
  ax.set_ylabel('test AUC')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.workdir, 'lottery_ticket.png'), dpi=100)
  plt.close(fig)
  columns = ['budget', 'ticket_step', 'nonzeros', 'rewind', 'random', 'no_retraining',
             'unpruned', 'unpruned_nonzeros']
  print(analysis.write_tables(rows, columns, FLAGS.workdir, 'lottery_ticket',
                              f'Test AUC at each budget ({config.data.name}, {config.model.name})'))
  if FLAGS.results:
    analysis.write_results(FLAGS.results, {
        'data': analysis.describe_data(data), 'model': config.model.name, 'dim': dim,
        's_init': float(config.embedding.s_init), 'entries': int(sum(data.field_dims)) * dim,
        'batch_size': int(config.train.batch_size),
        'prune_max_epochs': int(config.prune.max_epochs),
        'retrain_max_epochs': int(config.train.max_epochs),
        'teacher_test_auc': data.info.get('teacher_test_auc'), 'rows': rows})


if __name__ == '__main__':
  app.run(main)
