"""The comparison's models in their quantised forms: stored bytes and test AUC over seeds.

    python -m pep_jax.main --config=configs/compare.py --workdir=runs/compare
    python experiments/compare_forms.py --workdir=runs/compare \
        --json=docs/results/compare_forms.json
    python experiments/readme_results.py --compare=runs/compare

Every finished run of every seed of a work directory made with several seeds
(``configs/compare.py``) is exported (``pep_jax.export.export``) in each form of ``--forms``
into a scratch folder deleted afterwards, with ``max_auc_drop=1`` so that no form is refused:
its drop is recorded instead. One row per (method, setting, form): the embedding's stored bytes
(``compact_bytes`` of the artifact; the mean over seeds and each seed's), the artifact's test
AUC in each seed, their mean and 95% Student-t interval over seeds, and the drop from the float
model of the same seed (the trained model scored by the export's check), with its mean and
interval.

``--plot=PATH`` draws the work directory's frontier (its ``comparison.json``) with these forms
in the bytes panel. The JSON keeps the SHA-256 of that ``comparison.json``:
``experiments/readme_results.py --compare`` draws the README's figure
(docs/figures/compare_frontier.png) the same way while the forms belong to the comparison it
records, and copies the summary's own figure otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np

from pep_jax import cli, export, report
from pep_jax import workdir as wd
from pep_jax.errors import MissingError, UserError
from pep_jax.metrics import t_interval

FORMS = ('int8', 'int4')
ANY_DROP = 1.0  # an AUC moves by at most 1: no form is refused, each drop is recorded


def seed_runs(workdir: str) -> dict[int, list[dict]]:
  """``{seed: summary rows of its runs}`` (the teacher's row left out).

  Raises:
    MissingError: naming the folder, when ``workdir`` has no seed folders, a seed has no
      summary, or a run of a summary has not finished.
  """
  dirs = wd.seed_dirs(workdir)
  if not dirs:
    raise MissingError(f'{workdir}: no seed folders ({wd.SEEDS}/<seed>); run an experiment '
                       'with several seeds (configs/compare.py) into it first')
  out = {}
  for seed, folder in dirs.items():
    path = wd.summary_paths(folder)['json']
    if not os.path.exists(path):
      raise MissingError(f'{folder}: seed {seed} has no {os.path.basename(path)}; let its '
                         'experiment finish first')
    rows = [r for r in wd.read_json(path, list) if r.get('run')]
    finished = set(wd.finished_runs(folder))
    unfinished = [r['run'] for r in rows if r['run'] not in finished]
    if unfinished:
      raise MissingError(f'{folder}: run {unfinished[0]} has not finished; let the experiment '
                         'finish first')
    out[seed] = rows
  return out


def mean_of(values: list):
  """The mean of ``values``, an int when they are equal ints."""
  return values[0] if len(set(values)) == 1 else float(np.mean(values))


def _pair(interval) -> list[float] | None:
  return None if interval is None else [float(interval[0]), float(interval[1])]


def form_rows(per_seed: dict[int, list[dict]], dirs: dict[int, str], forms, scratch: str,
              log=print) -> list[dict]:
  """Exports every run of every seed in each of ``forms`` under ``scratch``; one row per
  (method, setting, form), in the order of the first seed's rows.

  Each row: ``method``, ``setting``, ``run``, ``form``, ``seeds``, ``bytes`` (mean over seeds;
  ``bytes_per_seed``), ``test_auc_per_seed``, ``test_auc_mean``, ``test_auc_std``,
  ``test_auc_ci95`` (Student t at :data:`pep_jax.report.LEVEL`; None with one seed),
  ``test_auc_float_per_seed`` (the trained model, as the export's check scores it),
  ``auc_drop_per_seed`` (float minus form), ``auc_drop_mean`` and ``auc_drop_ci95``.
  """
  groups: dict[tuple, dict[int, dict]] = {}
  for seed, rows in per_seed.items():
    for row in rows:
      for form in forms:
        out = os.path.join(scratch, f'{seed}_{row["run"]}_{form}')
        manifest = export.export(dirs[seed], out, run=row['run'], quantize=form,
                                 max_auc_drop=ANY_DROP)
        shutil.rmtree(out)
        check = manifest['check']
        groups.setdefault((row['method'], row['setting'], form), {})[seed] = {
            'run': row['run'], 'bytes': manifest['compact_bytes'],
            'test_auc': check['test_auc_compact'], 'test_auc_float': check['test_auc_reference'],
            'auc_drop': check['auc_drop']}
        log(f'{seed:5d} {row["run"]:20s} {form:5s} {manifest["compact_bytes"]:10,d} '
            f'{check["test_auc_compact"]:.5f} {check["auc_drop"]:+.5f}')
  out = []
  for (method, setting, form), by_seed in groups.items():
    seeds = list(by_seed)
    column = {key: [by_seed[s][key] for s in seeds]
              for key in ('bytes', 'test_auc', 'test_auc_float', 'auc_drop')}
    test = t_interval(column['test_auc'], report.LEVEL)
    drop = t_interval(column['auc_drop'], report.LEVEL)
    out.append({
        'method': method, 'setting': setting, 'run': by_seed[seeds[0]]['run'], 'form': form,
        'seeds': seeds, 'bytes': mean_of(column['bytes']), 'bytes_per_seed': column['bytes'],
        'test_auc_per_seed': column['test_auc'], 'test_auc_mean': test['mean'],
        'test_auc_std': test['std'], 'test_auc_ci95': _pair(test['ci']),
        'test_auc_float_per_seed': column['test_auc_float'],
        'auc_drop_per_seed': column['auc_drop'], 'auc_drop_mean': drop['mean'],
        'auc_drop_ci95': _pair(drop['ci'])})
  return out


def sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def measure(workdir: str, forms=FORMS, log=print) -> dict:
  """The document ``--json`` writes: the work directory, the SHA-256 of its
  ``comparison.json``, the forms, the interval's level and :func:`form_rows`."""
  per_seed = seed_runs(workdir)
  comparison = wd.summary_paths(workdir)['comparison']
  if not os.path.exists(comparison):
    raise MissingError(f'{workdir}: no {os.path.basename(comparison)}; let the experiment '
                       'finish first')
  scratch = tempfile.mkdtemp(prefix='compare_forms_')
  try:
    rows = form_rows(per_seed, wd.seed_dirs(workdir), list(forms), scratch, log)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return {'workdir': os.path.abspath(workdir), 'comparison_sha256': sha256(comparison),
          'forms': list(forms), 'level': report.LEVEL, 'max_auc_drop': ANY_DROP, 'rows': rows}


def belongs_to(document: dict, workdir: str) -> bool:
  """Whether ``document`` measured the comparison ``workdir`` holds now."""
  comparison = wd.summary_paths(workdir)['comparison']
  return os.path.exists(comparison) and document.get('comparison_sha256') == sha256(comparison)


def plot(workdir: str, rows: list[dict], path: str) -> None:
  """The frontier of ``workdir`` (its ``comparison.json``, title and teacher's ceiling as its
  summary draws them) with the quantised forms ``rows`` in the bytes panel."""
  paths = wd.summary_paths(workdir)
  comparison = wd.read_json(paths['comparison'], list)
  teacher = [r['test_auc'] for r in wd.read_json(paths['json'], list)
             if r['method'] == 'teacher']
  config = wd.read_config(workdir)
  seeds = list(wd.seed_dirs(workdir))
  title = (f'{config.data.name} / {config.model.name} / d={config.embedding.dim} / '
           f'seed{"s" if len(seeds) > 1 else ""} {", ".join(str(s) for s in seeds)}')
  report.plot_frontier(comparison, teacher[0] if teacher else None, path, title, forms=rows)


def table(rows: list[dict]) -> str:
  lines = [f'{"method":10s} {"setting":18s} {"form":5s} {"bytes":>10s} {"test AUC":>8s} '
           f'{"95% interval":>19s} {"drop vs float":>13s}']
  for r in rows:
    ci = r['test_auc_ci95']
    interval = '' if ci is None else f'[{ci[0]:.4f}, {ci[1]:.4f}]'
    lines.append(f'{r["method"]:10s} {r["setting"]:18s} {r["form"]:5s} {r["bytes"]:10,.0f} '
                 f'{r["test_auc_mean"]:8.4f} {interval:>19s} {r["auc_drop_mean"]:+13.5f}')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='runs/compare')
  parser.add_argument('--json', default='compare_forms.json')
  parser.add_argument('--forms', default=','.join(FORMS))
  parser.add_argument('--plot', default=None, help='redraw the frontier with the forms here')
  args = parser.parse_args()
  forms = args.forms.split(',')
  try:
    for form in forms:
      export.scheme_of(form)
    document = measure(args.workdir, forms, lambda line: print(line, file=sys.stderr, flush=True))
  except UserError as e:
    raise cli.fail(str(e)) from e
  print(table(document['rows']))
  with open(args.json, 'w') as f:
    json.dump(document, f, indent=1)
  print(f'wrote {args.json}')
  if args.plot:
    plot(args.workdir, document['rows'], args.plot)
    print(f'wrote {args.plot}')


if __name__ == '__main__':
  main()
