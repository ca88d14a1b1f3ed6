"""The run's summary: ``summary.json``, ``summary.md``, a printed table, ``frontier.png``,
``comparison.json`` and ``significance.json``.

Every row of ``summary.json`` is one trained model (a method's candidate, with several seeds one
per seed) with its stored size (``params``, ``bytes``) and metrics, so methods are compared at
equal stored parameters. On synthetic data each row with per-field widths also says how well
they recover the planted truth (:func:`importance`).

``comparison.json`` (:func:`comparison_rows`) has one row per (method, setting): the mean over
seeds, Student-t intervals, and the paired difference to the uniform model at the base width.
``significance.json`` (:func:`significance`) has the headline comparisons
(:func:`headline_pairs`), each with a paired bootstrap interval on the test rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pep_jax import methods as methods_lib
from pep_jax import workdir as wd
from pep_jax.metrics import bootstrap_aucs, percentile_interval, spearman, t_interval
from pep_jax.train.setup import write_json

LEVEL = 0.95  # coverage of every interval the summary reports
# Upper edges of the budget bands, as fractions of the uniform table at the base width: the
# 1-3-10 ladder ... 1%, 3%, 10%, 30%, 100%, 300% ...; a model's band is (lower, upper].
BAND_EDGES = tuple(float(f'{m}e{k}') for k in range(-6, 3) for m in (1, 3))
# Means over seeds that comparison.json reports beside the test AUC's (None where a seed lacks
# the value).
MEAN_KEYS = ('valid_auc', 'test_logloss', 'width_spearman', 'noise_share', 'search_seconds',
             'train_seconds')

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


def markdown_table(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for row in rows:
    lines.append('| ' + ' | '.join(_fmt(row.get(c)) for c in columns) + ' |')
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


# ------------------------------------------------------------------------------ seeds


def band(params: float, table_entries: int) -> tuple[float, float]:
  """The budget band of a model of ``params`` stored parameters: ``(lower, upper]`` fractions
  of the uniform table at the base width (``table_entries``), on the 1-3-10 ladder.

  A model at a budget of the ladder (``prune.budgets=(0.3, 0.1)``) is in the band that budget
  closes: half an entry of slack absorbs rounding a fraction to a count.
  """
  for i, edge in enumerate(BAND_EDGES):
    if params <= edge * table_entries + 0.5:
      return (BAND_EDGES[i - 1] if i else 0.0), edge
  return BAND_EDGES[-1], float('inf')


def _mean(values: list):
  """The mean of ``values``, an int when they are equal ints; None when one is None."""
  if any(v is None for v in values):
    return None
  if len(set(values)) == 1:
    return values[0]
  return float(np.mean(values))


def _pair(interval) -> list[float] | None:
  return None if interval is None else [float(interval[0]), float(interval[1])]


def comparison_rows(per_seed: dict[int, list[dict]], reference_run: str | None,
                    table_entries: int) -> list[dict]:
  """One row per (method, setting) over the seeds: means, Student-t intervals, paired deltas.

  Args:
    per_seed: ``{seed: summary rows}`` (models only) of every seed's experiment.
    reference_run: the run of the uniform model at the base width (``ue_d<embedding.dim>``);
      its test AUC in the same seed is what ``delta_auc_vs_ue`` subtracts.
    table_entries: entries of that uniform table, the reference of the budget bands.

  Returns:
    Rows in the order the seeds' rows first name them: ``method``, ``setting``, ``run``,
    ``seeds`` (the seeds that trained it), ``params`` and ``bytes`` (means over those seeds,
    which differ where a search cut the model at another size; ``params_per_seed`` and
    ``bytes_per_seed`` give each), ``band``, ``test_auc_per_seed``, ``test_auc_mean``,
    ``test_auc_std`` and ``test_auc_ci95`` (Student's t over seeds; None with one seed),
    ``delta_auc_vs_ue_mean`` and ``delta_auc_vs_ue_ci95`` (the mean and t interval of
    ``test_auc - test_auc of reference_run`` over the seeds both have; None without the
    reference, the interval None with one such seed), and ``<key>_mean`` for
    :data:`MEAN_KEYS`.
  """
  groups: dict[tuple, dict[int, dict]] = {}
  reference = {}
  for seed, rows in per_seed.items():
    for row in rows:
      groups.setdefault((row['method'], row['setting']), {})[seed] = row
      if reference_run is not None and row['run'] == reference_run:
        reference[seed] = row['test_auc']
  out = []
  for (method, setting), by_seed in groups.items():
    seeds = list(by_seed)
    first = by_seed[seeds[0]]
    params = [by_seed[s]['params'] for s in seeds]
    sizes = [by_seed[s]['bytes'] for s in seeds]
    aucs = [by_seed[s]['test_auc'] for s in seeds]
    test = t_interval(aucs, LEVEL)
    deltas = [by_seed[s]['test_auc'] - reference[s] for s in seeds if s in reference]
    delta = t_interval(deltas, LEVEL) if deltas else {'mean': None, 'ci': None}
    row = {'method': method, 'setting': setting, 'run': first['run'], 'seeds': seeds,
           'params': _mean(params), 'bytes': _mean(sizes), 'params_per_seed': params,
           'bytes_per_seed': sizes, 'band': list(band(float(np.mean(params)), table_entries)),
           'test_auc_per_seed': aucs, 'test_auc_mean': test['mean'],
           'test_auc_std': test['std'], 'test_auc_ci95': _pair(test['ci']),
           'delta_auc_vs_ue_mean': delta['mean'], 'delta_auc_vs_ue_ci95': _pair(delta['ci'])}
    for key in MEAN_KEYS:
      values = [by_seed[s].get(key) for s in seeds]
      row[f'{key}_mean'] = None if any(v is None for v in values) else float(np.mean(values))
    out.append(row)
  return out


def headline_pairs(comparison: list[dict], reference_run: str | None,
                   focus: str) -> list[tuple[dict, dict, str]]:
  """The comparisons ``summary.md`` states, as ``(a, b, kind)`` rows of ``comparison``.

  In every budget band each method's best model is the one of highest mean validation AUC
  (chosen without looking at the test rows). Then ``'vs_uniform'``: each such model against
  the uniform model at the base width (``reference_run``); and ``'vs_focus'``: the ``focus``
  method's best model of each band against every other method's best of the same band (at
  matched budget). A pair that both kinds name is stated once.
  """
  best: dict[tuple, dict] = {}
  for row in comparison:
    key = (row['method'], tuple(row['band']))
    if key not in best or (row['valid_auc_mean'] or 0.0) > (best[key]['valid_auc_mean'] or 0.0):
      best[key] = row
  reference = next((r for r in comparison if r['run'] == reference_run), None)
  pairs, seen = [], set()

  def add(a: dict, b: dict, kind: str) -> None:
    if a is not b and (a['run'], b['run']) not in seen:
      seen.add((a['run'], b['run']))
      pairs.append((a, b, kind))

  if reference is not None:
    for row in best.values():
      add(row, reference, 'vs_uniform')
  for (method, where), row in best.items():
    if method == focus:
      for (other, there), rival in best.items():
        if other != focus and there == where:
          add(row, rival, 'vs_focus')
  return pairs


def significance(pairs: list[tuple[dict, dict, str]], labels: np.ndarray,
                 probs: Callable[[int, str], np.ndarray], resamples: int,
                 seed: int) -> dict:
  """Each headline comparison with its intervals: the ``significance.json`` document.

  For ``a`` against ``b`` over the seeds both have: ``difference``, the mean over seeds of
  ``test_auc(a) - test_auc(b)``; ``bootstrap_ci95``, the paired bootstrap on the test rows
  (:func:`pep_jax.metrics.bootstrap_aucs`: ``resamples`` resamples of the rows drawn from
  ``seed``, the same rows for every model and seed, each resample's difference averaged over
  seeds; the percentile interval); ``seed_ci95``, Student's t interval of the per-seed
  differences (None with one seed). ``separable`` is whether every interval given excludes
  zero: a difference the test rows and, with several seeds, training again could not undo.

  Args:
    labels: ``[N]`` the test labels.
    probs: ``(seed, run) -> [N]`` the run's test probabilities in that seed's experiment.
  """
  needed = sorted({(s, r['run']) for a, b, _ in pairs for r in (a, b) for s in r['seeds']})
  aucs = {}
  if needed:
    draws = bootstrap_aucs(labels, np.stack([probs(s, run) for s, run in needed]), resamples,
                           seed)
    aucs = dict(zip(needed, draws))
  out = []
  for a, b, kind in pairs:
    seeds = [s for s in a['seeds'] if s in b['seeds']]
    if not seeds:
      continue
    test_a = dict(zip(a['seeds'], a['test_auc_per_seed']))
    test_b = dict(zip(b['seeds'], b['test_auc_per_seed']))
    per_seed = t_interval([test_a[s] - test_b[s] for s in seeds], LEVEL)
    boot = np.mean([aucs[s, a['run']] - aucs[s, b['run']] for s in seeds], axis=0)  # [B]
    low, high = percentile_interval(boot, LEVEL)
    intervals = [(low, high)] + ([per_seed['ci']] if per_seed['ci'] is not None else [])
    out.append({
        'kind': kind, 'band': a['band'], 'seeds': seeds,
        'a': {k: a[k] for k in ('method', 'setting', 'run', 'params', 'bytes')},
        'b': {k: b[k] for k in ('method', 'setting', 'run', 'params', 'bytes')},
        'difference': per_seed['mean'], 'bootstrap_mean': float(np.mean(boot)),
        'bootstrap_ci95': [low, high], 'seed_ci95': _pair(per_seed['ci']),
        'separable': all(lo > 0 or hi < 0 for lo, hi in intervals)})
  return {'level': LEVEL, 'resamples': int(resamples), 'bootstrap_seed': int(seed),
          'comparisons': out}


# ------------------------------------------------------------------------------ bands


def band_coverage(comparison: list[dict], bands, table_entries: int,
                  floors: dict[str, tuple[float, str]]) -> list[dict]:
  """Which models of each method lie in each budget band, and why a method has none there.

  Args:
    comparison: :func:`comparison_rows`.
    bands: upper edges, decreasing (``compare.bands``: 0.3, 0.1, 0.03): the bands are
      ``(next edge, edge]`` of the uniform table at the base width, the last ``(0, edge]``.
    table_entries: entries of that uniform table.
    floors: ``{series: (least share of that table, why)}``
      (:func:`pep_jax.methods.floors`).

  Returns:
    One row per (method, band), methods in ``comparison``'s order: ``method``, ``band``
    (``[lower, upper]``), ``settings`` (its models there, by mean stored parameters), and
    ``why`` for an empty band: the method's floor when the whole band lies below it, else
    the reason it gives for a band above its floor (PEP: budgets not reached), else that no
    setting in the band is configured.
  """
  edges = [float(b) for b in bands]
  methods = list(dict.fromkeys(r['method'] for r in comparison))
  out = []
  for method in methods:
    rows = [r for r in comparison if r['method'] == method]
    least, reason = floors.get(method, (0.0, ''))
    for i, upper in enumerate(edges):
      lower = edges[i + 1] if i + 1 < len(edges) else 0.0
      inside = [r['setting'] for r in rows
                if lower * table_entries + 0.5 < r['params'] <= upper * table_entries + 0.5]
      why = None
      if not inside and upper < least:
        why = f'it cannot store less than {100 * least:.1f}% of the table here: {reason}'
      elif not inside:
        why = reason if reason and not least else 'no setting in this band is configured'
      out.append({'method': method, 'band': [lower, upper], 'settings': inside, 'why': why})
  return out


def coverage_lines(coverage: list[dict]) -> list[str]:
  """``summary.md``'s line for each budget band a method has no model in."""
  labels = methods_lib.labels()
  return [f'- {labels.get(c["method"], c["method"])}: no model in {_band_name(c["band"])} of the '
          f'uniform table: {c["why"]}.' for c in coverage if c['why']]


# ------------------------------------------------------------------------------ writing


def _band_name(where) -> str:
  low, high = where
  return f'{100 * low:g}-{100 * high:g}%'


def _signed(value: float) -> str:
  return f'{value:+.4f}'


def significance_lines(document: dict) -> list[str]:
  """``summary.md``'s sentence for each headline comparison."""
  labels = methods_lib.labels()
  lines = []
  for c in document['comparisons']:
    name = [f'{labels.get(x["method"], x["method"])} {x["setting"]}' for x in (c['a'], c['b'])]
    low, high = c['bootstrap_ci95']
    text = (f'- {name[0]} vs {name[1]} ({_band_name(c["band"])} of the uniform table'
            f'{"" if c["kind"] == "vs_uniform" else ", matched budget"}): test AUC '
            f'{_signed(c["difference"])}; 95% over test rows [{_signed(low)}, {_signed(high)}]')
    if c['seed_ci95'] is not None:
      text += (f', over {len(c["seeds"])} seeds [{_signed(c["seed_ci95"][0])}, '
               f'{_signed(c["seed_ci95"][1])}]')
    lines.append(text + (': separable.' if c['separable'] else ': not separable.'))
  return lines


COMPARISON_COLUMNS = ('method', 'setting', 'params', 'bytes', 'seeds', 'test_auc_mean',
                      'test_auc_std', 'test_auc_ci95', 'delta_auc_vs_ue_mean',
                      'delta_auc_vs_ue_ci95', 'test_logloss_mean', 'width_spearman_mean',
                      'noise_share_mean')


def _cell(value) -> str:
  if isinstance(value, list):
    return '[' + ', '.join(_fmt(v) for v in value) + ']'
  return _fmt(value)


def comparison_table(comparison: list[dict]) -> str:
  lines = ['| ' + ' | '.join(COMPARISON_COLUMNS) + ' |', '|' + '---|' * len(COMPARISON_COLUMNS)]
  for row in comparison:
    lines.append('| ' + ' | '.join(_cell(row.get(c)) for c in COMPARISON_COLUMNS) + ' |')
  return '\n'.join(lines)


FORM_STYLES = (('s', '--'), ('^', ':'), ('D', '-.'), ('v', (0, (5, 1))))  # marker, line of a form


def plot_frontier(comparison: list[dict], ceiling: float | None, path: str, title: str,
                  forms: list[dict] = ()) -> None:
  """Test AUC against stored embedding parameters and against stored bytes (log scales), one
  curve per method; with several seeds each point is the mean with its 95% interval as error
  bars.

  Like the paper's Figures 2-4.

  Args:
    comparison: :func:`comparison_rows`.
    ceiling: the teacher's test AUC (a horizontal line), or None.
    path: the PNG to write.
    title: the figure's title.
    forms: rows of other stored forms of the same models (``method``, ``form``, ``bytes``,
      ``test_auc_mean``, ``test_auc_ci95``; experiments/compare_forms.py), drawn in the bytes
      panel in their method's colour, one marker and line style per form (the first
      ``len(FORM_STYLES)`` forms), each form once in the legend.
  """
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  labels = methods_lib.labels()
  fig, axes = plt.subplots(1, 2, figsize=(14.5 if forms else 12, 4.5), sharey=True)
  methods = list(dict.fromkeys(r['method'] for r in comparison))
  markers = 'os^Dv<>p*h'

  def curve(ax, size, rows, **style):
    pts = sorted((r[size], r['test_auc_mean'],
                  0.0 if r['test_auc_ci95'] is None else r['test_auc_ci95'][1] -
                  r['test_auc_mean']) for r in rows)
    x, y, err = zip(*pts)
    return ax.errorbar(x, y, yerr=err if any(err) else None, capsize=3, **style)

  colours = {}
  for ax, size, name in zip(axes, ('params', 'bytes'),
                            ('stored embedding parameters', 'stored embedding bytes')):
    for i, method in enumerate(methods):
      drawn = curve(ax, size, [r for r in comparison if r['method'] == method],
                    fmt=markers[i % len(markers)] + '-', label=labels.get(method, method))
      colours[method] = drawn.lines[0].get_color()
    if ceiling is not None:
      ax.axhline(ceiling, color='gray', linestyle=':', label='teacher (ceiling)')
    ax.set_xscale('log')
    ax.set_xlabel(name)
    ax.grid(True, which='both', alpha=0.3)
  names = list(dict.fromkeys(r['form'] for r in forms))
  for form, (marker, line) in zip(names, FORM_STYLES):
    for method in methods:
      rows = [r for r in forms if r['form'] == form and r['method'] == method]
      if rows:
        curve(axes[1], 'bytes', rows, marker=marker, linestyle=line, color=colours[method],
              markerfacecolor='none', alpha=0.8)
    axes[1].plot([], [], color='black', marker=marker, linestyle=line, markerfacecolor='none',
                 label=f'{form} (colour of its method)')
  axes[0].set_ylabel('test AUC')
  seeds = max((len(r['seeds']) for r in comparison), default=1)
  if seeds > 1:
    title += f' (mean of {seeds} seeds, 95% intervals)'
  fig.suptitle(title)
  if forms:  # more entries than fit over the curves: beside the panel
    axes[1].legend(fontsize='small', loc='upper left', bbox_to_anchor=(1.02, 1.0))
  else:
    axes[1].legend(fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_summary(rows: list[dict], comparison: list[dict], tests: dict, workdir: str,
                  title: str, data, coverage: list[dict] = ()) -> str:
  """Writes ``summary.json`` (``rows``), ``comparison.json``, ``significance.json``
  (``tests``), ``summary.md`` and ``frontier.png``; returns the printed table.

  With one seed ``summary.md`` has the summary's table and the mean width per field; with
  several, the means over seeds, then every seed's rows (each seed's own ``summary.md`` has
  its widths). Then the budget bands a method has no model in (``coverage``:
  :func:`band_coverage`), and the headline comparisons.
  """
  paths = wd.summary_paths(workdir)
  write_json(paths['json'], rows)
  write_json(paths['comparison'], comparison)
  write_json(paths['significance'], tests)
  several = any(len(r['seeds']) > 1 for r in comparison)
  with open(paths['md'], 'w') as f:
    if several:
      table = comparison_table(comparison)
      f.write(f'# {title}\n\nMeans over seeds; `params` and `bytes` are means where a '
              f'search cut a model at another size in another seed.\n\n{table}\n')
      f.write(f'\n## Every seed\n\n{markdown_table(rows, ("seed",) + COLUMNS)}\n')
    else:
      table = markdown_table(rows)
      f.write(f'# {title}\n\n{table}\n')
      fields = field_size_table(rows, data)
      if fields:
        f.write(f'\n## Mean embedding width per field\n\n{fields}\n')
    missing = coverage_lines(list(coverage))
    if missing:
      f.write('\n## Budget bands without a model\n\n' + '\n'.join(missing) + '\n')
    lines = significance_lines(tests)
    if lines:
      f.write('\n## Comparisons\n\nTest AUC differences with 95% intervals: over resamples of '
              f'the test rows (paired bootstrap, {tests["resamples"]} resamples)'
              f'{", and over seeds (Student t)" if several else ""}. "Not separable": an '
              'interval includes zero.\n\n' + '\n'.join(lines) + '\n')
  plot_frontier(comparison, data.info.get('teacher_test_auc'), paths['plot'], title)
  return table
