"""Which threshold settings reach small budgets, and at what AUC cost against uniform embeddings.

    python experiments/reachability.py --workdir=runs/reachability
    python experiments/reachability.py --workdir=runs/reach_long --s_inits=-8,-10 \
        --gates=sigmoid:4 --prune_max_epochs=150
    python experiments/reachability.py --workdir=runs/reach_ml --config=configs/movielens_fm.py \
        --config.data.dir=/data/ml-1m --config.prune.budgets='(0.05,)'

By default on synthetic data shaped like MovieLens-1M (``pep_jax.presets.movielens_shaped_config``:
7 fields of 278, 2, 7, 21, 3439, 81, 301 values, d=32, one budget of 5% of the table). For every
setting of the grid ``--s_inits`` x ``--gates`` (``gate:gate_scale``) it prunes, retrains the
ticket when the budget is reached, and writes into ``--workdir``:

* ``reachability.png``: the non-zero fraction of the table against steps, one line per setting;
* ``reachability.md`` / ``.csv``: per setting, the step the smallest budget was reached (or the
  fraction it stopped at) and the retrained test AUC against the uniform baselines ``ue.dims``;
  with several budgets, the retrained test AUC at each budget reached (``auc_<p>``).

A real MovieLens sample: ``experiments/ml100k_as_ml1m.py`` rewrites the MovieLens-100K of the
public PEP repository as ML-1M's files (docs/analyses.md has the measured grid on it).

Each setting runs in its own sub-folder, so the command started again reuses finished runs.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from pep_jax import analysis, presets
from pep_jax.workdir import find_tickets

config_flags.DEFINE_config_file('config', None, 'Experiment config (default: synthetic '
                                'MovieLens-shaped data).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder of every run, figure and table.')
flags.DEFINE_list('s_inits', ['-15', '-8', '-6', '-4'], 'Initial threshold parameters s.')
flags.DEFINE_list('gates', ['sigmoid:1', 'sigmoid:4', 'exp:1'], 'gate:gate_scale pairs.')
flags.DEFINE_integer('prune_max_epochs', None, 'Cap of the pruning stage (default: the '
                     "config's prune.max_epochs).")
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def settings() -> list[dict]:
  out = []
  for s_init in FLAGS.s_inits:
    for pair in FLAGS.gates:
      gate, _, scale = pair.partition(':')
      out.append({'s_init': float(s_init), 'gate': gate, 'gate_scale': float(scale or 1)})
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config or presets.movielens_shaped_config()
  if FLAGS.prune_max_epochs:
    config = analysis.variant(config, **{'prune.max_epochs': FLAGS.prune_max_epochs})
  ue = analysis.run_uniform(config, f'{FLAGS.workdir}/ue', config.ue.dims)
  ue_auc = {r['dim']: r['test_auc'] for r in ue}
  rows, curves = [], []
  for s in settings():
    name = f's{s["s_init"]:g}_{s["gate"]}_x{s["gate_scale"]:g}'
    overrides = {'embedding.s_init': s['s_init'], 'embedding.gate': s['gate'],
                 'embedding.gate_scale': s['gate_scale']}
    workdir = f'{FLAGS.workdir}/{name}'
    out = analysis.run_variant(analysis.variant(config, **overrides), workdir)
    result = out['prune']
    entries = result['table_entries']
    smallest = min(result['budgets'])
    steps, counts = analysis.prune_curve(workdir)
    curves.append((name, steps, counts / entries))
    row = {'setting': name, **s, 'budget': smallest, 'reached': smallest in result['reached'],
           'pruning_steps': result['steps'], 'final_fraction': result['final_nonzeros'] / entries}
    for budget in result['budgets']:  # every budget's retrained ticket, where reached
      row[f'auc_{budget / entries:.0%}'] = next(
          (r['test_auc'] for r in out['rows'] if r['method'] == 'pep' and r['budget'] == budget),
          None)
    ticket = [t for t in find_tickets(workdir) if t['budget'] == smallest]
    retrained = [r for r in out['rows'] if r['method'] == 'pep' and r['budget'] == smallest]
    if ticket and retrained:
      row.update(ticket_step=ticket[0]['step'], nonzeros=retrained[0]['nonzeros'],
                 test_auc=retrained[0]['test_auc'])
      for dim, auc in ue_auc.items():
        row[f'vs_ue_d{dim}'] = retrained[0]['test_auc'] - auc
    rows.append(row)
    print(f'{name}: reached={row["reached"]} final fraction {row["final_fraction"]:.3f}')

  plt = analysis.pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 4))
  s_inits = sorted({r['s_init'] for r in rows})
  gates = sorted({(r['gate'], r['gate_scale']) for r in rows})
  for row, (name, steps, fraction) in zip(rows, curves):  # colour: s_init; line: gate
    ax.plot(steps, fraction, label=name, color=f'C{s_inits.index(row["s_init"])}',
            linestyle=('-', '--', ':', '-.')[gates.index((row['gate'], row['gate_scale'])) % 4])
  ax.axhline(rows[0]['budget'] / entries, color='gray', linestyle=':', label='smallest budget')
  ax.set_yscale('log')
  ax.set_xlabel('step')
  ax.set_ylabel('non-zero fraction of the table')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
  fig.tight_layout()
  fig.savefig(f'{FLAGS.workdir}/reachability.png', dpi=100)
  plt.close(fig)

  notes = '\n'.join(f'- uniform d={d}: test AUC {a:.4f}' for d, a in sorted(ue_auc.items()))
  notes += ('\n- auc_<p>: the retrained test AUC of the ticket at p of the table, where that '
            'budget was reached')
  budget_columns = [k for k in rows[0] if k.startswith('auc_')]
  columns = (['setting', 'reached', 'ticket_step', 'pruning_steps', 'final_fraction',
              'nonzeros', 'test_auc'] + [f'vs_ue_d{d}' for d in sorted(ue_auc)] + budget_columns)
  print(analysis.write_tables(rows, columns, FLAGS.workdir, 'reachability',
                              f'Reaching {rows[0]["budget"]} non-zeros '
                              f'({config.data.name}, {config.model.name})', notes))
  print(notes)


if __name__ == '__main__':
  app.run(main)
