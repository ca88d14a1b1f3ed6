"""The measured figures of the README and docs/, written from results files in docs/results/.

    python -m pep_jax.main --config=configs/demo.py --workdir=runs/demo
    python experiments/readme_results.py --demo=runs/demo     # record, then rewrite the README
    python -m pep_jax.main --config=configs/compare.py --workdir=runs/compare
    python experiments/compare_forms.py --workdir=runs/compare \
        --json=docs/results/compare_forms.json
    python experiments/readme_results.py --compare=runs/compare
    python experiments/setup_times.py --demo --tests          # docs/results/setup_times.json
    python experiments/readme_results.py                      # rewrite every page's blocks
    python experiments/readme_results.py --check              # exit 1 if the README differs

A figure of the README or of a page of docs/ that comes from a run stands between two
markers::

    <!-- results:demo begin (python experiments/readme_results.py) -->
    ...written from docs/results/demo.json...
    <!-- results:demo end -->

``--demo=WORKDIR`` records a finished demo (its summary without timings, its comparisons with
their intervals, what its tickets keep of the noise fields, the machine) in
``docs/results/demo.json``; ``--compare=WORKDIR`` records a finished comparison in
``docs/results/compare.json`` and draws its frontier as ``docs/figures/compare_frontier.png``,
with the quantised forms of ``docs/results/compare_forms.json`` in the bytes panel when that file
measured the same ``comparison.json``. ``experiments/setup_times.py`` times the README's two
set-up commands (the demo, the test suite), each with the load before it started, in
``docs/results/setup_times.json``. Every run rewrites each block from its results file. A test
(``tests/test_readme_results.py``) renders the blocks again and fails when the README differs,
so a figure changed by hand in a block does not pass CI; ``tests/test_demo_quality.py`` checks
that the demo still gives the recorded results.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import re
import shutil
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'docs', 'results')
TIMINGS = ('search_seconds', 'train_seconds', 'score_seconds', 'search_seconds_per_epoch')
BLOCK = re.compile(r'(<!-- results:(\w+) begin[^\n]*-->\n)(.*?)(<!-- results:\2 end -->)', re.S)


# ----------------------------------------------------------------------------- recording


def _experiment(name: str):
  """``experiments/<name>.py`` as a module (imported once, as the tests import it)."""
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  return importlib.import_module(f'experiments.{name}')


def record_demo(workdir: str) -> dict:
  """``docs/results/demo.json`` from a finished demo work directory."""
  sys.path.insert(0, ROOT)
  import jax
  from pep_jax import workdir as wd
  from pep_jax.data import load_dataset
  config = wd.read_config(workdir)
  data = load_dataset(config.data)
  with open(wd.summary_paths(workdir)['json']) as f:
    rows = [{k: v for k, v in r.items() if k not in TIMINGS} for r in json.load(f)]
  with open(os.path.join(workdir, 'significance.json')) as f:
    significance = json.load(f)
  dim = int(config.embedding.dim)
  vocab = [int(d) for d in data.field_dims]
  noise = [k == 0 for k in data.info['intrinsic_dims']]
  for row in rows:
    if row['method'] == 'pep':
      kept = [w * v for w, v in zip(row['field_mean_size'], vocab)]
      row['kept_noise'] = (sum(k for k, n in zip(kept, noise) if n)
                           / sum(dim * v for v, n in zip(vocab, noise) if n))
      row['kept_informative'] = (sum(k for k, n in zip(kept, noise) if not n)
                                 / sum(dim * v for v, n in zip(vocab, noise) if not n))
  return {
      'command': 'python -m pep_jax.main --config=configs/demo.py --workdir=runs/demo',
      'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                  'cpus': os.cpu_count(), 'python': platform.python_version(),
                  'jax': jax.__version__},
      'data': {'fields': len(vocab), 'features': int(sum(vocab)),
               'rows': len(data.train) + len(data.valid) + len(data.test),
               'noise_fields': int(sum(noise))},
      'dim': dim, 'rows': rows, 'significance': significance,
  }


def record_compare(workdir: str) -> dict:
  """``docs/results/compare.json`` from a finished ``configs/compare.py`` work directory: its
  comparison over seeds, headline comparisons and budget bands, the machine, and the command's
  wall time (from the work directory's config record to its last summary)."""
  sys.path.insert(0, ROOT)
  import jax
  from pep_jax import methods as methods_lib
  from pep_jax import report
  from pep_jax import workdir as wd
  from pep_jax.data import load_dataset
  config = wd.read_config(workdir)
  data = load_dataset(config.data)
  paths = wd.summary_paths(workdir)
  with open(paths['comparison']) as f:
    comparison = json.load(f)
  with open(paths['significance']) as f:
    significance = json.load(f)
  with open(paths['json']) as f:
    teacher = [r['test_auc'] for r in json.load(f) if r['method'] == 'teacher']
  dim = int(config.embedding.dim)
  entries = data.num_features * dim
  started = os.path.getmtime(os.path.join(workdir, 'config.json'))

  def took(folder):  # from its config record to its summary
    return (os.path.getmtime(wd.summary_paths(folder)['json'])
            - os.path.getmtime(os.path.join(folder, 'config.json')))

  return {
      'command': 'python -m pep_jax.main --config=configs/compare.py --workdir=runs/compare',
      'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                  'cpus': os.cpu_count(), 'python': platform.python_version(),
                  'jax': jax.__version__},
      'comparison_sha256': _experiment('compare_forms').sha256(paths['comparison']),
      'wall_seconds': os.path.getmtime(paths['json']) - started,
      'seed_seconds': {str(s): took(wd.seed_dir(workdir, s)) for s in config.seeds},
      'data': {'fields': int(data.num_fields), 'features': int(data.num_features),
               'rows': len(data.train) + len(data.valid) + len(data.test)},
      'dim': dim, 'table_entries': entries, 'seeds': [int(s) for s in config.seeds],
      'teacher_test_auc': teacher[0] if teacher else None,
      'comparison': comparison, 'significance': significance,
      'coverage': report.band_coverage(comparison, config.compare.bands, entries,
                                       methods_lib.floors(config, data.field_dims)),
  }


# ----------------------------------------------------------------------------- rendering


def _percent(budget: int, entries: int) -> str:
  return f'{round(100 * budget / entries)}%'


def render_demo(results: dict) -> str:
  """The demo's table and its comparisons, each with its interval."""
  data, dim, rows = results['data'], results['dim'], results['rows']
  entries = data['features'] * dim
  lines = [f'The demo data: {data["fields"]} Criteo-like fields ({data["noise_fields"]} of them '
           f'pure noise), {data["features"]:,} features, {data["rows"]:,} rows; FM, base width '
           f'{dim}. Recorded on {results["machine"]["cpus"]} CPU cores, JAX '
           f'{results["machine"]["jax"]}, one seed.', '',
           '| method | parameters | sparsity | test AUC | test logloss |',
           '|---|---:|---:|---:|---:|']
  for row in rows:
    if row['method'] == 'pep':
      name = f'PEP ticket, {_percent(row["budget"], entries)} budget'
    elif row['method'] == 'ue':
      name = f'uniform, {row["setting"]}'
    elif row['method'] == 'teacher':
      lines.append(f'| teacher (ceiling) | | | {row["test_auc"]:.4f} | |')
      continue
    else:
      name = f'{row["method"]} {row["setting"]}'
    lines.append(f'| {name} | {row["params"]:,} | {row["sparsity"]:.2f} | {row["test_auc"]:.4f} '
                 f'| {row["test_logloss"]:.4f} |')
  lines += ['', 'Comparisons on the test rows (paired bootstrap over the 50,000 test rows, '
            f'{results["significance"]["resamples"]:,} resamples; one seed, so the spread '
            'between seeds is not in these intervals):', '']
  names = {r['run']: r for r in rows if r.get('run')}
  for c in results['significance']['comparisons']:
    a, b = names[c['a']['run']], names[c['b']['run']]
    lo, hi = c['bootstrap_ci95']
    verdict = 'separable' if c['separable'] else 'not separable'
    lines.append(f'- {_label(a, entries)} against {_label(b, entries)}: '
                 f'{c["difference"]:+.4f} AUC, 95% interval [{lo:+.4f}, {hi:+.4f}]: {verdict}.')
  tickets = sorted((r for r in rows if r['method'] == 'pep'), key=lambda r: r['budget'])
  lines += ['', 'What the tickets keep of the table: '
            + '; '.join(f'{_percent(r["budget"], entries)} ticket, {r["kept_noise"]:.0%} of the '
                        f'noise fields\' entries and {r["kept_informative"]:.0%} of the '
                        'informative fields\'' for r in tickets) + '.']
  return '\n'.join(lines) + '\n'


def _label(row: dict, entries: int) -> str:
  if row['method'] == 'pep':
    return f'the {_percent(row["budget"], entries)} ticket'
  if row['method'] == 'ue':
    return f'uniform {row["setting"]}'
  return f'{row["method"]} {row["setting"]}'


def _interval(pair) -> str:
  return '' if pair is None else f'[{pair[0]:+.4f}, {pair[1]:+.4f}]'


def render_compare(results: dict) -> str:
  """The comparison over seeds: every model's mean test AUC with its interval, the paired
  difference to uniform d=<dim>, the bands a method cannot reach and the headline
  comparisons, each said separable or not."""
  sys.path.insert(0, ROOT)
  from pep_jax import methods as methods_lib
  from pep_jax import report
  labels = methods_lib.labels()
  entries, dim, machine = results['table_entries'], results['dim'], results['machine']
  seeds = results['seeds']
  minutes, seconds = divmod(round(results['wall_seconds']), 60)
  lines = [f'{len(seeds)} seeds ({", ".join(str(s) for s in seeds)}), every search included; '
           f'{results["data"]["features"]:,} features in {results["data"]["fields"]} fields, '
           f'{results["data"]["rows"]:,} rows, FM, base width {dim}. Test AUC: mean over the '
           'seeds and its 95% interval (Student t); `vs UE`: the paired difference to uniform '
           f'd={dim} in the same seed, mean and interval. The whole command took {minutes} min '
           f'{seconds:02d} s on {machine["cpus"]} CPU cores ({machine["processor"] or "x86-64"}, '
           f'JAX {machine["jax"]}, no accelerator; target: at most 30 min)'
           + ('; the seeds took ' + _and([_duration(t) for t in results['seed_seconds'].values()])
              + ', in that order.' if results.get('seed_seconds') else '.'),
           '',
           '| method | setting | params (of table) | bytes | test AUC | 95% interval | vs UE '
           f'd={dim} | 95% interval | width rho | noise |',
           '|---|---|---:|---:|---:|---|---:|---|---:|---:|']
  for r in results['comparison']:
    rho, noise = r.get('width_spearman_mean'), r.get('noise_share_mean')
    delta = r['delta_auc_vs_ue_mean']
    if r['method'] == 'ue' and r['setting'] == f'd={dim}':
      delta = None  # the reference itself
    lines.append(
        f'| {labels.get(r["method"], r["method"])} | {r["setting"]} | '
        f'{round(r["params"]):,} ({100 * r["params"] / entries:.1f}%) | {round(r["bytes"]):,} | '
        f'{r["test_auc_mean"]:.4f} | {_interval(r["test_auc_ci95"]).replace("+", "")} | '
        f'{"" if delta is None else f"{delta:+.4f}"} | '
        f'{"" if delta is None else _interval(r["delta_auc_vs_ue_ci95"])} | '
        f'{"" if rho is None else f"{rho:.2f}"} | {"" if noise is None else f"{noise:.2f}"} |')
  if results['teacher_test_auc'] is not None:
    lines.append(f'| teacher (ceiling) | | | | {results["teacher_test_auc"]:.4f} | | | | | |')
  missing = report.coverage_lines(results['coverage'])
  if missing:
    lines += ['', 'Budget bands a method has no model in, and why:', ''] + missing
  tests = results['significance']
  lines += ['', 'Headline comparisons (the best model of each band by validation AUC): the '
            'difference in test AUC with a 95% interval over resamples of the test rows '
            f'(paired bootstrap, {tests["resamples"]:,} resamples) and over the seeds; '
            '"separable" only where neither interval holds zero.', '']
  lines += report.significance_lines(tests)
  return '\n'.join(lines) + '\n'


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
  """``{column: cell}`` of each row, for each markdown table in ``text``."""
  tables, lines = [], []
  for line in text.split('\n') + ['']:
    if line.startswith('| '):  # not the |---| line
      lines.append(line)
    elif lines and not line.startswith('|'):
      tables.append(lines)
      lines = []

  def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip('|').split('|')]

  return [[dict(zip(cells(table[0]), cells(line))) for line in table[1:]] for table in tables]


def markdown_table(text: str) -> list[dict[str, str]]:
  """``{column: cell}`` of each row of the first markdown table in ``text``."""
  return markdown_tables(text)[0]


def markdown_rows(table: str) -> dict[str, dict[str, str]]:
  """``{first cell: {column: cell}}`` of every markdown table in ``table``."""
  return {row[next(iter(row))]: row for rows in markdown_tables(table) for row in rows}


def _uniform(table: str) -> dict[str, str]:
  """``{'d=2': '0.6311', ...}`` from a reachability table's ``- uniform d=2: test AUC x`` lines."""
  return dict(re.findall(r'- uniform (d=\d+): test AUC ([0-9.]+)', table))


def render_reachability_summary(grid: str) -> str:
  """The README's paragraph on reaching 5% of the table on the MovieLens-shaped stand-in, from
  the grid (reachability_standin.md) and the longer runs (reachability_standin_long.md)."""
  with open(os.path.join(RESULTS, 'reachability_standin_long.md')) as f:
    long_runs = f.read()
  rows, longer, uniform = markdown_rows(grid), markdown_rows(long_runs), _uniform(grid)
  paper, stalled, reached = rows['s-15_sigmoid_x1'], rows['s-6_sigmoid_x1'], longer['s-8_sigmoid_x4']
  wide = max(uniform, key=lambda d: int(d[2:]))
  narrow = min(uniform, key=lambda d: int(d[2:]))
  return (f'`reachability.py`: on synthetic data shaped like MovieLens-1M, the paper\'s settings '
          f'leave {float(paper["final_fraction"]):.0%} of the table after '
          f'{int(paper["pruning_steps"]):,} steps. Even from `s_init=-6`, the sigmoid gate '
          f'(thresholds at most 1) stalls the count at {float(stalled["final_fraction"]):.0%}. '
          '`embedding.gate_scale=4` with `s_init=-8` reaches 5% of the table at step '
          f'{int(reached["ticket_step"]):,}. That ticket scores {reached["test_auc"]} AUC, against '
          f'{uniform[wide]} for the full uniform model ({wide}) and {uniform[narrow]} for uniform '
          f'{narrow}.\n')


# The stand-in's table (presets.movielens_shaped_config): features and base width, for Xavier's
# bound sqrt(6 / (features + d)), a calculation from the config rather than a measurement.
STANDIN_TABLE = (4129, 32)


class _Reach:
  """A reachability results page (experiments/reachability.py's markdown): its rows by setting,
  the uniform models' test AUC by width and the budget in non-zeros."""

  def __init__(self, text: str):
    self.rows = markdown_rows(text)
    self.uniform = {d: float(auc) for d, auc in _uniform(text).items()}
    self.budget = int(re.search(r'Reaching (\d+) non-zeros', text).group(1))

  def fraction(self, setting: str) -> str:
    return f'{float(self.rows[setting]["final_fraction"]):.1%}'

  def step(self, setting: str, column: str = 'ticket_step') -> str:
    return f'{int(self.rows[setting][column]):,}'

  def auc(self, setting: str, digits: int = 4) -> str:
    return f'{float(self.rows[setting]["test_auc"]):.{digits}f}'

  def reached(self, setting: str) -> bool:
    return self.rows[setting]['reached'] == 'True'

  def empty(self, setting: str) -> bool:
    """Whether the setting pruned the whole table (its ticket keeps no entry)."""
    return self.reached(setting) and int(self.rows[setting]['nonzeros']) == 0


def _gate(setting: str) -> str:
  """``'`s_init=-5`, x4'`` for ``s-5_sigmoid_x4``; the exp gate named."""
  s_init, gate, scale = re.fullmatch(r's(-?[0-9.]+)_(\w+)_x(\d+)', setting).groups()
  return f'`s_init={s_init}`, ' + (f'x{scale}' if gate == 'sigmoid' else f'{gate} gate')


def render_reachability_standin_notes(grid: str) -> str:
  """docs/analyses.md: the cap in steps and the uniform baselines of the stand-in's grid."""
  r = _Reach(grid)
  (cap,) = {r.rows[s]['pruning_steps'] for s in r.rows if not r.reached(s)}
  wide, narrow = (f(r.uniform, key=lambda d: int(d[2:])) for f in (max, min))
  return _fill(f'Every run that did not reach the budget stopped at the cap, after {int(cap):,} '
               f'steps. The uniform baselines score {r.uniform[wide]:.4f} at {wide} (the whole '
               f'table) and {r.uniform[narrow]:.4f} at {narrow} '
               f'({int(narrow[2:]) / int(wide[2:]):.2%} of it). The teacher\'s score of this run '
               'is not in its results file.') + '\n'


