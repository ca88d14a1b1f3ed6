"""The run's summary: ``summary.json``, ``summary.md``, a printed table and ``frontier.png``.

Every row is one trained model (a method's candidate) with its stored size (``params``,
``bytes``) and metrics, so methods are compared at equal stored parameters. On synthetic data
each row with per-field widths also says how well they recover the planted truth
(:func:`importance`).
"""

from __future__ import annotations

import numpy as np

from pep_jax import methods as methods_lib
from pep_jax import workdir as wd
from pep_jax.metrics import spearman
from pep_jax.train.setup import write_json

COLUMNS = ('method', 'setting', 'params', 'bytes', 'sparsity', 'valid_auc', 'test_auc',
           'test_logloss', 'test_auc_batch_mean', 'width_spearman', 'noise_share',
           'search_seconds', 'train_seconds')

def importance(field_mean_size, data) -> dict:
  """How a model's per-field widths relate to the planted truth of synthetic data.

  Returns:
    ``width_spearman``: Spearman's rank correlation between the mean width of each field and
    its planted intrinsic dimension; ``noise_share``: the share of the embedding entries spent
    on pure-noise fields (intrinsic dimension 0). Both None without a planted truth or without
    per-field widths.
  """
  truth = data.info.get('intrinsic_dims')
  if truth is None or field_mean_size is None:
    return {'width_spearman': None, 'noise_share': None}
  widths = np.asarray(field_mean_size, np.float64)
  entries = widths * np.asarray(data.field_dims, np.float64)  # per-field table entries
  noise = np.asarray(truth) == 0
  total = entries.sum()
  rho = spearman(widths, np.asarray(truth))
  return {'width_spearman': None if np.isnan(rho) else rho,
          'noise_share': float(entries[noise].sum() / total) if total > 0 else 0.0}


def _fmt(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return f'{value:.1f}' if abs(value) >= 100 else f'{value:.4f}'
  return str(value)


def markdown_table(rows: list[dict]) -> str:
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  for row in rows:
    lines.append('| ' + ' | '.join(_fmt(row.get(c)) for c in COLUMNS) + ' |')
  return '\n'.join(lines)


def field_size_table(rows: list[dict], data) -> str:
  """Mean embedding width of each field in every model that has per-field widths (markdown).

  With synthetic data a column gives the teacher's dimension of each field (0 = noise), the
  ground truth the widths can be read against.
  """
  sized = [r for r in rows if r.get('field_mean_size')]
  if not sized:
    return ''
  truth = data.info.get('intrinsic_dims')
  head = ['field', 'vocabulary'] + (['intrinsic dim'] if truth else [])
  head += [f'{r["method"]} {r["setting"]}' for r in sized]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for f, name in enumerate(data.field_names):
    cells = [name, str(int(data.field_dims[f]))]
    if truth:
      cells.append(str(truth[f]))
    cells += [f'{r["field_mean_size"][f]:.1f}' for r in sized]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot_frontier(rows: list[dict], path: str, title: str) -> None:
  """Test AUC against stored embedding parameters (log scale), one curve per method.

  Like the paper's Figures 2-4.
  """
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  labels = methods_lib.labels()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  methods = list(dict.fromkeys(r['method'] for r in rows if r['method'] != 'teacher'))
  markers = 'os^Dv<>p*h'
  for i, method in enumerate(methods):
    pts = sorted((r['params'], r['test_auc']) for r in rows
                 if r['method'] == method and r.get('params'))
    if pts:
      ax.plot(*zip(*pts), markers[i % len(markers)] + '-', label=labels.get(method, method))
  for row in rows:
    if row['method'] == 'teacher':
      ax.axhline(row['test_auc'], color='gray', linestyle=':', label='teacher (ceiling)')
  ax.set_xscale('log')
  ax.set_xlabel('stored embedding parameters')
  ax.set_ylabel('test AUC')
  ax.set_title(title)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_summary(rows: list[dict], workdir: str, title: str, data) -> str:
  """Writes ``summary.json``, ``summary.md`` and ``frontier.png``; returns the table."""
  paths = wd.summary_paths(workdir)
  write_json(paths['json'], rows)
  table = markdown_table(rows)
  fields = field_size_table(rows, data)
  with open(paths['md'], 'w') as f:
    f.write(f'# {title}\n\n{table}\n')
    if fields:
      f.write(f'\n## Mean embedding width per field\n\n{fields}\n')
  plot_frontier(rows, paths['plot'], title)
  return table
