"""experiments/compare_forms.py on a two-seed comparison: its bytes against the artifacts an
export writes, its means and intervals against a direct computation, its refusals, and the
README's figure and block drawn from it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from pep_jax import experiment, export
from pep_jax import workdir as wd
from test_experiment_scripts import ROOT, page_renderers, script
from test_seeds import config

FORMS = ('int8', 'int4')


@pytest.fixture(scope='module')
def measured(tmp_path_factory):
  """A comparison of UE and magnitude pruning over seeds 42 and 43, and the script's JSON."""
  workdir = str(tmp_path_factory.mktemp('compare'))
  c = config()
  c.methods = ('ue', 'magnitude')
  experiment.run(c, workdir)
  out = tmp_path_factory.mktemp('forms')
  path, plot = str(out / 'compare_forms.json'), str(out / 'frontier.png')
  proc = script('compare_forms', f'--workdir={workdir}', f'--json={path}', f'--plot={plot}')
  with open(path) as f:
    return workdir, json.load(f), plot, proc.stdout


def test_every_run_of_every_seed_in_each_form_against_its_artifact(measured, tmp_path):
  workdir, document, plot, stdout = measured
  rows = {(r['run'], r['form']): r for r in document['rows']}
  dirs = wd.seed_dirs(workdir)
  runs = wd.finished_runs(dirs[42])
  assert len(runs) == 3 and sorted(rows) == sorted((n, f) for n in runs for f in FORMS)
  for (name, form), row in rows.items():
    assert row['seeds'] == [42, 43]
    manifests = [export.export(dirs[s], str(tmp_path / f'{s}_{name}_{form}'), run=name,
                               quantize=form, max_auc_drop=1.0) for s in row['seeds']]
    assert row['bytes_per_seed'] == [m['compact_bytes'] for m in manifests]
    assert row['test_auc_per_seed'] == [m['check']['test_auc_compact'] for m in manifests]
    assert row['test_auc_float_per_seed'] == [m['check']['test_auc_reference']
                                              for m in manifests]
    drops = [m['check']['test_auc_reference'] - m['check']['test_auc_compact']
             for m in manifests]
    assert row['auc_drop_per_seed'] == pytest.approx(drops, abs=1e-12)
    assert row['bytes'] == pytest.approx(np.mean(row['bytes_per_seed']))
    for key, values in (('test_auc', row['test_auc_per_seed']), ('auc_drop', drops)):
      mean = np.mean(values)
      half = stats.t.ppf(0.975, 1) * np.std(values, ddof=1) / np.sqrt(2)
      assert row[f'{key}_mean'] == pytest.approx(mean, abs=1e-12)
      assert row[f'{key}_ci95'] == pytest.approx([mean - half, mean + half], abs=1e-8)
    assert f'{row["test_auc_mean"]:.4f}' in stdout
  with open(plot, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_refuses_a_work_directory_without_seeds_or_with_an_unfinished_run(measured, tmp_path):
  workdir, _, _, _ = measured

  def fails(folder):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'compare_forms.py'),
                           f'--workdir={folder}', f'--json={tmp_path / "out.json"}'],
                          cwd=ROOT, env={**os.environ, 'PYTHONPATH': ROOT,
                                         'JAX_PLATFORMS': 'cpu'},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and not os.path.exists(tmp_path / 'out.json')
    return proc.stderr.strip().splitlines()[-1]

  empty = tmp_path / 'empty'
  empty.mkdir()
  line = fails(str(empty))
  assert line.startswith('error: ') and str(empty) in line and 'no seed folders' in line
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  seed = wd.seed_dir(copy, 43)
  os.remove(os.path.join(wd.run_dir(seed, 'ue_d8'), wd.RESULT))
  line = fails(copy)
  assert line.startswith('error: ') and seed in line and 'ue_d8' in line


def test_the_readme_draws_the_forms_only_for_the_comparison_they_measured(measured, tmp_path):
  workdir, document, _, _ = measured
  module = page_renderers()
  forms = module._experiment('compare_forms')
  assert forms.belongs_to(document, workdir)
  block = module.render_compare_forms(document)
  assert len([line for line in block.splitlines() if line.startswith('| ')]) == (
      1 + len(document['rows']))
  for row in document['rows']:
    assert f'| {row["setting"]} | {row["form"]} | {round(row["bytes"]):,} | ' in block
    assert f'{row["auc_drop_mean"]:+.5f}' in block
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  path = wd.summary_paths(copy)['comparison']
  with open(path, 'a') as f:
    f.write('\n')
  assert not forms.belongs_to(document, copy)
