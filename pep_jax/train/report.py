"""The run's summary: ``summary.json``, ``summary.md``, a printed table and ``frontier.png``."""

from __future__ import annotations

import os

from pep_jax.train.setup import write_json

COLUMNS = ('method', 'budget', 'nonzeros', 'sparsity', 'valid_auc', 'test_auc', 'test_logloss',
           'test_auc_batch_mean')


def _fmt(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return f'{value:.4f}'
  return str(value)


def markdown_table(rows: list[dict]) -> str:
  lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
  for row in rows:
    label = dict(row)
    if row['method'] == 'ue':
      label['method'] = f'ue (d={row["dim"]})'
    lines.append('| ' + ' | '.join(_fmt(label.get(c)) for c in COLUMNS) + ' |')
  return '\n'.join(lines)


def field_size_table(tickets: list[dict], field_dims, intrinsic_dims=None) -> str:
  """Mean embedding size of each field's features in every ticket (markdown).

  With synthetic data, ``intrinsic_dims`` adds the teacher's dimension of each field
  (0 = noise), the ground truth the sizes can be read against.
  """
  if not tickets:
    return ''
  head = ['field', 'vocabulary'] + (['intrinsic dim'] if intrinsic_dims else [])
  head += [f'b{t["budget"]}' for t in tickets]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for f, name in enumerate(tickets[0]['field_names']):
    cells = [name, str(int(field_dims[f]))]
    if intrinsic_dims:
      cells.append(str(intrinsic_dims[f]))
    cells += [f'{t["field_mean_size"][f]:.1f}' for t in tickets]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot_frontier(rows: list[dict], path: str, title: str) -> None:
  """Test AUC against embedding parameters (log scale), like the paper's Figure 2."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  labels = {'pep': 'PEP', 'pep_random': 'PEP, random re-init', 'ue': 'UE'}
  for method, marker in (('pep', 'o-'), ('pep_random', '^-'), ('ue', 's--')):
    pts = sorted((r['nonzeros'], r['test_auc']) for r in rows if r['method'] == method)
    if pts:
      ax.plot(*zip(*pts), marker, label=labels[method])
  for row in rows:
    if row['method'] == 'teacher':
      ax.axhline(row['test_auc'], color='gray', linestyle=':', label='teacher (ceiling)')
  ax.set_xscale('log')
  ax.set_xlabel('embedding parameters (non-zeros)')
  ax.set_ylabel('test AUC')
  ax.set_title(title)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_summary(rows: list[dict], workdir: str, title: str, fields: str = '') -> str:
  """Writes ``summary.json``, ``summary.md`` and ``frontier.png``; returns the table.

  ``fields`` (from :func:`field_size_table`) is appended to ``summary.md``.
  """
  write_json(os.path.join(workdir, 'summary.json'), rows)
  table = markdown_table(rows)
  with open(os.path.join(workdir, 'summary.md'), 'w') as f:
    f.write(f'# {title}\n\n{table}\n')
    if fields:
      f.write(f'\n## Mean embedding size per field in each ticket\n\n{fields}\n')
  plot_frontier(rows, os.path.join(workdir, 'frontier.png'), title)
  return table
