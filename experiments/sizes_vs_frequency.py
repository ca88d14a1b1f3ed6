"""Learned embedding sizes against feature frequency (the paper's Figure 6).

    python experiments/sizes_vs_frequency.py --workdir=runs/sizes_vs_frequency
    python experiments/sizes_vs_frequency.py --workdir=runs/sizes_ml \
        --config=configs/movielens_fm.py --config.data.dir=/data/ml-1m

By default on the embedded synthetic data (``pep_jax.presets.synthetic_analysis_config``). Prunes
as the prune stage does (same batches, same seed) until the smallest budget, taking a snapshot
of every feature's size every ``--every_steps`` steps, and writes into ``--workdir``:

* ``sparsity_by_frequency.png``: the sparsity of each feature-frequency group over training
  (features ranked by their count in the training split, ``--groups`` equal-size groups);
* ``size_vs_frequency.png``: every feature's final size against its frequency, and, on
  synthetic data, each field's mean size against its planted intrinsic dimension;
* ``sizes_vs_frequency.md`` / ``.csv``: per field: vocabulary, intrinsic dimension, mean count
  and mean final size; the notes give Spearman's rank correlations.

The snapshots are kept in ``snapshots.npz`` and reused when the command is started again.
``--results=docs/results/sizes_vs_frequency.json`` also records the groups' sparsity at every
snapshot, the correlations, the table, the data's size and the machine there, for
``docs/analyses.md`` (``experiments/readme_results.py``).
"""

import os

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from pep_jax import analysis, presets
from pep_jax.data import load_dataset
from pep_jax.metrics import spearman

config_flags.DEFINE_config_file('config', None, 'Experiment config (default: synthetic data).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder of the snapshots, figures and table.')
flags.DEFINE_integer('every_steps', 250, 'Steps between two snapshots of the sizes.')
flags.DEFINE_integer('groups', 5, 'Feature-frequency groups.')
flags.DEFINE_string('results', None, 'A JSON file to record the figures in, with the data and '
                    'the machine (docs/results/sizes_vs_frequency.json).')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config or presets.synthetic_analysis_config()
  data = load_dataset(config.data)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  path = os.path.join(FLAGS.workdir, 'snapshots.npz')
  if os.path.exists(path):
    saved = np.load(path)
    steps, sizes = saved['steps'], saved['sizes']
  else:
    steps, sizes = analysis.size_snapshots(config, data, FLAGS.every_steps)
    np.savez(path, steps=steps, sizes=sizes)
  dim = int(config.embedding.dim)
  counts = analysis.feature_counts(data.train.ids, data.field_dims)
  groups = analysis.frequency_groups(counts, FLAGS.groups)
  final = sizes[-1].astype(np.float64)
  intrinsic = data.info.get('intrinsic_dims')

  plt = analysis.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  sparsity = np.stack([analysis.group_sparsity(s, groups, FLAGS.groups, dim) for s in sizes])
  for g in range(FLAGS.groups):
    lo, hi = counts[groups == g].min(), counts[groups == g].max()
    ax.plot(steps, sparsity[:, g], label=f'group {g + 1}: {lo:,}-{hi:,} occurrences')
  ax.set_xlabel('step')
  ax.set_ylabel('sparsity (fraction of zero entries)')
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.workdir, 'sparsity_by_frequency.png'), dpi=100)
  plt.close(fig)

  field_sizes = analysis.field_mean_sizes(final, data.field_dims)
  fig, axes = plt.subplots(1, 2 if intrinsic else 1, figsize=(10 if intrinsic else 5, 4),
                           squeeze=False)
  ax = axes[0, 0]
  ax.scatter(np.maximum(counts, 0.8), final, s=3, alpha=0.3)
  ax.set_xscale('log')
  ax.set_xlabel('feature frequency (training rows)')
  ax.set_ylabel(f'learned size (of {dim})')
  ax.grid(True, alpha=0.3)
  if intrinsic:
    ax = axes[0, 1]
    ax.scatter(intrinsic, field_sizes)
    ax.set_xlabel('planted intrinsic dimension of the field (0 = noise)')
    ax.set_ylabel('mean learned size of its features')
    ax.grid(True, alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.workdir, 'size_vs_frequency.png'), dpi=100)
  plt.close(fig)

  fields = np.repeat(np.arange(data.num_fields), data.field_dims)
  rows = []
  for f, name in enumerate(data.field_names):
    rows.append({'field': name, 'vocabulary': int(data.field_dims[f]),
                 'intrinsic_dim': intrinsic[f] if intrinsic else None,
                 'mean_count': float(counts[fields == f].mean()),
                 'mean_size': float(field_sizes[f])})
  correlations = {'size_vs_frequency': float(spearman(final, counts))}
  notes = [f'Sizes at step {int(steps[-1])} ({int(final.sum()):,} non-zeros of '
           f'{final.size * dim:,}).',
           '- Spearman, feature size vs feature frequency: '
           f'{correlations["size_vs_frequency"]:.3f}']
  if intrinsic:
    planted = np.asarray(intrinsic)
    correlations['size_vs_field_intrinsic'] = float(spearman(final, planted[fields]))
    correlations['field_size_vs_intrinsic'] = float(spearman(field_sizes, planted))
    notes += [f'- Spearman, feature size vs its field\'s intrinsic dimension: '
              f'{correlations["size_vs_field_intrinsic"]:.3f}',
              f'- Spearman, field mean size vs intrinsic dimension: '
              f'{correlations["field_size_vs_intrinsic"]:.3f}']
  columns = ['field', 'vocabulary', 'intrinsic_dim', 'mean_count', 'mean_size']
  print(analysis.write_tables(rows, columns, FLAGS.workdir, 'sizes_vs_frequency',
                              f'Learned sizes ({config.data.name}, {config.model.name})',
                              '\n'.join(notes)))
  print('\n'.join(notes))
  if FLAGS.results:
    analysis.write_results(FLAGS.results, {
        'data': analysis.describe_data(data), 'model': config.model.name, 'dim': dim,
        'budgets': analysis.resolve_budgets(config.prune.budgets, final.size * dim,
                                            'prune.budgets'),
        'steps': [int(s) for s in steps], 'final_nonzeros': int(final.sum()),
        'groups': [{'min_count': int(counts[groups == g].min()),
                    'max_count': int(counts[groups == g].max()),
                    'sparsity': [float(s) for s in sparsity[:, g]]}
                   for g in range(FLAGS.groups)],
        'correlations': correlations, 'rows': rows})


if __name__ == '__main__':
  app.run(main)