def render_reachability_standin_long_notes(long_runs: str) -> str:
  """docs/analyses.md: what the stand-in's grid and its longer runs say, from
  reachability_standin.md and reachability_standin_long.md."""
  with open(os.path.join(RESULTS, 'reachability_standin.md')) as f:
    g = _Reach(f.read())
  x = _Reach(long_runs)
  paper, late, best = 's-15_sigmoid_x1', 's-10_sigmoid_x4', 's-8_sigmoid_x4'
  wide, narrow = (f(x.uniform, key=lambda d: int(d[2:])) for f in (max, min))
  to_wide, to_narrow = (float(x.rows[best][f'vs_ue_{d.replace("=", "")}']) for d in (wide, narrow))
  exp, sigmoid = (float(g.rows[f's-6_{gate}_x1']['final_fraction']) for gate in ('exp', 'sigmoid'))
  scaled = 0.0 if g.reached('s-6_sigmoid_x4') else float(g.rows['s-6_sigmoid_x4']['final_fraction'])
  exp_words = ('falls faster than the sigmoid but slower than `gate_scale=4`'
               if scaled < exp < sigmoid else 'does not fall between the sigmoid and '
               '`gate_scale=4`')
  bullets = [
      f'**With the paper\'s settings no run gets near 5%.** After {g.step(paper, "pruning_steps")} '
      f'steps, {float(g.rows[paper]["final_fraction"]):.0%} of the table is left. `s` climbs by '
      'about `lr` per step from -15, so thresholds only start to bite after roughly 10k steps.',
      '**Starting higher is not enough with a sigmoid.** With `s_init=-6` the count stalls at '
      f'{g.fraction("s-6_sigmoid_x1")}, and with `-8` at {g.fraction("s-8_sigmoid_x1")}. With '
      f'`-4`, 5% is reached at step {g.step("s-4_sigmoid_x1")}, but most entries go in the first '
      'steps, before the model has learned anything (the figure above). That ticket scores only '
      f'{g.auc("s-4_sigmoid_x1", 3)}.',
      '**Lifting the bound is what works.** `gate_scale=4` lets every threshold reach 4, and the '
      'count falls through the sigmoid\'s plateau. From `s_init=-6` it reaches 5% at step '
      f'{g.step("s-6_sigmoid_x4")}, and the retrained ticket scores {g.auc("s-6_sigmoid_x4")}. '
      f'From `s_init=-8` it reaches 5% at step {x.step(best)}, once the model has learned. That '
      f'ticket scores **{x.auc(best)}**: {abs(to_wide):.4f} {"below" if to_wide < 0 else "above"} '
      f'the full uniform model, with {float(x.rows[best]["final_fraction"]):.0%} of its entries, '
      f'and {abs(to_narrow):.3f} {"above" if to_narrow > 0 else "below"} the uniform model of '
      f'similar size ({narrow}, {int(narrow[2:]) / int(wide[2:]):.2%}).',
      f'Starting too late does not reach the budget either. From `s_init=-10` the count is still '
      f'at {x.fraction(late)} after {x.step(late, "pruning_steps")} steps.',
      f'The unbounded `exp` gate {exp_words} ({exp:.1%} at `s_init=-6`, against {sigmoid:.1%} '
      'for the sigmoid).',
      'A first threshold above the initial magnitudes prunes everything at once. With '
      f'`s_init=-4` and `gate_scale=4` it is `4 * sigmoid(-4) = {4 / (1 + math.exp(4)):.3f}`, '
      f'above Xavier\'s bound of {math.sqrt(6 / sum(STANDIN_TABLE)):.3f}: the count is '
      f'{g.rows["s-4_sigmoid_x4"]["nonzeros"]} after {g.step("s-4_sigmoid_x4")} step.',
  ]
  return '\n'.join(_fill(f'- {b}', '  ') for b in bullets) + '\n'


def render_reachability_recommendation(long_runs: str) -> str:
  """docs/analyses.md: the settings of the ``:small_budget`` variants and the runs behind them."""
  with open(os.path.join(RESULTS, 'reachability_standin.md')) as f:
    g = _Reach(f.read())
  x = _Reach(long_runs)
  best, early, late = 's-8_sigmoid_x4', 's-6_sigmoid_x4', 's-10_sigmoid_x4'
  steps = int(g.rows[early]['ticket_step']), int(x.rows[best]['ticket_step'])
  sooner = 'sooner' if steps[0] < steps[1] else 'later'
  cost = float(x.rows[best]['test_auc']) - float(g.rows[early]['test_auc'])
  stalls = (f'stalls above 5% ({x.fraction(late)} after {x.step(late, "pruning_steps")} steps)'
            if not x.reached(late) else f'reaches 5% at step {x.step(late)}')
  return _fill(
      '**Recommendation, the `:small_budget` variant of every `configs/<dataset>_<model>.py`.** '
      'Set `embedding.gate_scale=4`. On MovieLens-sized tables, also set `embedding.s_init=-8`, '
      f'and add 5% of the table ({x.budget:,} entries) as a fourth budget. Give pruning enough '
      f'steps: {x.step(best)} on the stand-in. On real ML-1M, the 30-epoch cap of the config is '
      'about 17k steps (578 per epoch). The first threshold `gate_scale * sigmoid(s_init)` is '
      'then 0.0013, about 1/30 of Xavier\'s bound `sqrt(6 / (features + d))`. Starting at a '
      f'quarter of the bound (`s_init=-6`) reaches 5% {sooner} but costs {cost:.3f} AUC; '
      f'starting at 1/200 of it (`-10`) {stalls}.') + '\n'


def render_reachability_ml100k_notes(table: str) -> str:
  """docs/analyses.md: what the grid on MovieLens-100K says, from reachability_ml100k.md."""
  r = _Reach(table)
  own, paper = 's-8_sigmoid_x4', 's-15_sigmoid_x1'
  usable = [s for s in r.rows if r.reached(s) and not r.empty(s)]
  empty = [s for s in r.rows if r.empty(s)]
  closest = min((s for s in r.rows if not r.reached(s)),
                key=lambda s: float(r.rows[s]['final_fraction']))
  (cap,) = {r.rows[s]['pruning_steps'] for s in r.rows if not r.reached(s)}
  if usable:
    head = f'**{_and([_gate(s) for s in usable])} reach 5% with a usable ticket.**'
  else:
    head = '**No setting reaches 5% with a usable ticket.**'
  first = (f'{head} `:small_budget`\'s own setting (`s_init=-8`, thresholds `4 * sigmoid(s)`) '
           f'stops at {r.fraction(own)} of the table at the cap ({int(cap):,} steps), the '
           f'paper\'s settings at {r.fraction(paper)}.')
  if empty:
    (e,) = empty
    first += (f' The one run that reaches 5% ({_gate(e)}) does so at step {r.step(e)} with '
              'nothing left: its first threshold is above Xavier\'s bound for a table this small '
              '(`sqrt(6 / (1,285 + 32))`), so the whole table is pruned before any training, and '
              f'what retrains is the first-order model alone (test AUC {r.auc(e)}).')
  first += (f' The closest real ticket ({_gate(closest)}) ends at {r.fraction(closest)} of the '
            'table at the cap.')
  budgets = [c[len('auc_'):] for c in next(iter(r.rows.values())) if c.startswith('auc_')]
  widths = sorted(r.uniform, key=lambda d: int(d[2:]))
  parts = []
  for budget in budgets[:-1]:
    aucs = {s: float(row[f'auc_{budget}']) for s, row in r.rows.items()
            if row[f'auc_{budget}'] != '-' and not r.empty(s)}
    if not aucs:
      continue
    top = max(aucs, key=aucs.get)
    above = [d for d in widths if r.uniform[d] < aucs[top]]
    beaten = [d for d in widths if r.uniform[d] > aucs[top]]
    words = (f'the {budget} tickets of {_count(len(aucs))} settings score '
             f'{_span(aucs.values(), ".4f")}')
    if not above:
      words += f', below every uniform model, {widths[0]} ({r.uniform[widths[0]]:.4f}) included'
    else:
      words += (f'; the best ({_gate(top)}) is above uniform '
                + _and([f'{d} ({r.uniform[d]:.4f})' for d in above])
                + (f' and below {_and([f"{d} ({r.uniform[d]:.4f})" for d in beaten])}'
                   if beaten else ''))
    parts.append(words)
  second = ('**Where tickets are cut, against the uniform models** (a 25% ticket has the entries '
            f'of uniform d=8): {"; ".join(parts)}.')
  third = ('The recommendation of `:small_budget` (`gate_scale=4`, `s_init=-8`) comes from the '
           'synthetic stand-in below, whose table is three times larger; thresholds have to be '
           'set against the table\'s own initial scale (Xavier\'s bound), which a fixed `s_init` '
           'does not do.')
  return '\n'.join(_fill(f'- {b}', '  ') for b in (first, second, third)) + '\n'


MODEL_LABELS = {'fm': 'FM', 'deepfm': 'DeepFM', 'autoint_plus': 'AutoInt+', 'autoint': 'AutoInt'}
STAGE_LABELS = {'base': 'base', 'pep': 'PEP', 'dartsemb': 'DartsEmb search'}


def _runtime_stages(results: dict) -> list[str]:
  return [k[:-len('_s_per_epoch')] for k in results['rows'][0] if k.endswith('_s_per_epoch')]


def render_runtime(results: dict) -> str:
  """experiments/runtime.py's seconds per epoch (the paper's Table 2 on this code) and each
  search step over the base model's, from its JSON."""
  stages = _runtime_stages(results)
  others = [s for s in stages if s != 'base']
  machine = results['machine']
  names = [STAGE_LABELS.get(s, s) for s in stages]
  lines = [f'Synthetic default ({results["data"]}, d={results["dim"]}, batch '
           f'{results["batch_size"]}, {results["rows"][0]["steps_per_epoch"]} steps per epoch, '
           f'{results["rows"][0]["steps_timed"]} steps timed per row), one run on '
           f'{machine["cpus"]} CPU cores ({machine["device"]}), JAX {machine["jax"]}, load average '
           f'{machine["load_average_1min"]:.1f} at the end:', '',
           '| model | ' + ' | '.join(f'{n}, s/epoch' for n in names) + ' | '
           + ' | '.join(f'{STAGE_LABELS.get(s, s)} / base' for s in others) + ' |',
           '|---|' + '---:|' * (len(stages) + len(others))]
  for row in results['rows']:
    base = row['base_s_per_epoch']
    lines.append(f'| {MODEL_LABELS.get(row["model"], row["model"])} | '
                 + ' | '.join(f'{row[f"{s}_s_per_epoch"]:.2f}' for s in stages) + ' | '
                 + ' | '.join(f'{row[f"{s}_s_per_epoch"] / base:.2f}x' for s in others) + ' |')
  return '\n'.join(lines) + '\n'


def render_runtime_summary(results: dict) -> str:
  """The README's sentence on the runtime table: each search step's range over the models."""
  parts = []
  for stage in (s for s in _runtime_stages(results) if s != 'base'):
    ratios = [row[f'{stage}_s_per_epoch'] / row['base_s_per_epoch'] for row in results['rows']]
    by_model = ', '.join(f'{r:.2f}x ({MODEL_LABELS.get(row["model"], row["model"])})'
                         for r, row in zip(ratios, results['rows']))
    parts.append(f'{STAGE_LABELS.get(stage, stage)} step over the base model\'s: {by_model}')
  return ('`runtime.py` (the paper\'s Table 2): seconds per epoch of the base model and of each '
          'method\'s search step for FM, DeepFM and AutoInt+, in one run on a 2-core CPU; '
          + '; '.join(parts) + '. The paper reports +24% (PEP) and +98% (DartsEmb) on average on '
          'a GPU.\n')


def _method_steps(results: dict) -> tuple[dict[tuple[str, str, str], float], float]:
  """``{(method, stage, setting): ms per step}`` of a ``--parts=methods`` run, and UE's."""
  rows = {(r['method'], r['stage'], r['setting']): r['ms_per_step'] for r in results['rows']
          if r['part'] == 'methods'}
  ue = next(ms for (method, _, _), ms in rows.items() if method == 'ue')
  return rows, ue


def _loads(results_file: str) -> str:
  """The load average of the last minute when a run began and ended, from the ``# ... uptime:``
  lines of the printed table beside its JSON (``bench_speed_methods.txt``)."""
  with open(os.path.join(RESULTS, results_file.replace('.json', '.txt'))) as f:
    loads = re.findall(r'^# \S+ uptime: .*load average: ([0-9.]+),', f.read(), re.M)
  words = f'load average {float(loads[0]):.1f} when it began'
  return words + (f' and {float(loads[-1]):.1f} when it ended' if len(loads) > 1 else '')


def render_methods_speed(after: dict, after_file: str = 'bench_speed_methods.json',
                         before_file: str = 'bench_speed_methods_before.json') -> str:
  """``bench_speed.py --parts=methods``'s step of every method against UE, before the layer
  changes (``before_file``) and after (the results given, of ``after_file``), with the load on
  the machine at each run."""
  with open(os.path.join(RESULTS, before_file)) as f:
    before = json.load(f)

  def ms(value):
    return f'{value:.3f}' if value < 10 else f'{value:.1f}'

  targets = {(r['method'], r['stage'], r['setting']): r.get('target', '')
             for r in after['ratios'] if r['ratio'] == 'method/ue step time'}
  (old, old_ue), (new, new_ue) = _method_steps(before), _method_steps(after)
  lines = ['| method | stage | setting | before: ms/step | before: x UE | after: ms/step | '
           'after: x UE | target |', '|---|---|---|---:|---:|---:|---:|---:|']
  for key, step in new.items():
    was = old.get(key)
    target = targets.get(key, '').replace('measured ', '')
    lines.append(f'| {key[0]} | {key[1]} | {key[2]} | '
                 + (f'{ms(was)} | {was / old_ue:.2f}' if was is not None else ' | ')
                 + f' | {ms(step)} | {step / new_ue:.2f} | {target} |')
  machine = after['machine']
  return ('\n'.join(lines) + f'\n\nAfter: {machine["date"][:10]}, {machine["cpu_count"]} CPU cores '
          f'({machine["processor"]}), JAX {machine["jax"]}, {_loads(after_file)}; before: '
          f'{before["machine"]["date"][:10]}, the same machine, {_loads(before_file)}.\n')


def _anatomy(results: dict, key: str = 'ms_per_step') -> dict[tuple[str, str], float]:
  """``(step, variant) -> ms per step`` (or another ``key`` of its row) of step_anatomy.json."""
  return {(r['step'], r['variant']): r[key] for r in results['rows']}


def _anatomy_table(results: dict, steps: tuple[str, ...]) -> list[str]:
  lines = ['| step | variant | leaves out | ms/step | x UE |', '|---|---|---|---:|---:|']
  for r in results['rows']:
    if r['step'] in steps:
      lines.append(f'| {r["step"]} | {r["variant"]} | {r["leaves_out"]} | '
                   f'{r["ms_per_step"]:.3f} | {r["ue_steps"]:.2f} |')
  before, after = results['load_average_before'][0], results['load_average_after'][0]
  return lines + ['', f'{results["machine_line"]}, JAX {results["machine"]["jax"]}, '
                  f'{results["date"][:10]}; each row the fastest of {results["rounds"]} rounds of '
                  f'{results["steps_per_call"]} steps, the variants timed in turn in one process '
                  f'(load average {before:.1f} when it began, {after:.1f} when it ended). `python '
                  'experiments/step_anatomy.py`, results in '
                  '[results/step_anatomy.json](results/step_anatomy.json).']


def render_step_anatomy_pep(results: dict) -> str:
  """docs/performance.md: what PEP's prune step is made of, and the bound it sets the prune loop
  against the public code (bench_public.json)."""
  t = _anatomy(results)
  ue, whole = t[('ue', 'whole')], t[('pep prune', 'whole')]
  forward = t[('pep prune', 'forward only')]
  backward = t[('pep prune', 'sgd, no count')] - forward
  optimizer = t[('pep prune', 'no count')] - t[('pep prune', 'sgd, no count')]
  count = whole - t[('pep prune', 'no count')]
  with open(os.path.join(RESULTS, 'bench_public.json')) as f:
    public = json.load(f)
  public_rate, loop_rate = public['public']['steps_per_second'], public['ours']['steps_per_second']
  bound = 1e3 / whole
  k = _anatomy(results, 'kernels')
  rows, dim = sum(results['shape']['field_dims']), results['shape']['dim']
  lookups = len(results['shape']['field_dims']) * results['batch_size']
  lines = _anatomy_table(results, ('ue', 'pep prune')) + ['', _fill(
      f'PEP\'s prune step on this table ({whole:.3f} ms, {whole / ue:.2f} UE steps, '
      f'{k[("pep prune", "whole")]} kernels against UE\'s {k[("ue", "whole")]}) is its forward '
      f'pass ({forward:.3f} ms in {k[("pep prune", "forward only")]} kernels: the lookup of '
      f'{lookups:,} rows, the thresholds applied, the FM), the backward pass ({backward:.3f} ms), '
      f'the faithful optimizer ({optimizer:.3f} ms: the gradient\'s global norm, coupled L2 and '
      'Adam over the table, the thresholds and the first-order weights) and the count of '
      f'non-zeros ({count:.3f} ms). The arrays are small (a table of {rows:,} x {dim} entries '
      'and its thresholds), so no part is bound by memory traffic. The step alone bounds the '
      f'prune loop at {bound:,.0f} steps/s, {bound / public_rate:.1f} times the public loop\'s '
      f'{public_rate:,.1f} measured beside ours (`bench_public.json`, on the public benchmark\'s '
      f'{public["ours"]["features"]:,}-feature table), where the whole loop ran at '
      f'{loop_rate:,.1f} steps/s ({loop_rate / public_rate:.1f} times): the loop\'s own work '
      '(building and placing each block of batches, reading the metrics back, the log, the '
      'progress bar, a checkpoint every 2,000 steps) costs '
      f'{1e3 / loop_rate - whole:.3f} ms a step on top. Reaching 20 times the public loop on '
      f'this machine would take a whole loop step of {1e3 / (20 * public_rate):.3f} ms, below '
      'the step\'s own time; without the count and the optimizer\'s extra work (a plain SGD '
      f'step, {t[("pep prune", "sgd, no count")]:.3f} ms) the step alone would be under it, but '
      'those are the protocol (the public code\'s optimizer, the count a ticket is cut by), and '
      'the loop\'s own work would still have to shrink as well.')]
  return '\n'.join(lines) + '\n'


