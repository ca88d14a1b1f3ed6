"""Field-interaction matrices of the uniform model and of PEP tickets (the paper's Figure 5).

    python experiments/interactions.py --workdir=runs/interactions
    python experiments/interactions.py --workdir=runs/inter_demo --config=configs/demo.py \
        --run_dir=runs/demo        # read the finished main run of that config instead

By default on the embedded synthetic data (``pep_jax.presets.synthetic_analysis_config``): runs
(or reuses) the experiment in ``--workdir/run`` (prune, retrain tickets, uniform model at the
base width), restores the best checkpoints of ``retrain/ue_d<dim>`` and every
``retrain/pep_b<budget>``, and computes ``M[i, j] = mean_r |<e_i(r), e_j(r)>|`` over ``--rows``
test rows. Writes ``interactions.png`` (one heat map per model, the diagonal left blank) and
``interactions.md`` / ``.csv``: the mean off-diagonal interaction of each model and, on
synthetic data, the share of it carried by pairs that involve a noise field and the correlation
of its pairs of informative fields with the uniform model's.
``--results=docs/results/interactions.json`` also records the table, the data's size and the
machine there, for ``docs/analyses.md`` (``experiments/readme_results.py``).
"""

import os

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from pep_jax import analysis, presets
from pep_jax.data import load_dataset
from pep_jax.methods import pep, ue
from pep_jax.workdir import find_tickets

config_flags.DEFINE_config_file('config', None, 'Experiment config (default: synthetic data).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder of the figure and table (and of the run).')
flags.DEFINE_string('run_dir', None, 'A finished work directory of --config to read instead '
                    'of running the experiment in --workdir/run.')
flags.DEFINE_integer('rows', 20_000, 'Test rows the interactions are averaged over.')
flags.DEFINE_string('results', None, 'A JSON file to record the table in, with the data and '
                    'the machine (docs/results/interactions.json).')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config or presets.synthetic_analysis_config()
  dim = int(config.embedding.dim)
  run_dir = FLAGS.run_dir
  if run_dir is None:
    run_dir = os.path.join(FLAGS.workdir, 'run')
    analysis.run_variant(analysis.variant(config, **{'ue.dims': (dim,)}), run_dir, uniform=True)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  data = load_dataset(config.data)
  ids = data.test.ids[:FLAGS.rows]
  runs = [(f'uniform d={dim}', ue.candidate(dim).run, None)]
  runs += [(f'PEP {t["nonzeros"]:,} non-zeros', pep.run_name('rewind', t['budget']), t['budget'])
           for t in find_tickets(run_dir)]
  matrices, rows = [], []
  noise = None
  if data.info.get('intrinsic_dims'):
    noise = np.asarray(data.info['intrinsic_dims']) == 0
  off = ~np.eye(data.num_fields, dtype=bool)
  for label, run, budget in runs:
    table = analysis.best_effective_table(config, data, run_dir, run)
    matrix = analysis.interaction_matrix(table, ids, data.field_dims)
    matrices.append((label, matrix))
    row = {'model': label, 'run': run, 'budget': budget,
           'nonzeros': int(np.count_nonzero(table)),
           'mean_interaction': float(matrix[off].mean())}
    if noise is not None:
      with_noise = (noise[:, None] | noise[None, :]) & off
      row['noise_pair_share'] = float(matrix[with_noise].sum() / matrix[off].sum())
    rows.append(row)
    np.save(os.path.join(FLAGS.workdir, f'interactions_{run}.npy'), matrix)
  if noise is not None:  # how closely each model keeps the first model's informative pattern
    informative = (~noise[:, None] & ~noise[None, :]) & off
    reference = matrices[0][1][informative]
    for row, (_, matrix) in zip(rows, matrices):
      row['informative_correlation'] = float(np.corrcoef(reference, matrix[informative])[0, 1])

  plt = analysis.pyplot()
  fig, axes = plt.subplots(1, len(matrices), figsize=(3.6 * len(matrices), 3.4), squeeze=False)
  for ax, (label, matrix) in zip(axes[0], matrices):
    shown = np.where(off, matrix, np.nan)
    image = ax.imshow(shown, cmap='viridis')
    ax.set_title(label, fontsize=9)
    ax.set_xlabel('field')
    ax.set_ylabel('field')
    fig.colorbar(image, ax=ax, fraction=0.046)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.workdir, 'interactions.png'), dpi=100)
  plt.close(fig)
  columns = ['model', 'run', 'nonzeros', 'mean_interaction'] + (
      ['noise_pair_share', 'informative_correlation'] if noise is not None else [])
  notes = ''
  if noise is not None:
    share = (noise[:, None] | noise[None, :])[off].mean()
    notes = (f'noise_pair_share: the part of the off-diagonal total carried by field pairs that '
             f'involve a noise field ({share:.2f} of the pairs). informative_correlation: '
             f'Pearson\'s correlation of the pairs of informative fields with {runs[0][0]}\'s.')
  print(analysis.write_tables(rows, columns, FLAGS.workdir, 'interactions',
                              f'Field interactions ({config.data.name}, {config.model.name})',
                              notes))
  if FLAGS.results:
    analysis.write_results(FLAGS.results, {
        'data': analysis.describe_data(data), 'model': config.model.name, 'dim': dim,
        'entries': int(sum(data.field_dims)) * dim, 'averaged_over_rows': int(len(ids)),
        'noise_pair_fraction': None if noise is None else float(
            (noise[:, None] | noise[None, :])[off].mean()),
        'rows': rows})


if __name__ == '__main__':
  app.run(main)
