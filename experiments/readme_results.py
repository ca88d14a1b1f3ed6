"""The measured figures of the README and docs/, written from results files in docs/results/.

    python -m pep_jax.main --config=configs/demo.py --workdir=runs/demo
    python experiments/readme_results.py --demo=runs/demo     # record, then rewrite the README
    python -m pep_jax.main --config=configs/compare.py --workdir=runs/compare
    python experiments/readme_results.py --compare=runs/compare
    python experiments/readme_results.py --check              # exit 1 if the README differs

A figure of the README or of a page of docs/ that comes from a run stands between two
markers::

    <!-- results:demo begin (python experiments/readme_results.py) -->
    ...written from docs/results/demo.json...
    <!-- results:demo end -->

``--demo=WORKDIR`` records a finished demo (its summary without timings, its comparisons with
their intervals, what its tickets keep of the noise fields, the machine) in
``docs/results/demo.json``; every run rewrites each block from its results file. A test
(``tests/test_readme_results.py``) renders the blocks again and fails when the README differs,
so a figure changed by hand in a block does not pass CI; ``tests/test_demo_quality.py`` checks
that the demo still gives the recorded results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'docs', 'results')
TIMINGS = ('search_seconds', 'train_seconds', 'score_seconds', 'search_seconds_per_epoch')
BLOCK = re.compile(r'(<!-- results:(\w+) begin[^\n]*-->\n)(.*?)(<!-- results:\2 end -->)', re.S)


# ----------------------------------------------------------------------------- recording


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
  return {
      'command': 'python -m pep_jax.main --config=configs/compare.py --workdir=runs/compare',
      'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                  'cpus': os.cpu_count(), 'python': platform.python_version(),
                  'jax': jax.__version__},
      'wall_seconds': os.path.getmtime(paths['json']) - started,
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
           f'JAX {machine["jax"]}, no accelerator), with other jobs on the machine.', '',
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


def render_table(results: str) -> str:
  """A table a script wrote as markdown, without the title line it starts with."""
  lines = [line for line in results.rstrip('\n').split('\n') if not line.startswith('# ')]
  while lines and not lines[0].strip():
    lines.pop(0)
  return '\n'.join(lines) + '\n'


def render_rows_vs_dense(results: dict) -> str:
  """experiments/rows_vs_dense.py's table, from its JSON."""
  spec = importlib.util.spec_from_file_location(
      'rows_vs_dense', os.path.join(ROOT, 'experiments', 'rows_vs_dense.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  machine = results['machine']
  return (module.markdown(results) + f'\n\nMeasured with `{results["config"]}` on '
          f'{machine["cpus"]} CPU cores ({machine["processor"] or "x86-64"}), JAX '
          f'{machine["jax"]}, with other work on the machine (speeds are of that run only).\n')


# name -> (results file in docs/results/, renderer of its contents; .json files are parsed)
RENDERERS = {
    'demo': ('demo.json', render_demo),
    'compare': ('compare.json', render_compare),
    'rows_vs_dense': ('rows_vs_dense_demo.json', render_rows_vs_dense),
    'reachability_ml100k': ('reachability_ml100k.md', render_table),
    'reachability_standin': ('reachability_standin.md', render_table),
    'reachability_standin_long': ('reachability_standin_long.md', render_table),
    'granularity': ('granularity.md', render_table),
}
PAGES = ('README.md', 'docs/performance.md', 'docs/analyses.md')


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