def render_methods_speed_notes(results: dict) -> str:
  """docs/performance.md: where the MGQE step and DartsEmb's search step spend their time, from
  step_anatomy.json."""
  t = _anatomy(results)
  k = _anatomy(results, 'kernels')
  ue = t[('ue', 'whole')]
  mgqe, plain = t[('mgqe S=4 K=64', 'whole')], t[('mgqe S=4 K=64', 'no quantisation')]
  search = t[('dartsemb search {1,2,8}', 'whole')]
  one_pass = t[('dartsemb search {1,2,8}', 'one pass')]
  rows, dim = sum(results['shape']['field_dims']), results['shape']['dim']
  terms = rows * 4 * 64 * (dim // 4)
  lines = _anatomy_table(results, ('ue', 'mgqe S=4 K=64', 'dartsemb search {1,2,8}')) + ['', _fill(
      f'Where the time goes. The MGQE step ({mgqe / ue:.2f} UE steps) is the nearest-centroid '
      f'search, {mgqe - plain:.3f} ms ({(mgqe - plain) / ue:.2f} UE steps: {terms:,} squared '
      'differences a step, every row against every centroid of its subspace, then the minimum '
      f'and its index), and the rest of the step, {plain / ue:.2f} UE steps (the lookups of '
      'codes and centroids, the codebook and commitment terms, the scatter of the centroids\' '
      'gradient). Computing the distances as `|q|^2 - 2 q.c + |c|^2` with a matrix product, and '
      'writing them out once for both reductions, were both tried and measured no faster on '
      'this machine. Short of searching less often than every step (a change of the method, '
      'not of its implementation), the target of 3 is missed by the search\'s arithmetic. '
      'DartsEmb\'s search step '
      f'({search / ue:.2f} UE steps) is {search / one_pass:.2f} times one ordinary step of the '
      f'supernet ({one_pass / ue:.2f} UE steps): its two passes (the weights on a training '
      'batch, the architecture on a validation batch) cost what two steps cost, and it is each '
      'pass that is dearer than a UE step, by mixing three candidate tables per field forward '
      f'and backward ({k[("dartsemb search {1,2,8}", "one pass")]} kernels a pass against a UE '
      f'step\'s {k[("ue", "whole")]}: a small product per field and candidate). Its floor is therefore twice a supernet pass, not twice a UE step, and the '
      'target of 2 is missed by the supernet itself; one product for all fields and candidates '
      '(rows gathered by field) was tried and measured slower than a product per field and '
      'candidate.')]
  return '\n'.join(lines) + '\n'


def _speed_ratio(results: dict, ratio: str, part: str, shape: str, method: str, per_dispatch: int,
           granularity=None, mode: str = 'dense') -> float:
  (row,) = [r for r in results['ratios'] if r['ratio'] == ratio and r['part'] == part
            and r['shape'] == shape and r['model'] == 'fm' and r['method'] == method
            and r['per_dispatch'] == per_dispatch and r['granularity'] == granularity
            and r['mode'] == mode]
  return row


def _speed_rate(results: dict, part: str, shape: str, method: str, mode: str = 'dense',
          key: str = 'samples_per_second') -> float:
  granularity = None if method == 'ue' else 'feature_dimension'
  (row,) = [r for r in results['rows'] if r['part'] == part and r.get('shape') == shape
            and r.get('model') == 'fm' and r.get('method') == method and r.get('mode') == mode
            and r.get('granularity') == granularity and r.get('per_dispatch') == 200]
  return row[key]


def render_speed(results: dict) -> str:
  """The README's table of experiments/bench_speed.py's ratios (one run), from its JSON."""
  shapes = ('small', 'criteo')

  def cells(fn):
    return ' | '.join(fn(shape) for shape in shapes)

  def pep_ue(granularity):
    def cell(shape):
      one, block = (_speed_ratio(results, 'pep/ue step time', 'step', shape, 'pep', k, granularity)
                    for k in (1, 200))
      return f'{one["measured"]:.2f} (K=1), {block["measured"]:.2f} (K=200)'
    return cell

  implied = ' / '.join(
      f'{_speed_ratio(results, "pep/ue step time", "step", s, "pep", 1, "feature_dimension")["traffic_implied"]:.2f}'
      for s in shapes)
  lines = [
      '| measured in one run | MovieLens-sized | Criteo-sized |', '|---|---:|---:|',
      '| whole prune loop at 200 steps per call, over the isolated one-step step (target >= 0.9) '
      '| ' + cells(lambda s: f'{_speed_ratio(results, "loop/step samples/s", "loop", s, "pep", 200, "feature_dimension")["measured"]:.2f}') + ' |',
      '| the prune loop at 200 steps per call, over the same loop at one step per call | '
      + cells(lambda s: f'{_speed_ratio(results, "K>1/K=1 samples/s", "loop", s, "pep", 200, "feature_dimension")["measured"]:.2f}') + ' |',
      f'| PEP/UE step time, feature-dimension thresholds (traffic-implied: {implied}) | '
      + cells(pep_ue('feature_dimension')) + ' |',
      '| PEP/UE step time, dimension-wise thresholds (target <= 1.1) | '
      + cells(pep_ue('dimension')) + ' |',
      '| rows mode over dense, whole PEP prune loop (K=200) | '
      + cells(lambda s: f'{_speed_ratio(results, "rows/dense samples/s", "loop", s, "pep", 200, "feature_dimension", "rows")["measured"]:.2f}') + ' |',
      '| PEP prune loop, samples/s (K=200): dense / rows mode | '
      + cells(lambda s: f'{_speed_rate(results, "loop", s, "pep"):,.0f} / '
              f'{_speed_rate(results, "loop", s, "pep", "rows"):,.0f}') + ' |',
      '| evaluation, rows/s: UE / PEP\'s pruning state | '
      + cells(lambda s: f'{_speed_rate(results, "eval", s, "ue", key="rows_per_second"):,.0f} / '
              f'{_speed_rate(results, "eval", s, "pep", key="rows_per_second"):,.0f}') + ' |',
  ]
  machine = results['machine']
  return ('\n'.join(lines) + f'\n\nMeasured {machine["date"][:10]} on {machine["cpu_count"]} CPU '
          f'cores ({machine["processor"]}), JAX {machine["jax"]}, no accelerator.\n')


def _speed_step(results: dict, shape: str, method: str, granularity=None,
                per_dispatch: int = 200) -> dict:
  (row,) = [r for r in results['rows'] if r['part'] == 'step' and r['shape'] == shape
            and r['model'] == 'fm' and r['method'] == method and r['mode'] == 'dense'
            and r['granularity'] == granularity and r['per_dispatch'] == per_dispatch]
  return row


def render_speed_duration(results: dict) -> str:
  """docs/performance.md: what the rows of experiments/bench_speed.py's run timed, by model, as
  its JSON keeps no total for the run."""
  seconds = {}
  for r in results['rows']:
    if r['part'] in ('step', 'loop'):
      spent = r['ms_per_step'] * r['steps_timed'] / 1e3
    elif r['part'] == 'eval':
      spent = r['seconds']
    else:
      continue
    seconds[r['model']] = seconds.get(r['model'], 0.0) + spent
  models = sorted(seconds, key=seconds.get, reverse=True)
  (demo,) = [r for r in results['rows'] if r['part'] == 'demo']
  return _fill(
      'The JSON keeps each row\'s timing, not the run\'s total, to which compilation, data and '
      'set-up add: the timed steps and evaluations of all rows add up to '
      f'{sum(seconds.values()):.0f} s, of which '
      + _and([f'{MODEL_LABELS.get(m, m)} {seconds[m]:.0f} s' for m in models])
      + f', and the demo took {demo["seconds"]:.0f} s.') + '\n'


def render_speed_steps(results: dict) -> str:
  """docs/performance.md: where a step's time went and what was done about it, with the figures
  of experiments/bench_speed.py's run (its JSON) for the code as it is now."""
  fd = 'feature_dimension'
  one_step = _speed_ratio(results, 'loop/step samples/s', 'loop', 'small', 'pep', 1, fd)
  block = _speed_ratio(results, 'K>1/K=1 samples/s', 'step', 'criteo', 'pep', 200, fd)
  loops = [_speed_ratio(results, 'loop/step samples/s', 'loop', s, 'pep', 200, fd)['measured']
           for s in ('small', 'criteo')]
  dimension = [_speed_ratio(results, 'pep/ue step time', 'step', s, 'pep', k, 'dimension')
               ['measured'] for s in ('small', 'criteo') for k in (1, 200)]
  thresholds = _speed_step(results, 'small', 'pep', fd)
  (demo,) = [r for r in results['rows'] if r['part'] == 'demo']
  bullets = [
      '**Dispatch and host work.** A loop that dispatches one step at a time and reads its '
      'metrics back waits on the host between steps: on the MovieLens-sized table that loop runs '
      f'at {one_step["measured"]:.2f} of the isolated step (PEP, in the run of the README\'s '
      'table). The training loops now run `train.steps_per_dispatch` steps (200) per compiled '
      'call, a `lax.while_loop` over a slab of batches that a background thread builds and places '
      'ahead; on the Criteo-sized table the block step also runs at '
      f'{block["measured"]:.2f} times the one-step call\'s samples/s (the state stays in the '
      'loop\'s buffers). A block halts on the device after the step whose count reaches the next '
      'budget, so a ticket is cut from exactly that step\'s state; it also halts on a non-finite '
      f'loss. Loop over isolated step with blocks: {loops[0]:.2f} (MovieLens-sized), '
      f'{loops[1]:.2f} (Criteo-sized).',
      '**PEP\'s count.** The non-zero count after every update read the table and thresholds '
      'once more and compared and converted every entry, a second pass over the table beside the '
      'update\'s own. It now counts '
      '`sign(relu(|V| - t))` in float arithmetic with column sums (exact while a column has '
      'under 2**24 rows), which made the count cheaper when timed alone (those timings are not '
      'kept), and its zero no longer shares the gradient\'s zero buffer (XLA merged the two '
      'constants, so the count read a second table-sized array). The count still reads the '
      'updated table once: XLA:CPU fuses neither that reduction into the update nor the '
      'update\'s three outputs into one loop, which is why dimension-wise PEP stays at '
      f'{_span(dimension, ".2f")} times a uniform step in that run (K=1 and K=200, both '
      'tables) rather than 1.1.',
      '**PEP\'s thresholds.** For per-feature thresholds on a table smaller than a batch\'s '
      'lookups (MovieLens-sized), the gate is applied to the threshold table and the gated '
      'values gathered: 40,960 sigmoids (and derivatives) a step instead of 229,376. That made '
      'the PEP step on that table faster in a run before and after the change, whose figures are '
      f'not kept; in the run of the README\'s table it takes {thresholds["ms_per_step"]:.2f} ms '
      f'at {thresholds["per_dispatch"]} steps per call.',
      '**One device, no collective.** On a one-device mesh a lookup is a plain gather; the '
      'split lookup\'s transpose had added an identity all-reduce of the dense gradient.',
      '**Both cores.** XLA:CPU runs a step on about one core, and one device runs one program at '
      'a time (threads do not help). `train.parallel_runs` trains the candidates in worker '
      'processes beside the searches (the demo: one per core), which made the demo faster with '
      'identical results; the time before is not kept, and the demo took '
      f'{demo["seconds"]:.0f} s in the run of the README\'s table.',
  ]
  return '\n'.join(_fill(f'- {b}', '  ') for b in bullets) + '\n'


def render_public(results: dict) -> str:
  """experiments/bench_public.py's side-by-side prune loop, from its JSON."""
  public, ours = results['public'], results['ours']
  rounds = results.get('rounds', [])
  return ('| prune loop | steps/s | samples/s |\n|---|---:|---:|\n'
          f'| public code, torch {public["torch"]} ({public["threads"]} threads) | '
          f'{public["steps_per_second"]:,.1f} | {1024 * public["steps_per_second"]:,.0f} |\n'
          f'| pep_jax, {ours["steps_per_dispatch"]} steps per call | {ours["steps_per_second"]:,.1f} '
          f'| {1024 * ours["steps_per_second"]:,.0f} |\n'
          f'| ratio | {results["ratio_ours_over_public"]:.1f}x | |\n\n'
          f'{public["rows"]:,} rows; {results["machine"]["cpus"]} CPU cores '
          f'({results["machine"]["processor"]}), JAX {results["jax"]}'
          + (f'; the median of {len(rounds)} rounds of both sides in turn, whose ratios were '
             + _and([f'{r["ratio"]:.1f}x' for r in rounds])
             + ' (load average before the public side / ours: '
             + ', '.join(f'{r["load_before_public"]:.1f} / {r["load_before_ours"]:.1f}'
                         for r in rounds) + ')' if len(rounds) > 1 else '')
          + '.\n')


def render_table(results: str) -> str:
  """A table a script wrote as markdown, without the title line it starts with."""
  lines = [line for line in results.rstrip('\n').split('\n') if not line.startswith('# ')]
  while lines and not lines[0].strip():
    lines.pop(0)
  return '\n'.join(lines) + '\n'


def render_rows_vs_dense(results: dict) -> str:
  """experiments/rows_vs_dense.py's table, from its JSON."""
  module = _experiment('rows_vs_dense')
  machine = results['machine']
  return (module.markdown(results) + f'\n\nMeasured with `{results["config"]}` on '
          f'{machine["cpus"]} CPU cores ({machine["processor"] or "x86-64"}), JAX '
          f'{machine["jax"]}, with other work on the machine (speeds are of that run only).\n')


# ------------------------------------------------------------ export and serving (bench_export)
#
# The blocks below are written from results files that their scripts write, each with one
# command (the machine they ran on is in the file):
#
#   python experiments/bench_export.py --workdir=runs/demo --json=docs/results/bench_export.json
#   python experiments/lottery_ticket.py --workdir=runs/lottery_ticket \
#       --results=docs/results/lottery_ticket.json
#   python experiments/interactions.py --workdir=runs/interactions \
#       --run_dir=runs/lottery_ticket/run --results=docs/results/interactions.json
#   python experiments/sizes_vs_frequency.py --workdir=runs/sizes_vs_frequency \
#       --results=docs/results/sizes_vs_frequency.json
#
# then ``python experiments/readme_results.py`` rewrites the pages.


def _rate(rows_per_second: float) -> str:
  return f'{rows_per_second / 1e6:.2f}M'


def _span(values, fmt: str, unit: str = '') -> str:
  """``'a to b'`` over ``values``, or the one value when they round alike."""
  lo, hi = format(min(values), fmt) + unit, format(max(values), fmt) + unit
  return lo if lo == hi else f'{lo} to {hi}'


def _count(n: int) -> str:
  return ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')[n] \
      if n < 10 else f'{n:,}'


def _export_rows(results: dict, part: str) -> list[dict]:
  return [r for r in results['rows'] if r['part'] == part]


def _budget_percent(run: str, dense_table_bytes: int) -> str:
  """``'10%'`` for ``pep_b53454`` of a 534,544-entry table."""
  return _percent(int(run.split('_b')[-1]), dense_table_bytes // 4)


def _smallest_ticket(results: dict) -> str:
  return min({r['run'] for r in _export_rows(results, 'forms') if r['run'].startswith('pep_b')},
             key=lambda run: int(run.split('_b')[-1]))


def _form(results: dict, run: str, layout: str, form: str) -> dict:
  return next(r for r in _export_rows(results, 'forms')
              if (r['run'], r['layout'], r['form']) == (run, layout, form))


def _demo_shape(results: dict) -> tuple[int, int]:
  """Features and base width of the demo, from its widest uniform model's dense table."""
  ue = max((r for r in _export_rows(results, 'forms') if r['run'].startswith('ue_d')),
           key=lambda r: int(r['run'].split('_d')[-1]))
  dim = int(ue['run'].split('_d')[-1])
  return ue['dense_table_bytes'] // (4 * dim), dim


def _machine_line(results: dict) -> str:
  machine = results['machine']
  return (f'{machine["cpu_count"]}-core {machine["processor"].replace("_", "-")} '
          f'{machine["device_platform"].upper()}')


def render_export_forms(results: dict) -> str:
  """docs/serving.md: every run of the demo in each layout and form."""
  machine = results['machine']
  device = 'no accelerator' if machine['device_platform'] == 'cpu' else machine['device_kind']
  lines = ['`python experiments/bench_export.py --workdir=runs/demo '
           '--json=docs/results/bench_export.json`',
           '(printed table: [results/bench_export.txt](results/bench_export.txt)), on a '
           f'{_machine_line(results)}',
           f'shared with other engineers\' jobs, {device}, JAX {machine["jax"]}. Every finished '
           'run of the demo',
           f'(FM, `D = {_demo_shape(results)[1]}`, 50,000 test rows), exported in each form and '
           'layout; rows/s of the lookup alone',
           '(derived arrays computed once) and of the whole scorer (lookup and FM), in batches of '
           f'{results["batch_size"]:,},',
           f'best of {results["repeats"]}, the forms of a layout timed in turn so that load from '
           'other jobs falls on all of',
           'them; `/float` is over the same layout\'s float32 form. The machine was shared: rows/s '
           'vary',
           'between runs, ratios less.', '',
           '| run | layout | form | bytes (of dense) | test AUC | AUC drop | max \\|Δp\\| '
           '| lookup rows/s (/float) | scorer rows/s (/float) |',
           '|---|---|---|---:|---:|---:|---:|---:|---:|']
  for r in _export_rows(results, 'forms'):
    lines.append(f'| {r["run"]} | `{r["layout"]}` | {r["form"]} | {r["bytes"]:,} '
                 f'({r["fraction_of_dense"]:.2%}) | {r["test_auc"]:.5f} | {r["auc_drop"]:+.5f} '
                 f'| {r["max_prob_diff"]:.1e} | {_rate(r["lookup_rows_per_second"])} '
                 f'({r["lookup_over_float"]:.2f}) | {_rate(r["scorer_rows_per_second"])} '
                 f'({r["scorer_over_float"]:.2f}) |')
  return '\n'.join(lines) + '\n'


def render_export_criteo(results: dict) -> str:
  """docs/serving.md: the Criteo-sized table's forms."""
  rows = _export_rows(results, 'criteo')
  first = rows[0]
  batches = (f'{results["criteo_batches"]} batches' if 'criteo_batches' in results
             else 'batches')
  lines = [f'A Criteo-sized table ({first["rows"]:,} features in 39 fields, `D = {first["dim"]}`, '
           f'synthetic: a random table',
           f'with {results["density"]:.0%} of its entries kept, {first["nonzeros"]:,} non-zeros; '
           f'random ids, {batches} of {results["batch_size"]:,} rows),',
           'lookup only:', '',
           '| layout | form | bytes (of dense) | lookup rows/s (/float) | derive once '
           '| lookup of a batch | rows/s deriving on every call (/once) |',
           '|---|---|---:|---:|---:|---:|---:|']
  for r in rows:
    cells = ['-', '-', '-']
    if 'derive_seconds' in r:
      every = r['lookup_rows_per_second_deriving_every_call']
      cells = [f'{1e3 * r["derive_seconds"]:.2f} ms', f'{1e3 * r["batch_seconds"]:.2f} ms',
               f'{_rate(every)} ({every / r["lookup_rows_per_second"]:.2f})']
    lines.append(f'| `{r["layout"]}` | {r["form"]} | {r["bytes"]:,} ({r["fraction_of_dense"]:.2%}) '
                 f'| {_rate(r["lookup_rows_per_second"])} ({r["lookup_over_float"]:.2f}) | '
                 + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


# The targets the quantised forms were built to: int8 bytes over the dense float32 table, test
# AUC drop of int8, int8 bitmask lookup rows/s over the float form's.
INT8_BYTES_TARGET = 0.06
INT8_AUC_TARGET = 0.0005
INT8_LOOKUP_TARGET = 0.7


def _met(ok: bool) -> str:
  return '**met**' if ok else '**not met**'


def render_export_targets(results: dict) -> str:
  """docs/serving.md: the targets of the 10% ticket, the quantised dense forms, and why
  ``bitmask`` is the default layout."""
  ticket = _smallest_ticket(results)
  tickets = sorted({r['run'] for r in _export_rows(results, 'forms') if r['run'] == ticket
                    or r['run'].startswith('pep_b')})
  float_, int8, int4 = (_form(results, ticket, 'bitmask', f) for f in ('none', 'int8', 'int4'))
  share = _budget_percent(ticket, float_['dense_table_bytes'])
  num_rows, _ = _demo_shape(results)
  stored_offsets = float_['bytes'] + 4 * num_rows
  criteo = {(r['layout'], r['form']): r for r in _export_rows(results, 'criteo')}
  int8_ratios = [_form(results, t, 'bitmask', 'int8')['lookup_over_float'] for t in tickets]
  criteo_int8 = criteo['bitmask', 'int8']['lookup_over_float']
  lines = [f'**Targets** (the demo\'s {share} ticket, `bitmask`):', '',
           f'* int8 embedding at most {INT8_BYTES_TARGET:.0%} of the dense float32 table: '
           f'{_met(int8["fraction_of_dense"] <= INT8_BYTES_TARGET)}, {int8["bytes"]:,} bytes, '
           f'{int8["fraction_of_dense"]:.2%}. The',
           f'  float form is {float_["bytes"]:,} bytes ({float_["fraction_of_dense"]:.2%}); with '
           'its offsets stored (4 bytes per feature),',
           f'  as earlier formats did, it would be {stored_offsets:,} '
           f'({stored_offsets / float_["dense_table_bytes"]:.2%}).',
           f'* test AUC within {INT8_AUC_TARGET} of the float model: '
           f'{_met(abs(int8["auc_drop"]) <= INT8_AUC_TARGET)}, {int8["test_auc"]:.5f} against '
           f'{float_["test_auc"]:.5f} (int8).',
           f'* int4, reported: {int4["bytes"]:,} bytes ({int4["fraction_of_dense"]:.2%}), test '
           f'AUC {int4["test_auc"]:.5f}, a drop of {int4["auc_drop"]:.5f}.',
           f'* lookup rows/s of the int8 `bitmask` form at least {INT8_LOOKUP_TARGET}x the float '
           f'form\'s: {_met(min(int8_ratios + [criteo_int8]) >= INT8_LOOKUP_TARGET)}, '
           f'{int8["lookup_over_float"]:.2f}x on',
           f'  the demo\'s {share} ticket ({_span(int8_ratios, ".2f", "x")} over the '
           f'{_count(len(tickets))} tickets) and {criteo_int8:.2f}x on the '
           'Criteo-sized',
           '  table.', '']
  dense = [r for r in _export_rows(results, 'forms') if r['layout'] == 'dense']
  quantised = [r for r in dense if r['form'] != 'none']
  floats = [r['lookup_rows_per_second'] for r in dense if r['form'] == 'none']
  lines += [
      'Not a target, and slower: the quantised `dense` forms on the demo '
      f'({_span([r["lookup_over_float"] for r in quantised], ".2f", "x")} of the',
      f'float lookup, {_span([r["scorer_over_float"] for r in quantised], ".2f", "x")} of the '
      f'scorer). A float dense row is one contiguous gather, at '
      f'{min(floats) / 1e6:.0f}M',
      f'to {max(floats) / 1e6:.0f}M rows/s here; dequantising adds a pass over every looked-up '
      'entry, which that speed makes',
      'visible. On the Criteo-sized table, where the table no longer fits the caches, int8 ran at',
      f'{criteo["dense", "int8"]["lookup_over_float"]:.2f}x and int4 at '
      f'{criteo["dense", "int4"]["lookup_over_float"]:.2f}x of the float rows.', '']
  over_csr = [_form(results, t, 'bitmask', 'none')['lookup_rows_per_second']
              / _form(results, t, 'csr', 'none')['lookup_rows_per_second'] for t in tickets]
  smaller = all(_form(results, t, 'bitmask', f)['bytes'] < _form(results, t, 'csr', f)['bytes']
                for t in tickets for f in ('none', 'int8', 'int4'))
  csr_float, csr_int8 = (_form(results, ticket, 'csr', f) for f in ('none', 'int8'))
  lines += [
      '**Why `bitmask` is the default.** Its lookup ran at '
      f'{_span(over_csr, ".1f", "x")} the rows/s of `csr` in',
      'float32 on every demo ticket: it gathers one mask and one offset per looked-up feature and',
      'reads each value at a computed position, while `csr` must also gather the column of every',
      'value and scatter the values into their dimensions. With the offsets derived it is also '
      'the',
      f'smaller {"at every budget" if smaller else "here"} ({float_["bytes"]:,} against '
      f'{csr_float["bytes"]:,} bytes at {share}), and more so quantised, where',
      f'`csr` still spends a column byte per value ({int8["bytes"]:,} against '
      f'{csr_int8["bytes"]:,} in int8).']
  return '\n'.join(lines) + '\n'


def render_export_schemes(results: dict) -> str:
  """docs/serving.md: bytes and AUC drop of each quantisation scheme and scale group."""
  rows = _export_rows(results, 'study')
  runs = list(dict.fromkeys(r['run'] for r in rows))
  schemes = {name: scheme for name, scheme in results['schemes'].items() if scheme}
  dense_bytes = {r['run']: r['bytes'] / r['fraction_of_dense'] for r in rows}

  def title(run: str) -> str:
    if run.startswith('pep_b'):
      return f'{run} ({_budget_percent(run, round(dense_bytes[run]))} ticket)'
    return run

  header = ' | '.join(f'{title(run)}: bytes of dense | AUC drop' for run in runs)
  lines = [f'| bits | scheme | entries per scale | {header} |',
           '|---:|---|---:|' + '---:|---:|' * len(runs)]
  cells = {}
  for r in rows:
    cells.setdefault((r['bits'], r['symmetric'], r['group']), []).append(
        f'{r["fraction_of_dense"]:.2%} | {r["auc_drop"]:+.5f}')
  for (bits, symmetric, group), values in cells.items():
    scheme = 'symmetric' if symmetric else 'affine'
    for name, s in schemes.items():
      if (s['bits'], s['symmetric'], s['group']) == (bits, symmetric, group):
        scheme += f' **(`{name}`)**'
    lines.append(f'| {bits} | {scheme} | {group or "array"} | ' + ' | '.join(values) + ' |')
  return '\n'.join(lines) + '\n'


def render_export_scheme_choice(results: dict) -> str:
  """docs/serving.md: why ``int8`` and ``int4`` use the schemes they do, from the study."""
  rows = _export_rows(results, 'study')
  ticket, uniform = (next(r['run'] for r in rows if r['run'].startswith(p))
                     for p in ('pep_b', 'ue_d'))
  int8, int4 = (results['schemes'][name] for name in ('int8', 'int4'))

  def at(run, bits, symmetric, group):
    return next(r for r in rows if (r['run'], r['bits'], r['symmetric'], r['group'])
                == (run, bits, symmetric, group))

  def of(run, bits):
    return [r for r in rows if r['run'] == run and r['bits'] == bits]

  eight = [r['auc_drop'] for r in rows if r['bits'] == 8]
  both_ways = ', up and down alike' if min(eight) < 0 < max(eight) else ''
  finest = min(r['group'] for r in rows if r['group'])
  points = {run: 100 * (at(run, 8, int8['symmetric'], int8['group'])['fraction_of_dense']
                        - min(r['fraction_of_dense'] for r in of(run, 8)))
            for run in (ticket, uniform)}
  whole = [r['auc_drop'] for r in rows if r['bits'] == 4 and not r['group']]
  chosen = {run: at(run, 4, int4['symmetric'], int4['group']) for run in (ticket, uniform)}
  other = not int4['symmetric']
  same_group = {run: at(run, 4, other, int4['group']) for run in (ticket, uniform)}
  finest_other = at(ticket, 4, other, finest)
  smallest = {run: min(r['auc_drop'] for r in of(run, 4)) for run in (ticket, uniform)}
  ties = [r for r in of(uniform, 4) if r is not chosen[uniform]
          and f'{r["auc_drop"]:.5f}' == f'{chosen[uniform]["auc_drop"]:.5f}']

  def scheme(symmetric: bool) -> str:
    return 'symmetric' if symmetric else 'affine'

  if chosen[ticket]['auc_drop'] <= smallest[ticket]:
    on_ticket = 'the smallest drop on the ticket'
  else:
    on_ticket = f'not the smallest drop on the ticket (that is {smallest[ticket]:.5f})'
  if chosen[uniform]['auc_drop'] <= smallest[uniform]:
    on_uniform = 'on the uniform model no more than any other'
  else:
    on_uniform = f'on the uniform model more than the smallest ({smallest[uniform]:.5f})'
  tie = (f', the same as {scheme(ties[0]["symmetric"])} at {ties[0]["group"] or "array"}'
         if ties else '')
  extra = {run: 100 * (chosen[run]['fraction_of_dense'] - same_group[run]['fraction_of_dense'])
           for run in (ticket, uniform)}
  float_ = _form(results, ticket, 'bitmask', 'none')
  num_rows, _ = _demo_shape(results)
  share = _budget_percent(ticket, float_['dense_table_bytes'])
  return _fill(
      f'At 8 bits every grouping moved the test AUC by at most {max(map(abs, eight)):.5f} either '
      f'way{both_ways}: the group only costs bytes, from '
      f'{at(ticket, 8, True, finest)["fraction_of_dense"]:.2%} (ticket) and '
      f'{at(uniform, 8, True, finest)["fraction_of_dense"]:.2%} (uniform) of the dense table at '
      f'{finest} entries per scale (for the uniform {uniform.split("_")[-1].replace("d", "d=")} '
      'table, one scale per row) down to '
      f'{at(ticket, 8, True, 0)["fraction_of_dense"]:.2%} and '
      f'{at(uniform, 8, True, 0)["fraction_of_dense"]:.2%} with one scale per array. `int8` is '
      f'**{scheme(int8["symmetric"])} with a scale per {int8["group"]} entries**: '
      f'{points[ticket]:.2f} and {points[uniform]:.2f} points above the smallest, and a large '
      f'entry coarsens only the {int8["group"] - 1} entries around it, not the whole table. At 4 '
      f'bits the drop tends to grow with the group (a whole-array scale loses '
      f'{_span(whole, ".4f")}), and `int4` is **{scheme(int4["symmetric"])} with a scale'
      f'{" and offset" if not int4["symmetric"] else ""} per {int4["group"]} entries**: '
      f'{on_ticket} ({chosen[ticket]["auc_drop"]:.5f}, against '
      f'{same_group[ticket]["auc_drop"]:.5f} {scheme(other)} at {int4["group"]} and '
      f'{finest_other["auc_drop"]:.5f} {scheme(other)} at {finest}) and {on_uniform} '
      f'({chosen[uniform]["auc_drop"]:.5f}{tie}), for {extra[ticket]:.2f} points more bytes than '
      f'{scheme(other)} at {int4["group"]} on the ticket and {extra[uniform]:.2f} on the uniform '
      'model. One scale per row (per feature) would cost 4 bytes per feature, more than the '
      f'{share} ticket\'s whole int8 values (one byte per value, '
      f'{float_["nonzeros"] / num_rows:.1f} values per feature), and a scale per field is no '
      'grouping of the stored order a lookup can find without a per-row index; blocks of stored '
      'entries need neither.') + '\n'


def render_export_derive(results: dict) -> str:
  """docs/serving.md: what deriving the bitmask's offsets on every call would cost."""
  rows = [r for r in _export_rows(results, 'criteo') if 'derive_seconds' in r]
  derive = [1e3 * r['derive_seconds'] for r in rows]
  batch = [1e3 * r['batch_seconds'] for r in rows]
  every = [r['lookup_rows_per_second_deriving_every_call'] / r['lookup_rows_per_second']
           for r in rows]
  longer = 'longer' if min(derive) > max(batch) else 'not always longer'
  return _fill(
      'Measured on the Criteo-sized table (below): deriving the bitmask\'s offsets takes '
      f'{_span(derive, ".1f")} ms, {longer} than looking up a whole batch of '
      f'{results["batch_size"]:,} rows ({_span(batch, ".1f")} ms), and a lookup that derives on '
      f'every call ran at {_span(every, ".2f", "x")} the rows/s of one that derived once; a server '
      f'answering small batches would pay the whole {max(derive):.0f} ms on each request.') + '\n'


def render_export_check(results: dict) -> str:
  """docs/serving.md: the check's figures on the demo's smallest ticket and uniform models."""
  ticket = _smallest_ticket(results)
  float_, int8, int4 = (_form(results, ticket, 'bitmask', f) for f in ('none', 'int8', 'int4'))
  share = _budget_percent(ticket, float_['dense_table_bytes'])
  uniform = sorted((r for r in _export_rows(results, 'forms') if r['layout'] == 'dense'),
                   key=lambda r: -int(r['run'].split('_d')[-1]))
  refused = {f: [r for r in uniform if r['form'] == f and not r['passes_default_check']]
             for f in ('int8', 'int4')}
  drops = ', '.join(f'{r["auc_drop"]:.5f} at {r["run"].split("_")[-1].replace("d", "d=")}'
                    for r in refused['int4'])
  if refused['int4'] and not refused['int8']:
    uniform_line = (f'the uniform models\' int4 forms (drops {drops}) are refused at the default '
                    'tolerance, their int8 forms are not.')
  else:
    uniform_line = (f'of the uniform models, {len(refused["int4"])} int4 and '
                    f'{len(refused["int8"])} int8 forms are refused at the default tolerance.')
  test_rows = '50,000 test rows'
  first = _fill(
      '* float32 form: the artifact is written only when both compact versions agree with the '
      'trained model within `1e-6` relative. On the demo\'s '
      f'{share} ticket the largest absolute difference of a probability is '
      f'{float_["max_prob_diff"]:.1e} ({test_rows}).', '  ')
  second = _fill(
      '* quantised form: the artifact is written only when the StableHLO scorer agrees with the '
      'compact model within `1e-6` relative and the test AUC moves by at most `--max_auc_drop` '
      '(0.001) either way. Otherwise the export stops with one line (`InputError`) naming the '
      'form, both AUCs and the tolerance, and writes nothing. On the demo\'s '
      f'{share} ticket the test AUC is {float_["test_auc"]:.5f} in float32, '
      f'{int8["test_auc"]:.5f} in int8 and {int4["test_auc"]:.5f} in int4 (a drop of '
      f'{int4["auc_drop"]:.5f}, though single probabilities move by up to '
      f'{int4["max_prob_diff"]:.2f}); ' + uniform_line, '  ')
  return first + '\n' + second + '\n'


def _fill(text: str, indent: str = '') -> str:
  """``text`` wrapped at 100 columns, never inside a word or a flag; later lines indented."""
  return textwrap.fill(text, 100, subsequent_indent=indent, break_on_hyphens=False,
                       break_long_words=False)


def render_export_readme(results: dict) -> str:
  """README.md: the smallest demo ticket exported, float32, int8 and int4."""
  ticket = _smallest_ticket(results)
  float_, int8, int4 = (_form(results, ticket, 'bitmask', f) for f in ('none', 'int8', 'int4'))
  _, dim = _demo_shape(results)
  machine = results['machine']
  device = 'no accelerator' if machine['device_platform'] == 'cpu' else machine['device_kind']
  return _fill(
      f'The demo\'s {_budget_percent(ticket, float_["dense_table_bytes"])} ticket '
      f'({float_["nonzeros"]:,} non-zeros) exported as above: its embedding takes '
      f'{float_["bytes"]:,} bytes against {float_["dense_table_bytes"]:,} for the dense d={dim} '
      f'table ({float_["fraction_of_dense"]:.1%}; a bit mask per feature and the values, each '
      f'row\'s offset derived when the artifact is loaded), and {int8["bytes"]:,} bytes '
      f'({int8["fraction_of_dense"]:.1%}) with `--quantize=int8`, at a test AUC of '
      f'{int8["test_auc"]:.5f} against the float model\'s {float_["test_auc"]:.5f} (50,000 test '
      f'rows); int4 takes {int4["bytes"]:,} bytes ({int4["fraction_of_dense"]:.1%}) and '
      f'{"loses" if int4["auc_drop"] >= 0 else "gains"} {abs(int4["auc_drop"]):.5f} AUC. The '
      f'whole int8 artifact is {int8["artifact_bytes"]:,} bytes on disk. Measured on a '
      f'{_machine_line(results)} shared with other jobs, {device}.') + '\n'


# ------------------------------------------- the paper's analyses (lottery tickets, sizes, pairs)

# One seed: AUC differences below this are not told apart from seed-to-seed noise.
SEED_NOISE = 0.005


def _measured_on(results: dict) -> str:
  machine = results['machine']
  device = 'no accelerator' if machine['device'] == 'cpu' else machine['device']
  return (f'{machine["cpus"]} CPU cores ({machine["processor"] or "x86-64"}), {device}, JAX '
          f'{machine["jax"]}, shared with other jobs (load average '
          f'{machine["load_average_1min"]:.1f} when the results were written)')


def _fields(fields: list[int]) -> str:
  if fields == list(range(fields[0], fields[-1] + 1)):
    return f'{fields[0]} to {fields[-1]}'
  return ', '.join(map(str, fields))


def render_analyses_setting(results: dict) -> str:
  """docs/analyses.md: the synthetic default the analyses run on (lottery_ticket.json)."""
  data = results['data']
  budgets = ' and '.join(_percent(r['budget'], results['entries']) for r in results['rows'])
  return _fill(
      f'The default synthetic setting (`synthetic_analysis_config`) is the demo\'s: '
      f'{data["fields"]} fields, {data["features"]:,} features, {data["rows"] // 1000:,}k rows, '
      f'{results["model"].upper()}, d={results["dim"]}, `s_init={results["s_init"]:g}`. It '
      f'departs from the demo in three ways: budgets of {budgets} of the table, retraining '
      f'capped at {results["retrain_max_epochs"]} epochs with patience 2, and one uniform '
      f'baseline, at d={results["dim"]}.') + '\n'


def _signed_list(values: list[tuple[str, float]]) -> str:
  return ' and '.join(f'{v:+.4f} AUC at {name}' for name, v in values)


def render_lottery_ticket(results: dict) -> str:
  """docs/analyses.md: rewind, random re-initialisation, no retraining and the unpruned model."""
  rows, entries = results['rows'], results['entries']
  unpruned = rows[0]['unpruned_nonzeros']
  keys = ('rewind', 'random', 'no_retraining', 'unpruned')
  lines = ['| budget | ticket step | non-zeros | rewind | random | no retraining | unpruned '
           f'({unpruned:,}) |', '|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    best = max(keys, key=lambda k: r[k])
    cells = [f'**{r[k]:.4f}**' if k == best else f'{r[k]:.4f}' for k in keys]
    lines.append(f'| {_percent(r["budget"], entries)} | {r["ticket_step"]:,} | '
                 f'{r["nonzeros"]:,} | ' + ' | '.join(cells) + ' |')
  lines += ['', _fill(f'(Test AUC on the synthetic default, one seed. The teacher\'s ceiling is '
                     f'{results["teacher_test_auc"]:.4f}. Measured on {_measured_on(results)}.)'),
            '']
  over_random = [(_percent(r['budget'], entries), r['rewind'] - r['random']) for r in rows]
  signs = {v > 0 for _, v in over_random}
  if signs == {True}:
    verdict = 'Rewound tickets score above the same masks retrained from a random table'
  elif signs == {False}:
    verdict = 'Rewound tickets score below the same masks retrained from a random table'
  else:
    verdict = 'Rewinding against random re-initialisation goes both ways'
  small = all(abs(v) < SEED_NOISE for _, v in over_random)
  random_vs_unpruned = max(abs(r['random'] - r['unpruned']) for r in rows)
  lowest = min(r['nonzeros'] for r in rows) / entries
  highest = max(r['nonzeros'] for r in rows) / entries
  bullet = f'- {verdict} (rewind minus random): {_signed_list(over_random)}.'
  if signs == {True}:
    bullet += ' That is the direction of the paper\'s ablation.'
  if small:
    bullet += (' With one seed, differences of a few thousandths are not separable: this run '
               'does not tell rewinding from random re-initialisation.')
  if random_vs_unpruned < SEED_NOISE:
    bullet += (f' Random re-initialisation still matches the unpruned model (within '
               f'{random_vs_unpruned:.4f}) with {lowest:.0%} to {highest:.0%} of its parameters.')
  lines.append(_fill(bullet, '  '))
  by_step = sorted(rows, key=lambda r: r['ticket_step'])
  lost = [(r, r['rewind'] - r['no_retraining']) for r in by_step]
  parts = [f'{d:.4f} AUC at {_percent(r["budget"], entries)} (cut at step {r["ticket_step"]:,})'
           for r, d in lost]
  if len(lost) > 1 and lost[0][1] > lost[-1][1] + SEED_NOISE:
    lead = 'Retraining matters when the ticket is cut early. '
  else:
    lead = ''
  bullet = (f'- {lead}Scoring the pruning model as it is at the ticket\'s step, without '
            f'retraining, loses ' + ' and '.join(parts) + ' against the rewound ticket.')
  close = [f'{_percent(r["budget"], entries)}' for r, d in lost if abs(d) < SEED_NOISE]
  if close:
    bullet += (f' At {" and ".join(close)} the difference is below what one seed separates: a '
               'ticket cut late needs little retraining.')
  lines.append(_fill(bullet, '  '))
  return '\n'.join(lines) + '\n'


def render_sizes_vs_frequency(results: dict) -> str:
  """docs/analyses.md: learned sizes against frequency and the planted dimensions."""
  groups, steps, dim = results['groups'], results['steps'], results['dim']
  entries = results['data']['features'] * dim
  final = [g['sparsity'][-1] for g in groups]
  rarest = groups[0]
  times = {1: 'once', 2: 'twice'}.get(rarest['max_count'], f'{rarest["max_count"]:,} times')
  seen = (f'features seen at most {times}' if rarest['min_count'] == 0 else
          f'features seen {rarest["min_count"]:,} to {rarest["max_count"]:,} times')
  ordered = all(a >= b for a, b in zip(final, final[1:]))
  first = ('- The rarest features go first. ' if ordered else '- ') + (
      f'Group 1 ({seen}) is {rarest["sparsity"][1]:.1%} zero by step {steps[1]:,} and '
      f'{rarest["sparsity"][2]:.1%} by step {steps[2]:,}. At the '
      f'{_percent(results["budgets"][-1], entries)} ticket (step {steps[-1]:,}) the groups are '
      + ', '.join(f'{s:.1%}' for s in final[:-1]) + f' and {final[-1]:.1%} sparse, from the '
      'rarest group to the most frequent.')
  c = results['correlations']
  lines = [_fill(first, '  '), '- Spearman\'s rank correlation at that step:',
           f'  - {c["size_vs_frequency"]:.3f} between a feature\'s size and its frequency;',
           f'  - {c["size_vs_field_intrinsic"]:.3f} between a feature\'s size and its field\'s '
           'planted intrinsic dimension;',
           f'  - {c["field_size_vs_intrinsic"]:.3f} between a field\'s mean size and its '
           'intrinsic dimension.']
  noise = [r for r in results['rows'] if r['intrinsic_dim'] == 0]
  small, large = (min(noise, key=lambda r: r['vocabulary']),
                  max(noise, key=lambda r: r['vocabulary']))
  text = ('- So on this data frequency decides the size more than the planted truth does. '
          if c['size_vs_frequency'] > c['size_vs_field_intrinsic'] else '- ')
  if small['mean_size'] > dim / 2:
    text += (f'Noise fields with few values keep large embeddings: a noise field of '
             f'{small["vocabulary"]:,} values averages {small["mean_size"]:.1f} of {dim}. An FM '
             'can use such a near-constant embedding as an extra linear term. ')
  if large['mean_size'] == min(r['mean_size'] for r in noise):
    text += (f'The largest noise vocabularies end smallest: {large["vocabulary"]:,} values '
             f'average {large["mean_size"]:.2f} entries.')
  lines.append(_fill(text.rstrip(), '  '))
  lines += ['', _fill(f'Measured on {_measured_on(results)}.')]
  return '\n'.join(lines) + '\n'


def render_interactions(results: dict) -> str:
  """docs/analyses.md: field interactions of the uniform model and the tickets."""
  rows, entries = results['rows'], results['entries']
  lines = ['| model | non-zeros | mean off-diagonal interaction | share carried by pairs with a '
           'noise field | correlation of the informative pairs with the uniform model\'s |',
           '|---|---:|---:|---:|---:|']
  for r in rows:
    name = (f'PEP, {_percent(r["budget"], entries)} ticket' if r['budget']
            else r['model'])
    lines.append(f'| {name} | {r["nonzeros"]:,} | {r["mean_interaction"]:.4f} | '
                 f'{r["noise_pair_share"]:.3f} | {r["informative_correlation"]:.3f} |')
  noise = results['data']['noise_fields']
  informative = [f for f in range(results['data']['fields']) if f not in noise]
  uniform, tickets = rows[0], sorted(rows[1:], key=lambda r: -r['budget'])
  shares = [uniform['noise_pair_share']] + [r['noise_pair_share'] for r in tickets]
  text = (f'Fields {_fields(noise)} are the noise fields, and '
          f'{results["noise_pair_fraction"]:.0%} of the field pairs involve one of them. ')
  if uniform['noise_pair_share'] < results['noise_pair_fraction']:
    text += ('The uniform model already gives those pairs small interactions: they carry '
             f'{uniform["noise_pair_share"]:.3f} of the total. ')
  if all(a > b for a, b in zip(shares, shares[1:])):
    text += ('The PEP tickets shrink them further: the share of the total carried by noise '
             f'pairs drops from {shares[0]:.3f} to {shares[-1]:.3f} at '
             f'{_percent(tickets[-1]["budget"], entries)}. ')
  else:
    text += ('The tickets do not shrink that share steadily: ' + ', '.join(
        f'{s:.3f}' for s in shares) + ' from the uniform model to the smallest ticket. ')
  kept = min(r['informative_correlation'] for r in tickets) >= 0.9
  text += (f'The informative block (fields {_fields(informative)}) '
           f'{"keeps" if kept else "does not keep"} its pattern: its pairs correlate with the '
           'uniform model\'s at '
           + ' and '.join(f'{r["informative_correlation"]:.3f}' for r in tickets) + '.')
  lines += ['', _fill(text), '',
            _fill(f'Averaged over {results["averaged_over_rows"]:,} test rows; measured on '
                  f'{_measured_on(results)}.')]
  return '\n'.join(lines) + '\n'


def _granularity_rows(results: str) -> tuple[list[dict], float]:
  """experiments/granularity.py's markdown table as rows, and the uniform model's test AUC."""
  rows = [{k: None if v == '-' else v if k == 'granularity' else float(v) for k, v in row.items()}
          for row in markdown_table(results)]
  uniform = float(re.search(r'Uniform model at d=\d+: test AUC (\d+\.\d+)', results).group(1))
  return rows, uniform


PER_FEATURE = ('feature', 'feature_dimension')


def _granularity_facts(results: str) -> dict:
  rows, uniform = _granularity_rows(results)
  budgets = sorted({r['budget'] for r in rows}, reverse=True)
  final = {r['granularity']: r['final_nonzeros'] for r in rows}
  shared = {g: n for g, n in final.items() if g not in PER_FEATURE}
  large = [r for r in rows if r['budget'] == budgets[0] and r['test_auc'] is not None]
  small = [r for r in rows if r['budget'] == budgets[-1]]
  return {'rows': rows, 'uniform': uniform, 'budgets': budgets, 'final': final, 'shared': shared,
          'large': large, 'reached_small': [r for r in small if r['ticket_step'] is not None],
          'per_feature_lowest': sorted(final, key=final.get)[:2] == sorted(
              PER_FEATURE, key=final.get)}


def render_granularity_notes(results: str) -> str:
  """docs/analyses.md: what the granularities' table shows."""
  f = _granularity_facts(results)
  large, budgets, shared = f['large'], f['budgets'], f['shared']
  bullets = []
  if f['per_feature_lowest']:
    bullets.append('- Only per-feature thresholds (`feature`, `feature_dimension`) keep pruning '
                   'quickly after the first thousand steps. Each feature has its own thresholds, '
                   'so rare rows can be pruned without touching frequent ones.')
  slowest = max(large, key=lambda r: r['ticket_step'])
  bullets.append(
      f'- Shared thresholds ({", ".join(f"`{g}`" for g in shared)}) flatten out between '
      f'{min(shared.values()):,.0f} and {max(shared.values()):,.0f} non-zeros, above the smaller '
      f'budget ({budgets[-1]:,.0f}). `{slowest["granularity"]}` reaches the larger budget only at '
      f'step {slowest["ticket_step"]:,.0f}.')
  aucs = [r['test_auc'] for r in large]
  text = (f'- At the larger budget the {_count(len(large))} tickets lie within '
          f'{max(aucs) - min(aucs):.4f} AUC of one another, and '
          + ('all score above the uniform model. ' if min(aucs) > f['uniform'] else
             f'{sum(a > f["uniform"] for a in aucs)} score above the uniform model. '))
  reached = f['reached_small']
  best = max((r for r in f['rows'] if r['test_auc'] is not None), key=lambda r: r['test_auc'])
  if len(reached) == 1:
    (only,) = reached
    name = ('The paper\'s default, `feature_dimension`,' if only['granularity'] ==
            'feature_dimension' else f'`{only["granularity"]}`')
    text += f'{name} is the only one that reaches the smaller budget within the cap'
    text += ', and its ticket there is the best ticket here. ' if best is only else '. '
  else:
    text += f'{_count(len(reached)).capitalize()} of them reach the smaller budget within the cap. '
  short = [(g, f['final'][g] - budgets[-1]) for g in PER_FEATURE
           if g not in {r['granularity'] for r in reached}]
  text += ' '.join(f'`{g}` stopped {n:,.0f} entries short of that budget.' for g, n in short)
  bullets.append(text.rstrip())
  return '\n'.join(_fill(b, '  ') for b in bullets) + '\n'


def render_readme_granularity(results: str) -> str:
  """README.md: the granularities in three sentences."""
  f = _granularity_facts(results)
  aucs = [r['test_auc'] for r in f['large']]
  return _fill(
      '`granularity.py`: '
      + ('only per-feature thresholds (`feature`, `feature_dimension`) keep pruning quickly after '
         'the first thousand steps. ' if f['per_feature_lowest'] else '')
      + f'Shared thresholds level off between {min(f["shared"].values()):,.0f} and '
      f'{max(f["shared"].values()):,.0f} non-zeros. At the larger budget all '
      f'{_count(len(aucs))} retrained tickets lie within {max(aucs) - min(aucs):.4f} AUC of one '
      'another.') + '\n'


def render_readme_lottery_ticket(results: dict) -> str:
  """README.md: the lottery-ticket analysis in two sentences."""
  rows, entries = results['rows'], results['entries']
  over = [r['rewind'] - r['random'] for r in rows]
  verdict = ('scores above' if min(over) > 0 else 'scores below' if max(over) < 0
             else 'scores about as')
  noise = '; one seed, so not separable' if max(map(abs, over)) < SEED_NOISE else ''
  early = min(rows, key=lambda r: r['ticket_step'])
  return _fill(
      f'`lottery_ticket.py`: at {" and ".join(_percent(r["budget"], entries) for r in rows)} of '
      f'the table, the rewound ticket {verdict} the same mask retrained from a random table ('
      + ' and '.join(f'{d:+.4f}' for d in over) + f' AUC{noise}). Scoring the pruned model '
      f'without retraining costs {early["rewind"] - early["no_retraining"]:.4f} AUC when the '
      f'ticket is cut early, at step {early["ticket_step"]:,}.') + '\n'


def render_readme_sizes_vs_frequency(results: dict) -> str:
  """README.md: the sizes-against-frequency analysis in three sentences."""
  groups, c = results['groups'], results['correlations']
  entries = results['data']['features'] * results['dim']
  final = [g['sparsity'][-1] for g in groups]
  ordered = all(a >= b for a, b in zip(final, final[1:]))
  return _fill(
      f'`sizes_vs_frequency.py` (the paper\'s Figure 6): '
      f'{"rare features are pruned first. " if ordered else ""}At the '
      f'{_percent(results["budgets"][-1], entries)} ticket the rarest fifth of the features is '
      f'{final[0]:.0%} zero and the most frequent fifth {final[-1]:.0%}. A feature\'s size has a '
      f'rank correlation of {c["size_vs_frequency"]:.2f} with its frequency, and '
      f'{c["size_vs_field_intrinsic"]:.2f} with its field\'s planted intrinsic dimension.') + '\n'


def render_readme_interactions(results: dict) -> str:
  """README.md: the field-interaction analysis in two sentences."""
  rows, entries = results['rows'], results['entries']
  noise = results['data']['noise_fields']
  informative = [f for f in range(results['data']['fields']) if f not in noise]
  uniform, smallest = rows[0], min(rows[1:], key=lambda r: r['budget'])
  kept = min(r['informative_correlation'] for r in rows[1:]) >= 0.9
  falls = smallest['noise_pair_share'] < uniform['noise_pair_share']
  return _fill(
      '`interactions.py` (the paper\'s Figure 5): mean `|<e_i, e_j>|` per pair of fields. The '
      f'tickets {"keep" if kept else "change"} the informative block (fields '
      f'{_fields(informative)}) and {"shrink" if falls else "do not shrink"} the pairs that '
      f'involve the noise fields {_fields(noise)}: their share of the total '
      f'{"falls" if falls else "goes"} from {uniform["noise_pair_share"]:.3f} (uniform) to '
      f'{smallest["noise_pair_share"]:.3f} ({_percent(smallest["budget"], entries)} ticket).') \
      + '\n'


def render_pep_ticket_steps(results: dict) -> str:
  """docs/pep.md: when the demo's pruning cuts its tickets (lottery_ticket.json prunes as
  configs/demo.py does)."""
  rows, entries = results['rows'], results['entries']
  steps_per_epoch = -(-results['data']['train_rows'] // results['batch_size'])
  cap = results['prune_max_epochs'] * steps_per_epoch
  cuts = ' and '.join(f'the {_percent(r["budget"], entries)} ticket at step {r["ticket_step"]:,}'
                      for r in rows)
  above = [r for r in rows if r['rewind'] > r['unpruned']]
  retrained = ' and '.join(f'{r["rewind"]:.4f}' for r in rows)
  return _fill(
      f'With `s_init={results["s_init"]:g}`, the demo\'s pruning cuts {cuts}, of at most {cap:,} '
      f'pruning steps ({results["prune_max_epochs"]} epochs of {steps_per_epoch:,}). Rewound '
      f'and retrained (at most {results["retrain_max_epochs"]} epochs), they score {retrained} '
      f'test AUC, against {rows[0]["unpruned"]:.4f} for the uniform d={results["dim"]} model '
      f'({"both above it" if len(above) == len(rows) else "not all above it"}; one seed). From '
      '`docs/results/lottery_ticket.json`: `experiments/lottery_ticket.py` prunes its synthetic '
      'default exactly as `configs/demo.py` does (same data, seed, batches and thresholds), with '
      'two of the demo\'s four budgets.') + '\n'


def render_pep_masks(results: dict) -> str:
  """docs/pep.md: what the demo's smallest ticket keeps of noise and informative fields
  (sizes_vs_frequency.json stops where the demo's pruning cuts it)."""
  rows, dim = results['rows'], results['dim']
  entries = results['data']['features'] * dim
  noise = [r for r in rows if r['intrinsic_dim'] == 0]
  signal = [r for r in rows if r['intrinsic_dim']]

  def kept(fields: list[dict]) -> float:
    return (sum(r['vocabulary'] * r['mean_size'] for r in fields)
            / sum(r['vocabulary'] * dim for r in fields))

  pairs = [(n, i) for n in noise for i in signal if n['vocabulary'] == i['vocabulary']]
  share = _percent(results['budgets'][-1], entries)
  largest_noise = max(r['vocabulary'] for r in noise) > max(r['vocabulary'] for r in signal)
  equal = ''
  if pairs:
    n, i = min(pairs, key=lambda p: p[0]['vocabulary'])
    equal = ('at equal vocabulary size, noise fields are pruned about as much as informative '
             f'ones. The {n["vocabulary"]}-value noise field keeps {n["mean_size"]:.1f} of {dim} '
             f'dimensions in the {share} ticket, against {i["mean_size"]:.1f} for the '
             f'{i["vocabulary"]}-value informative field. ')
  return _fill(
      f'What the masks follow (the demo\'s pruning to its {share} ticket, `s_init=-8`, mean size '
      f'of a field\'s features, from `docs/results/sizes_vs_frequency.json`): {equal}The '
      'pure-noise field\'s features all converge to one shared vector, which an FM can use as an '
      'extra linear term on the other fields. Pruning is driven by frequency first. Noise fields '
      f'lose {"far more" if kept(noise) < kept(signal) / 2 else "more"} in total '
      f'({kept(noise):.0%} of their entries kept in the {share} ticket, against '
      f'{kept(signal):.0%} for informative fields)'
      + (' because the largest vocabularies are noise, as id-like fields are in real logs.'
         if largest_noise else '.')) + '\n'


# ------------------------------------------------- SSEDS against the paper's claim (methods.md)

# experiments/sseds_study.py's variants as docs/methods.md names them.
SSEDS_VARIANTS = {
    'paper': 'the paper (saliency, prefix, 1 batch)',
    'greedy': 'greedy fill',
    'per_param': 'saliency per parameter, prefix',
    'per_param_greedy': 'saliency per parameter, greedy',
    'batches10': '10 scoring batches',
    'batches100': '100 scoring batches',
}
SSEDS_DATASETS = {'compare': 'the comparison', 'movielens': 'MovieLens'}


class _Study:
  """One dataset of sseds_study.json: test AUC per seed of UE, PEP and each SSEDS variant."""

  def __init__(self, results: dict, dataset: str):
    self.facts = results['datasets'][dataset]
    self.seeds = list(results['seeds'])
    self.variants = results['variants']
    self.reference = next(iter(self.variants))
    self.cells: dict[tuple, list[dict]] = {}
    for r in results['rows']:
      if r['dataset'] != dataset or (r['method'] == 'ue' and r['variant'] != self.reference):
        continue  # the same UE model in every variant
      variant = r['variant'] if r['method'] == 'sseds' else None
      self.cells.setdefault((r['method'], variant, r['budget']), []).append(r)
    for rows in self.cells.values():
      rows.sort(key=lambda r: r['seed'])
    self.ue = self.cells['ue', None, None]
    self.table = self.ue[0]['params']
    self.budgets = sorted({b for _, _, b in self.cells if b}, reverse=True)
    self.rows = [r for rows in self.cells.values() for r in rows]

  def runs(self, variant: str | None, budget: int) -> list[dict]:
    return self.cells['pep' if variant is None else 'sseds', variant, budget]

  def share(self, budget: int) -> str:
    return _percent(budget, self.table)

  def shares(self, budgets: list[int]) -> str:
    return _and([self.share(b) for b in budgets])

  def fields(self, row: dict) -> int:
    return sum(w > 0 for w in row['field_mean_size'])

  def both(self) -> str:
    return 'both seeds' if len(self.seeds) == 2 else 'every seed'


def _and(items: list[str], word: str = 'and') -> str:
  return items[0] if len(items) == 1 else ', '.join(items[:-1]) + f' {word} ' + items[-1]


def _auc_mean(rows: list[dict]) -> float:
  return sum(r['test_auc'] for r in rows) / len(rows)


def _versus(a: list[dict], b: list[dict]) -> tuple[str, float, list[float]]:
  """How ``a`` stands against ``b`` over the seeds: 'level' (the means closer than seed noise),
  'above' or 'below' (in every seed), else 'mixed'; the difference of the means and per seed."""
  seeds = [x['test_auc'] - y['test_auc'] for x, y in zip(a, b)]
  d = _auc_mean(a) - _auc_mean(b)
  kind = ('level' if abs(d) < SEED_NOISE else 'above' if min(seeds) > 0 else
          'below' if max(seeds) < 0 else 'mixed')
  return kind, d, seeds


def _seed_list(values: list[float], fmt: str = '+.4f') -> str:
  return ' and '.join(format(v, fmt) for v in values)


def _against(s: _Study, a: list[dict], b: list[dict], name: str) -> str:
  """``a`` against ``b`` (called ``name``) in words, with the figures that carry them."""
  kind, d, seeds = _versus(a, b)
  figures = f'{_auc_mean(a):.4f} against {_auc_mean(b):.4f}'
  if kind == 'level':
    return (f'at {name}\'s level ({figures}, {d:+.4f} in the mean, seeds {_seed_list(seeds)}; '
            'not separable)')
  if kind == 'mixed':
    return (f'{"above" if d > 0 else "below"} {name} in the mean ({figures}) but not in every '
            f'seed ({_seed_list(seeds)})')
  return f'{kind} {name} in {s.both()} ({figures}; {_seed_list(seeds)})'


def _short(s: _Study, a: list[dict], b: list[dict], name: str) -> str:
  """``a`` against ``b`` in words only."""
  kind, d, _ = _versus(a, b)
  if kind == 'level':
    return f'at {name}\'s level'
  if kind == 'mixed':
    return f'{"above" if d > 0 else "below"} {name} in the mean, not in every seed'
  return f'{kind} {name} in {s.both()}'


def _directions(s: _Study, diffs: dict[int, list[float]]) -> str:
  """``'up at 30% and 10%, down at 3%'``: the sign of every difference at each budget."""
  ways: dict[str, list[int]] = {}
  for b in s.budgets:
    way = 'up' if min(diffs[b]) > 0 else 'down' if max(diffs[b]) < 0 else 'either way'
    ways.setdefault(way, []).append(b)
  if list(ways) == ['either way']:
    return 'in no consistent direction'
  return ', '.join(f'{way} at {s.shares(bs)}' for way, bs in ways.items())


def _sseds_header(s: _Study, title: str, lead: str = '', note: str = '',
                  setting: str = '') -> str:
  """``title (lead: model, fields, rows; setting; caps reached; UE and PEP; fields kept):``"""
  f = s.facts
  pep = ' / '.join(f'{_auc_mean(s.runs(None, b)):.4f}' for b in s.budgets)
  shares = ' / '.join(s.share(b) for b in s.budgets)
  last = max(r['epochs'] - r['best_epoch'] for r in s.rows) + 1
  capped = ''
  if all(r['epochs'] == f['train_max_epochs'] for r in s.rows):
    capped = (f'; every run\'s best epoch was among its last {_count(last)}, so these are '
              f'{f["train_max_epochs"]}-epoch figures, not converged ones')
  return _fill(
      f'{title} ({lead}{": " if lead else ""}{f["model"].upper()}, d={f["dim"]}, '
      f'{len(f["field_dims"])} fields of {min(f["field_dims"]):,} to {max(f["field_dims"]):,} '
      f'values{note}, {f["rows"]:,} rows{"; " if setting else ""}{setting}{capped}; UE '
      f'd={f["dim"]} {_auc_mean(s.ue):.4f}, PEP {pep} at {shares} of the table; fields kept: '
      f'those with at least one dimension, seed {s.seeds[0]}):')


def _sseds_table(s: _Study) -> list[str]:
  lines = ['| SSEDS variant | ' + ' | '.join(s.share(b) for b in s.budgets)
           + f' | fields kept (seed {s.seeds[0]}) |',
           '|---|' + '---:|' * len(s.budgets) + '---|']
  for v in s.variants:
    runs = [s.runs(v, b) for b in s.budgets]
    lines.append(f'| {SSEDS_VARIANTS.get(v, v)} | '
                 + ' | '.join(f'{_auc_mean(r):.4f}' for r in runs) + ' | '
                 + ' / '.join(str(s.fields(r[0])) for r in runs) + ' |')
  return lines


def _sseds_paper(s: _Study) -> str:
  """The paper's procedure against PEP and UE at each budget, and what its prefix spends."""
  paper = {b: s.runs(s.reference, b) for b in s.budgets}
  pep = {b: _versus(paper[b], s.runs(None, b)) for b in s.budgets}
  ue = {b: _versus(paper[b], s.ue) for b in s.budgets}
  holds = [b for b in s.budgets if pep[b][0] in ('level', 'above')]
  if all(pep[b][0] == ue[b][0] == 'below' for b in s.budgets):
    gaps = [-x[1] for b in s.budgets for x in (pep[b], ue[b])]
    text = ('The paper\'s procedure does not reproduce the claim here: it scores '
            f'{_span(gaps, ".2f")} below PEP and UE at every budget, in {s.both()}.')
  else:
    lead = (f'at {s.shares(holds)}' if holds and len(holds) < len(s.budgets) else
            'at every budget' if holds else 'at no budget')
    parts = [f'at {s.share(b)}'
             + (f' ({100 - round(100 * b / s.table)}% of the parameters removed)'
                if b == s.budgets[-1] else '')
             + f' it is {_against(s, paper[b], s.ue, "UE")} and '
             f'{_against(s, paper[b], s.runs(None, b), "PEP")}' for b in s.budgets]
    text = (f'Here the paper\'s procedure is level with or above PEP\'s ticket {lead}: '
            + '; '.join(parts) + '.')
  first = {b: paper[b][0] for b in s.budgets}
  rho = first[s.budgets[0]]['width_spearman']
  if rho is not None:
    text += (f' Its ranking {"finds" if rho >= 0.5 else "does not find"} the important fields '
             f'(the rank correlation of its widths with the planted dimensions is {rho:.2f} at '
             f'{s.share(s.budgets[0])}, seed {s.seeds[0]}).')
  widest = max(s.facts['field_dims'])
  small = first[s.budgets[-1]]
  spent = small['params'] / s.budgets[-1]
  text += (f' A column of a {widest:,}-value field costs {widest:,} parameters: at '
           f'{s.share(s.budgets[-1])} it keeps {s.fields(small)} of {len(s.facts["field_dims"])} '
           'fields and'
           + (', the prefix stopping at the first column that does not fit,'
              if spent < 0.99 else '')
           + f' spends {small["params"]:,} of the {s.budgets[-1]:,} allowed (seed '
           f'{s.seeds[0]}).')
  return _fill('- ' + text, '  ')


def _sseds_greedy(s: _Study) -> str:
  """Greedy fill against the paper's prefix."""
  paper = {b: s.runs(s.reference, b) for b in s.budgets}
  greedy = {b: s.runs('greedy', b) for b in s.budgets}
  d = {b: _auc_mean(greedy[b]) - _auc_mean(paper[b]) for b in s.budgets}
  spends = all(greedy[b][0]['params'] >= 0.99 * b for b in s.budgets)
  fields = [(s.fields(greedy[b][0]), s.fields(paper[b][0])) for b in s.budgets]
  more = all(g >= p for g, p in fields) and any(g > p for g, p in fields)
  text = ('Greedy fill ' + ('spends the budget' if spends else 'does not spend the budget')
          + (' and keeps more fields' if more else ''))
  if max(map(abs, d.values())) < SEED_NOISE:
    text += (f'; the means move by at most {max(map(abs, d.values())):.3f} ('
             + ', '.join(f'{d[b]:+.4f} at {s.share(b)}' for b in s.budgets)
             + f'), not separable with {_count(len(s.seeds))} seeds.')
  else:
    text += (': ' + _and([f'{d[b]:+.3f}' for b in s.budgets]) + ' at '
             + s.shares(s.budgets) + ' over the paper\'s fill')
    below = [_auc_mean(s.runs(None, b)) - _auc_mean(greedy[b]) for b in s.budgets]
    text += (f'; still {_span(below, ".2f")} below PEP.' if min(below) >= SEED_NOISE else '.')
  return _fill('- ' + text, '  ')


def _sseds_per_param(s: _Study, largest_name: str = '') -> str:
  """Ranking by saliency per stored parameter against the paper's ranking and PEP."""
  paper = {b: s.runs(s.reference, b) for b in s.budgets}
  mine = {b: s.runs('per_param', b) for b in s.budgets}
  pep = {b: s.runs(None, b) for b in s.budgets}
  over = {b: _versus(mine[b], paper[b]) for b in s.budgets}
  if all(over[b][0] == 'above' for b in s.budgets):
    gap = {b: (abs(_versus(mine[b], pep[b])[1]), abs(_versus(paper[b], pep[b])[1]))
           for b in s.budgets}
    most = all(m < p / 2 for m, p in gap.values())
    parts = []
    for b in s.budgets:
      kind, d, _ = _versus(mine[b], pep[b])
      where = (f'at PEP\'s level ({_auc_mean(pep[b]):.4f}; not separable with '
               f'{_count(len(s.seeds))} seeds)' if kind == 'level' else
               f'{abs(d):.3f} {kind} PEP in {s.both()}' if kind != 'mixed' else
               f'{d:+.3f} against PEP in the mean, not in every seed')
      parts.append(f'{_auc_mean(mine[b]):.4f} at {s.share(b)}, {where}')
    text = ('Ranking by saliency per parameter is what '
            + ('closes most of the gap: ' if most else 'narrows the gap: ') + '; '.join(parts)
            + '.')
    first = {b: mine[b][0] for b in s.budgets}
    vocab, truth = s.facts['field_dims'], s.facts['intrinsic_dims']
    small = first[s.budgets[-1]]['field_mean_size']
    narrow, widest = min(vocab), max(vocab)
    whole = all(w == s.facts['dim'] for w, v in zip(small, vocab) if v == narrow)
    dropped = all(w == 0 for w, v in zip(small, vocab) if v == widest)
    rho = first[s.budgets[0]]['width_spearman']
    if whole and dropped and rho is not None:
      noise = any(k == 0 for k, v in zip(truth, vocab) if v == narrow)
      text += (f' What it keeps follows the vocabulary: at {s.share(s.budgets[-1])} the '
               f'{narrow:,}-value fields whole'
               + (', the noise ones among them included,' if noise else ',')
               + f' and the {widest:,}-value fields dropped (seed {s.seeds[0]}; width '
               f'correlation with the planted dimensions {rho:.2f} at '
               f'{s.share(s.budgets[0])}).')
    covers = [(s.fields(first[b]), s.fields(paper[b][0])) for b in s.budgets]
    if (rho is not None and rho < paper[s.budgets[0]][0]['width_spearman']
        and all(m >= p for m, p in covers)):
      text += (' Most likely it scores higher because it covers more fields ('
               + _and([str(m) for m, _ in covers]) + f' of {len(vocab)} at '
               + s.shares(s.budgets) + ', against the paper\'s ranking\'s '
               + _and([str(p) for _, p in covers]) + '), not because it ranks importance '
               'better.')
    greedy = max(abs(_auc_mean(s.runs('per_param_greedy', b)) - _auc_mean(mine[b]))
                 for b in s.budgets)
    text += (f' Greedy fill on top changes nothing separable (at most {greedy:.4f} in the '
             'mean).' if greedy < SEED_NOISE else
             f' Greedy fill on top moves the mean by up to {greedy:.4f}.')
  else:
    worse = [b for b in s.budgets if over[b][0] == 'below']
    if worse:
      text = ('Saliency per parameter is worse here, by '
              + _and([f'{-over[b][1]:.3f} at {s.share(b)}' for b in worse]) + f', in {s.both()}')
    else:
      text = ('Saliency per parameter moves the means by '
              + _and([f'{over[b][1]:+.3f} at {s.share(b)}' for b in s.budgets]))
    widest = max(s.facts['field_dims'])
    column = s.facts['field_dims'].index(widest)
    gone = [b for b in s.budgets if all(r['field_mean_size'][column] == 0 for r in mine[b])]
    if worse and gone == worse:
      text += (f': it drops the largest field ({largest_name}{", " if largest_name else ""}'
               f'{widest:,} values) whole at {s.shares(gone)} in {s.both()}, and that field '
               'is informative on this data.')
    else:
      text += '.'
  return _fill('- ' + text, '  ')


def _batch_effects(s: _Study) -> tuple[list[str], dict[int, list[float]], float, list[float]]:
  """The variants with more scoring batches, their differences to one batch per budget, the
  largest of them, and the paper's gap to PEP per budget."""
  more = [v for v, o in s.variants.items() if 'score_batches' in o]
  diffs = {b: [_auc_mean(s.runs(v, b)) - _auc_mean(s.runs(s.reference, b)) for v in more]
           for b in s.budgets}
  largest = max(abs(d) for ds in diffs.values() for d in ds)
  gaps = [_auc_mean(s.runs(None, b)) - _auc_mean(s.runs(s.reference, b)) for b in s.budgets]
  return more, diffs, largest, gaps


def _sseds_batches(s: _Study) -> str:
  """More scoring batches against one."""
  more, diffs, largest, gaps = _batch_effects(s)
  counts = _and([str(s.variants[v]['score_batches']) for v in more])
  if min(gaps) > 2 * largest:
    return _fill(
        f'- More scoring batches do not close the gap: {counts} batches stay within '
        f'{largest:.3f} of one batch at every budget ({_directions(s, diffs)}), against a gap '
        f'to PEP of {_span(gaps, ".2f")}. The shortfall is the ranking of slots of unequal '
        'cost, not a noisy saliency estimate.', '  ')
  return _fill(f'- {counts.replace(" and ", " or ")} scoring batches: within {largest:.3f} of '
               f'one batch, {_directions(s, diffs)}'
               + (f'; not separable with {_count(len(s.seeds))} seeds.'
                  if largest < SEED_NOISE else '.'), '  ')


def render_sseds_seeds(results: dict) -> str:
  """docs/methods.md: the seeds of the SSEDS study and how far one model's seeds differ."""
  seeds = results['seeds']
  spread = []
  for dataset in results['datasets']:
    s = _Study(results, dataset)
    for (method, variant, budget), rows in s.cells.items():
      aucs = [r['test_auc'] for r in rows]
      name = ('UE' if method == 'ue' else 'PEP' if method == 'pep' else 'SSEDS'
              if variant == s.reference else f'SSEDS ({SSEDS_VARIANTS.get(variant, variant)})')
      where = f' at {s.share(budget)}' if budget else ''
      spread.append((max(aucs) - min(aucs), f'{name}{where} on '
                     f'{SSEDS_DATASETS.get(dataset, dataset)}', aucs))
  widest, name, aucs = max(spread, key=lambda x: x[0])
  n = _count(len(seeds))
  text = (f'{n.capitalize()} seeds ({_and([str(x) for x in seeds])}), each the whole '
          'experiment, on the same test rows: the figures below are their means, and '
          f'{n} seeds give no interval for the spread between seeds. Between {n} seeds of one '
          f'model the test AUC moved by up to {widest:.2f} ({name}: '
          f'{_seed_list(aucs, ".4f")}), so differences of a few thousandths are not separable '
          'here')
  text += (', and even a difference of 0.01 is only a lead when the seeds agree on its sign.'
           if widest >= 0.01 else '.')
  return _fill(text) + '\n'


def render_sseds_compare(results: dict) -> str:
  """docs/methods.md: the SSEDS study on the synthetic comparison."""
  s = _Study(results, 'compare')
  lead = ('`configs/compare.py:quick` run with seeds '
          + _and([str(x) for x in s.seeds]))
  lines = [_sseds_header(s, '**The synthetic comparison**', lead=lead,
                         note=' whose vocabulary says nothing about importance'), '']
  lines += _sseds_table(s) + ['']
  lines += [_sseds_paper(s), _sseds_greedy(s), _sseds_per_param(s), _sseds_batches(s)]
  return '\n'.join(lines) + '\n'


def render_sseds_movielens(results: dict) -> str:
  """docs/methods.md: the SSEDS study on MovieLens-100K."""
  s = _Study(results, 'movielens')
  f = s.facts
  setting = (f'`configs/movielens_fm.py:small` with budgets '
             f'{" / ".join(s.share(b) for b in s.budgets)}, retraining up to '
             f'{f["train_max_epochs"]} epochs with patience {f["train_patience"]}, PEP pruning up '
             f'to {f["prune_max_epochs"]} epochs')
  lines = [_sseds_header(s, '**MovieLens-100K** in ML-1M\'s files', setting=setting), '']
  lines += _sseds_table(s) + ['']
  lines += [_sseds_paper(s), _sseds_greedy(s), _sseds_per_param(s, 'the zip code'),
            _sseds_batches(s)]
  return '\n'.join(lines) + '\n'


def render_sseds_conclusion(results: dict) -> str:
  """docs/methods.md: what the two datasets say together."""
  ml, cmp = _Study(results, 'movielens'), _Study(results, 'compare')

  def claim(s: _Study) -> tuple[list[int], dict]:
    paper = {b: s.runs(s.reference, b) for b in s.budgets}
    holds = [b for b in s.budgets if _versus(paper[b], s.runs(None, b))[0] != 'below']
    return holds, paper

  holds, paper = claim(ml)
  how = ('in part' if 0 < len(holds) < len(ml.budgets) else 'at every budget' if holds
         else 'at no budget')
  parts = []
  for b in ml.budgets:
    ue, pep = (_versus(paper[b], x)[0] for x in (ml.ue, ml.runs(None, b)))
    if ue == pep and ue in ('above', 'below'):
      where = f'{ue} UE and PEP in {ml.both()}'
    else:
      where = (f'{_short(ml, paper[b], ml.ue, "UE")} and '
               f'{_short(ml, paper[b], ml.runs(None, b), "PEP")}')
    removed = (f' (the paper\'s "{100 - round(100 * b / ml.table)}% removed")'
               if b == ml.budgets[-1] else '')
    parts.append(f'at {ml.share(b)}{removed} {"it is" if parts else "is"} {where}')
  text = (f'So the paper\'s claim reproduces {how} on MovieLens: SSEDS ' + '; '.join(parts)
          + '. ')
  vocab = cmp.facts['field_dims']
  failed, _ = claim(cmp)
  text += (f'On the comparison, where a column of the largest fields costs '
           f'{max(vocab) / min(vocab):,.0f} times one of the smallest and importance is '
           'independent of vocabulary, it '
           + ('fails at every budget. ' if not failed else
              f'holds at {cmp.shares(failed)} only. '))
  lifts = {b: _versus(cmp.runs('per_param', b), cmp.runs(None, b))[0] for b in cmp.budgets}
  level = [b for b in cmp.budgets if lifts[b] in ('level', 'above')]
  rest = [b for b in cmp.budgets if b not in level]
  better = (sum(_auc_mean(cmp.runs('per_param', b)) - _auc_mean(cmp.runs(cmp.reference, b))
                for b in cmp.budgets) > 0)
  hurts = (sum(_auc_mean(ml.runs('per_param', b)) - _auc_mean(ml.runs(ml.reference, b))
               for b in ml.budgets) < 0)
  _, _, largest, gaps = _batch_effects(cmp)
  if min(gaps) > 2 * largest and level:
    text += 'There the cost of a slot, not the saliency estimate, decides: '
  else:
    text += 'There '
  text += ('ranking by saliency per parameter '
           + (f'recovers PEP\'s level at {cmp.shares(level)}' if level else
              'does not recover PEP\'s level')
           + (f' but not at {_and([cmp.share(b) for b in rest], "or")}' if level and rest
              else '')
           + (', and it hurts on MovieLens' if hurts else ', and on MovieLens it does not hurt'))
  if better and hurts:
    text += ('; neither ranking is better on both datasets, so the paper\'s ranking stays the '
             'default.')
  else:
    text += '.'
  return _fill(text) + '\n'


# ------------------------------------------- the comparison's quantised forms (compare_forms)


def compare_figure(workdir: str) -> None:
  """``docs/figures/compare_frontier.png``: the frontier of ``workdir``, with the quantised forms
  of ``docs/results/compare_forms.json`` when they were measured on its ``comparison.json``,
  else the summary's own figure."""
  from pep_jax import workdir as wd
  figure = os.path.join(ROOT, 'docs', 'figures', 'compare_frontier.png')
  path = os.path.join(RESULTS, 'compare_forms.json')
  module = _experiment('compare_forms')
  forms = wd.read_json(path, dict) if os.path.exists(path) else None
  if forms is not None and module.belongs_to(forms, workdir):
    module.plot(workdir, forms['rows'], figure)
    print(f'drew {figure} with the forms of {path}')
  else:
    shutil.copyfile(wd.summary_paths(workdir)['plot'], figure)


def render_compare_forms(results: dict) -> str:
  """Each model of the comparison in each quantised form: bytes, test AUC over seeds, and its
  drop from the float model of the same seed."""
  sys.path.insert(0, ROOT)
  from pep_jax import methods as methods_lib
  labels = methods_lib.labels()
  seeds = max(len(r['seeds']) for r in results['rows'])
  level = round(100 * results['level'])
  lines = [f'Mean over {seeds} seeds with its {level}% interval (Student t); `drop`: test AUC of '
           'the float model minus that of the form, in the same seed.', '',
           f'| method | setting | form | bytes | test AUC | {level}% interval | drop | '
           f'{level}% interval |', '|---|---|---|---:|---:|---|---:|---|']
  for r in results['rows']:
    drop = r['auc_drop_ci95']
    lines.append(f'| {labels.get(r["method"], r["method"])} | {r["setting"]} | {r["form"]} | '
                 f'{round(r["bytes"]):,} | {r["test_auc_mean"]:.4f} | '
                 f'{_interval(r["test_auc_ci95"]).replace("+", "")} | '
                 f'{r["auc_drop_mean"]:+.5f} | '
                 f'{"" if drop is None else f"[{drop[0]:+.5f}, {drop[1]:+.5f}]"} |')
  return '\n'.join(lines) + '\n'


# ------------------------------------------------ the README's set-up commands (setup_times)


def _duration(seconds: float) -> str:
  """``'2 min 32 s'``, or ``'48 s'`` under a minute."""
  minutes, seconds = divmod(round(seconds), 60)
  return f'{minutes} min {seconds} s' if minutes else f'{seconds} s'


def _cpu(machine: dict) -> str:
  return (f'{machine["cpus"]}-core {machine["processor"].replace("_", "-")} CPU (Python '
          f'{machine["python"]}, JAX {machine["jax"]})')


def _took(part: dict) -> str:
  """``'took 2 min 32 s on 2026-11-29, with a load average of 1.4 before it started (3.0 when it
  ended, its own work included)'``: the load of the last minute, which before the part started
  is other work's alone."""
  verb = 'took' if part['status'] == 'passed' else 'failed after'
  return (f'{verb} {_duration(part["seconds"])} on {part["date"][:10]}, with a load average of '
          f'{part["load_average_before"][0]:.1f} before it started '
          f'({part["load_average_after"][0]:.1f} when it ended, its own work included)')


def render_setup_times(results: dict) -> str:
  """README.md: how long the demo and the test suite took (experiments/setup_times.py), each
  with the load on the machine, so a reader can judge the time."""
  demo = results['demo']
  text = f'On a {_cpu(demo["machine"])} the demo itself {_took(demo)}'
  tests = results.get('tests')
  if tests is not None:
    counts = tests['counts'] or {}
    outcomes = [f'{counts[k]:,} {k}' for k in ('passed', 'failed', 'errors', 'skipped',
                                                'xfailed', 'xpassed') if counts.get(k)]
    where = ('' if _cpu(tests['machine']) == _cpu(demo['machine'])
             else f' on a {_cpu(tests["machine"])}')
    text += (f'; the test suite ({_and(outcomes) if outcomes else "no tests ran"}){where} '
             f'{_took(tests)}')
  return _fill(text + '.') + '\n'


# ------------------------------------------- the cache build, TFDS and scaling (bench_data, ...)


def _shown(command: str, keep_workdir: bool = False) -> str:
  """A recorded command as a reader runs it: the scratch folder it used (``--workdir``) left
  out (each script then uses a temporary one), unless two commands share the file it holds
  (``keep_workdir``; shown as ``/tmp/bench``)."""
  if keep_workdir:
    return re.sub(r'--workdir=\S+', '--workdir=/tmp/bench', command)
  return re.sub(r' --workdir=\S+', '', command)

FULL_CRITEO_ROWS = 45_840_617  # lines of the real train.txt
DATA_RUNS = ('bench_data_1m.json', 'bench_data_5m.json', 'bench_data_full.json')
FULL_DATA_COMMAND = ('python experiments/bench_data.py --rows=45840617 --workdir=/tmp/benchfull '
                     '--json=docs/results/bench_data_full.json')
TFDS_COMMAND = ('python experiments/bench_tfds.py --rows=1000000 --workdir=/tmp/w1m '
                '--json=docs/results/bench_tfds_1m.json')


def _optional(file: str) -> dict | None:
  """The parsed ``docs/results/<file>``, or None when that measurement has not been made."""
  path = os.path.join(RESULTS, file)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _load(run: dict) -> str:
  """``'1.9 before, 2.3 after'``: the one-minute load averages around a run."""
  return f'{run["load_average_before"][0]:.1f} before, {run["load_average_after"][0]:.1f} after'


def _millions(rate: float) -> str:
  return f'{rate / 1e6:.1f} M rows/s'


def _about(x: float) -> str:
  """``x`` to two significant figures: ``'1,600'``, ``'56'``."""
  digits = max(len(str(int(x))) - 2, 0)
  return f'{round(x, -digits):,.0f}'


def render_data_build(first: dict) -> str:
  """docs/data.md: the cache build and the iterators at 1 M, 5 M and full size, from
  bench_data_1m.json and, where measured, bench_data_5m.json and bench_data_full.json."""
  runs = [first] + [r for r in map(_optional, DATA_RUNS[1:]) if r is not None]
  full = next((r for r in runs if r['rows'] == FULL_CRITEO_ROWS), None)
  per_million = 1e3 * first['file_gb'] / (first['rows'] / 1e6)
  lines = [_fill(
      f'Machine: {first["machine"]}; measured on {first["date"][:10]}, the one-minute '
      'load averages in the last column. File: a generated `train.txt` in the exact Criteo '
      'format (`experiments/bench_data.py`: heavy-tailed values, per-field cardinalities like '
      f'the real file\'s, empty values, negative I2; {per_million:.1f} MB per million rows'
      + (f', {full["file_gb"]:.2f} GB at full size).' if full else ').')), '', '```']
  lines += [_shown(r['command']) for r in runs] + ([] if full else [FULL_DATA_COMMAND])
  lines += ['```', '', '| rows | file | build | build rows/s | build peak RSS | iterator, '
            '`prefetch(batches)` | iterator, `threaded_batches(workers=2)` | load |',
            '|---:|---:|---:|---:|---:|---:|---:|---|']
  for r in runs:
    name = f'{r["rows"]:,}' + (' (full size)' if r is full else '')
    lines.append(f'| {name} | {r["file_gb"]:.2f} GB | {r["build_s"]:.1f} s | '
                 f'{r["build_rows_per_s"]:,.0f} | {r["peak_rss_gb_after_build"]:.2f} GB | '
                 f'{_millions(r["iterator_rows_per_s_prefetch"])} | '
                 f'{_millions(r["iterator_rows_per_s_threaded_2"])} | {_load(r)} |')
  if full is None:
    lines.append(f'| {FULL_CRITEO_ROWS:,} (full size) | not measured yet: the last command '
                 'above | | | | | | |')
  largest = runs[-1]
  text = ('Every number is measured, none extrapolated'
          + (f': the full-size row is a real run on a {full["file_gb"]:.2f} GB file '
             f'({full["num_features"]:,} features at min_count 10 for the generated data; the '
             'real file gives its own). ' if full else '. '))
  text += (f'Build time is the cache build (`build_seconds` in `meta.json`; `real.prepare` with '
           f'the checksums of the files took {largest["prepare_s"]:.1f} s at '
           f'{largest["rows"]:,} rows) with `data.workers={largest["workers"]}`'
           + (' (every CPU)' if largest['workers'] == 0 else '') + '; peak RSS is the building '
           'process\'s maximum resident memory (`ru_maxrss`), the generator running in a child '
           f'process. The {largest["rows"]:,}-row build spent {largest["build_pass1_s"]:.0f} s '
           f'in pass 1 (parsing) and {largest["build_s"] - largest["build_pass1_s"]:.0f} s '
           f'counting, encoding and writing the {largest["ids_gb"]:.1f} GB of int32 arrays. '
           'Building runs on threads, not processes: pyarrow\'s parser and numpy\'s '
           'sort, search and gathers release the GIL. Iterator rates are one full shuffled epoch '
           f'of the training split ({largest["train_rows"]:,} of the {largest["rows"]:,} rows, '
           f'permutation included), batch {largest["batch_size"]}, cache files in the page '
           'cache.')
  if (largest["iterator_rows_per_s_prefetch"] < first["iterator_rows_per_s_prefetch"]
      and largest is not first):
    text += (f' A random row of a {largest["train_ids_gb"]:.1f} GB array costs more cache and '
             'TLB misses than one of a small array, hence the lower rates of the largest file.')
  lines += ['', _fill(text)]
  return '\n'.join(lines) + '\n'


def _tfds_figures(cache: dict, tfds: dict) -> dict:
  return {'read': cache['iterator_rows_per_s_prefetch'] / tfds['read_rows_per_s_shuffled'],
          'build': tfds['tfds_build_s'] / cache['build_s'],
          'size': cache['cache_gb'] / tfds['tfds_gb']}


def render_data_tfds(cache: dict) -> str:
  """docs/data.md: the TFDS builder against the columnar cache on the same 1 M-row file, from
  bench_data_1m.json and bench_tfds_1m.json."""
  tfds = _optional('bench_tfds_1m.json')
  if tfds is None:
    return _fill('Not measured yet. With TensorFlow installed (`pip install tensorflow-cpu`, '
                 'better in a virtual environment of its own), on the file of the 1 M-row run '
                 f'above: `{TFDS_COMMAND}`, then `python experiments/readme_results.py`.') + '\n'
  x = _tfds_figures(cache, tfds)
  lines = [_fill(
      f'Machine: {tfds["machine"]}; TensorFlow {tfds["tensorflow"]} (`tensorflow-cpu`), '
      f'TensorFlow Datasets {tfds["tensorflow_datasets"]}, in a separate virtual environment '
      '(the project\'s own does not install TensorFlow); measured on '
      f'{tfds["date"][:10]}. File: the same generated {tfds["rows"]:,}-row `train.txt` '
      f'({tfds["file_gb"]:.2f} GB) for both.'), '', '```', 'pip install tensorflow-cpu',
      _shown(tfds['command'], keep_workdir=True), _shown(cache['command'], keep_workdir=True),
      '```', '',
      f'| | build | build rows/s | on disk | read, shuffled epoch, batch {tfds["batch_size"]} '
      '| load |', '|---|---:|---:|---:|---:|---|',
      f'| TFDS `criteo_raw` (TFRecord, {tfds["tfds_shards"]} shards) | '
      f'{tfds["tfds_build_s"]:.1f} s | {tfds["tfds_build_rows_per_s"]:,.0f} | '
      f'{tfds["tfds_gb"]:.2f} GB | {tfds["read_rows_per_s_shuffled"]:,.0f} rows/s '
      f'({tfds["read_rows_per_s_in_order"]:,.0f} rows/s in file order) | {_load(tfds)} |',
      f'| columnar cache | {cache["build_s"]:.1f} s | {cache["build_rows_per_s"]:,.0f} | '
      f'{cache["cache_gb"]:.2f} GB | {_millions(cache["iterator_rows_per_s_prefetch"])} '
      f'`prefetch(batches)`, {_millions(cache["iterator_rows_per_s_threaded_2"])} '
      f'`threaded_batches(workers=2)` | {_load(cache)} |', '']
  lines.append(_fill(
      'The TFDS build is `download_and_prepare` with the file\'s folder as manual_dir (one '
      'process, serialising one `tf.train.Example` per line). The TFDS epoch is '
      f'`tfds.load(\'criteo_raw\', shuffle_files=True)` -> `shuffle({tfds["shuffle_buffer"]})` '
      f'-> `batch({tfds["batch_size"]})` -> `prefetch(AUTOTUNE)` -> `tfds.as_numpy`, all '
      f'{tfds["examples"]:,} examples; "in file order" is the same without file shuffling and '
      'the shuffle buffer. The cache rates are one shuffled epoch of its training split '
      f'({cache["train_rows"]:,} rows). The rates do not measure the same output: a TFDS batch '
      'holds the raw byte strings of 39 fields, still to be mapped to indices, while a cache '
      'batch is already int32 indices, so the TFDS figure is an upper bound for a TFDS-fed '
      'trainer.'))
  lines += ['', _fill(
      'Training uses the columnar cache: on this machine it reads a shuffled epoch about '
      f'{_about(x["read"])} times faster than TFDS '
      f'({cache["iterator_rows_per_s_prefetch"] / 1e6:.1f} M against '
      f'{tfds["read_rows_per_s_shuffled"] / 1e3:.1f} k rows/s, and the TFDS rate is before any '
      f'vocabulary lookup) and builds about {_about(x["build"])} times faster '
      f'({cache["build_s"]:.1f} s against {tfds["tfds_build_s"]:.1f} s), with a store '
      f'{x["size"]:.0%} of the size ({cache["cache_gb"]:.2f} GB against {tfds["tfds_gb"]:.2f} '
      'GB). It also maps the vocabulary and OOV once at build time rather than per epoch, makes '
      'an epoch\'s order depend only on `(seed, epoch)` (exact resumption), and needs neither '
      'TensorFlow nor a per-example decode. The TFDS builders stay for pipelines that already '
      'consume TFDS datasets.')]
  return '\n'.join(lines) + '\n'


def render_readme_tfds(cache: dict) -> str:
  """README.md: the design choice of the columnar cache over TFDS, with its measured ratios."""
  tfds = _optional('bench_tfds_1m.json')
  text = ('- **pyarrow** parses the raw CSV/TSV files in blocks (vectorised), and numpy builds '
          'the vocabularies. TFDS builders exist for users who keep their data that way, but '
          'training reads the columnar cache')
  if tfds is None:
    text += ' ([docs/data.md](docs/data.md) says how to measure the two).'
  else:
    x = _tfds_figures(cache, tfds)
    text += (f': it builds {_about(x["build"])}x faster and reads a shuffled epoch about '
             f'{_about(x["read"])}x faster than TFDS on this machine ([docs/data.md](docs/data.md)).')
  return _fill(text, '  ') + '\n'


def _power_of_ten(n: int) -> str:
  exponent = len(str(n)) - 1
  return f'10^{exponent}' if n == 10 ** exponent else f'{n:,}'


def render_scaling(results: dict) -> str:
  """docs/sharding.md: experiments/bench_scaling.py's table, its check of the memory model and
  what the largest vocabulary needs on one device and on the most."""
  module = _experiment('bench_scaling')
  machine, rows = results['machine'], results['rows']
  vocab = max(r['vocab'] for r in rows)
  one = next(r for r in rows if r['vocab'] == vocab and r['devices'] == 1)
  most = max((r for r in rows if r['vocab'] == vocab), key=lambda r: r['devices'])
  n = most['devices']
  share = {2: 'a half', 4: 'a quarter', 8: 'an eighth'}.get(n, f'1/{n}')
  even = all(abs(most[k] * n / one[k] - 1) < 0.02 for k in ('argument_gib', 'temp_gib'))
  lines = [_fill(
      f'Measured on {machine["description"]} with **{machine["devices"]} fake '
      f'{machine["platform"].upper()} devices** '
      f'(`XLA_FLAGS=--xla_force_host_platform_device_count={machine["devices"]}`), JAX '
      f'{machine["jax"]}, on {results["date"][:10]}, one-minute load average '
      f'{results["load_average_before"][0]:.1f} before and {results["load_average_after"][0]:.1f} '
      'after:'), '', '```bash',
      f'XLA_FLAGS=--xla_force_host_platform_device_count={machine["devices"]} '
      f'{results["command"]}', '```', '', module.table(rows), '']
  text = ('"per device: state" is the compiled step\'s argument size (state and batch) and '
          f'matches the model within {results["model_max_error"]:.2%} on every row. At '
          f'{_power_of_ten(vocab)} features one device would need {one["argument_gib"]:.1f} GiB '
          f'of state plus {one["temp_gib"]:.1f} GiB of temporaries; on {n} devices each needs '
          f'{most["argument_gib"]:.1f} + {most["temp_gib"]:.1f} GiB')
  if even:
    text += (f', {share} of both: the first-order weights are split like the table, so nothing '
             'grows with the vocabulary on every device. Temporaries (gradients of the table '
             'and thresholds, Adam\'s intermediate values) scale with 1/n too.')
  else:
    text += '.'
  lines.append(_fill(text))
  timed = sorted({r['vocab'] for r in rows if r['step_ms'] is not None})
  if machine['platform'] == 'cpu' and timed:
    steps = []
    for v in timed:
      by_devices = sorted((r for r in rows if r['vocab'] == v and r['step_ms'] is not None),
                          key=lambda r: r['devices'])
      first, last = by_devices[0], by_devices[-1]
      steps.append(f'{first["step_ms"]:.1f} ms on {first["devices"]} device'
                   f'{"s" if first["devices"] > 1 else ""} and {last["step_ms"]:.1f} ms on '
                   f'{last["devices"]} at {_power_of_ten(v)} features')
    lines += ['', _fill(
        f'The step times are from fake devices sharing {machine["cpu_count"]} cores, so they '
        'show the overhead of splitting and what it saves in dense Adam updates over the whole '
        '(memory-bound) table, not the speed-up real devices would give: a step took '
        + _and(steps) + '.')]
  return '\n'.join(lines) + '\n'


# name -> (results file in docs/results/, renderer of its contents; .json files are parsed)
RENDERERS = {
    'demo': ('demo.json', render_demo),
    'compare': ('compare.json', render_compare),
    'reachability_summary': ('reachability_standin.md', render_reachability_summary),
    'runtime': ('runtime.json', render_runtime),
    'methods_speed': ('bench_speed_methods.json', render_methods_speed),
    'methods_speed_criteo': ('bench_speed_methods_criteo.json', lambda results: render_methods_speed(
        results, 'bench_speed_methods_criteo.json', 'bench_speed_methods_criteo_before.json')),
    'speed': ('bench_speed.json', render_speed),
    'methods_speed_notes': ('step_anatomy.json', render_methods_speed_notes),
    'step_anatomy_pep': ('step_anatomy.json', render_step_anatomy_pep),
    'speed_steps': ('bench_speed.json', render_speed_steps),
    'speed_duration': ('bench_speed.json', render_speed_duration),
    'public': ('bench_public.json', render_public),
    'runtime_summary': ('runtime.json', render_runtime_summary),
    'rows_vs_dense': ('rows_vs_dense_demo.json', render_rows_vs_dense),
    'reachability_ml100k': ('reachability_ml100k.md', render_table),
    'reachability_standin': ('reachability_standin.md', render_table),
    'reachability_standin_long': ('reachability_standin_long.md', render_table),
    'reachability_standin_notes': ('reachability_standin.md', render_reachability_standin_notes),
    'reachability_standin_long_notes': ('reachability_standin_long.md',
                                        render_reachability_standin_long_notes),
    'reachability_recommendation': ('reachability_standin_long.md',
                                    render_reachability_recommendation),
    'reachability_ml100k_notes': ('reachability_ml100k.md', render_reachability_ml100k_notes),
    'granularity': ('granularity.md', render_table),
    'export_forms': ('bench_export.json', render_export_forms),
    'export_criteo': ('bench_export.json', render_export_criteo),
    'export_targets': ('bench_export.json', render_export_targets),
    'export_schemes': ('bench_export.json', render_export_schemes),
    'export_readme': ('bench_export.json', render_export_readme),
    'export_scheme_choice': ('bench_export.json', render_export_scheme_choice),
    'export_derive': ('bench_export.json', render_export_derive),
    'export_check': ('bench_export.json', render_export_check),
    'analyses_setting': ('lottery_ticket.json', render_analyses_setting),
    'lottery_ticket': ('lottery_ticket.json', render_lottery_ticket),
    'sizes_vs_frequency': ('sizes_vs_frequency.json', render_sizes_vs_frequency),
    'interactions': ('interactions.json', render_interactions),
    'readme_lottery_ticket': ('lottery_ticket.json', render_readme_lottery_ticket),
    'readme_sizes_vs_frequency': ('sizes_vs_frequency.json', render_readme_sizes_vs_frequency),
    'readme_interactions': ('interactions.json', render_readme_interactions),
    'pep_ticket_steps': ('lottery_ticket.json', render_pep_ticket_steps),
    'pep_masks': ('sizes_vs_frequency.json', render_pep_masks),
    'granularity_notes': ('granularity.md', render_granularity_notes),
    'readme_granularity': ('granularity.md', render_readme_granularity),
    'sseds_seeds': ('sseds_study.json', render_sseds_seeds),
    'sseds_compare': ('sseds_study.json', render_sseds_compare),
    'sseds_movielens': ('sseds_study.json', render_sseds_movielens),
    'sseds_conclusion': ('sseds_study.json', render_sseds_conclusion),
    'compare_forms': ('compare_forms.json', render_compare_forms),
    'setup_times': ('setup_times.json', render_setup_times),
    'data_build': ('bench_data_1m.json', render_data_build),
    'data_tfds': ('bench_data_1m.json', render_data_tfds),
    'readme_tfds': ('bench_data_1m.json', render_readme_tfds),
    'scaling': ('bench_scaling.json', render_scaling),
}
PAGES = ('README.md', 'docs/performance.md', 'docs/analyses.md', 'docs/serving.md', 'docs/pep.md',
         'docs/methods.md', 'docs/data.md', 'docs/sharding.md')


def render(readme: str, results_dir: str = RESULTS) -> str:
  """``readme`` with every results block written from its results file."""

  def block(match):
    name = match.group(2)
    if name not in RENDERERS:
      raise SystemExit(f'README.md: unknown results block {name!r}; known: {sorted(RENDERERS)}')
    file, renderer = RENDERERS[name]
    with open(os.path.join(results_dir, file)) as f:
      contents = json.load(f) if file.endswith('.json') else f.read()
    return match.group(1) + renderer(contents) + match.group(4)

  return BLOCK.sub(block, readme)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--demo', help='a finished demo work directory to record first')
  parser.add_argument('--compare', help='a finished configs/compare.py work directory to record '
                      'first')
  parser.add_argument('--check', action='store_true',
                      help='exit 1 when the README differs from its results files')
  args = parser.parse_args()
  if args.demo:
    results = record_demo(args.demo)
    with open(os.path.join(RESULTS, 'demo.json'), 'w') as f:
      json.dump(results, f, indent=1)
  if args.compare:
    with open(os.path.join(RESULTS, 'compare.json'), 'w') as f:
      json.dump(record_compare(args.compare), f, indent=1)
    compare_figure(args.compare)
  for page in PAGES:
    path = os.path.join(ROOT, page)
    with open(path) as f:
      text = f.read()
    rendered = render(text)
    if args.check:
      if rendered != text:
        raise SystemExit(f'{page} differs from docs/results/: run python '
                         'experiments/readme_results.py')
      continue
    with open(path, 'w') as f:
      f.write(rendered)
    print(f'wrote {len(BLOCK.findall(rendered))} results blocks of {page}')


if __name__ == '__main__':
  main()
