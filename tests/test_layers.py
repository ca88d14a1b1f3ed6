"""The layers of pep_jax only point down: the import-linter contract in pyproject.toml.

The contract lists the layers top to bottom (command lines; analyses and export; the
experiment driver and serving; the summary; the methods; the work directory; the training
library; config; models; data; layers; sharding; the command-line helpers; ops and metrics;
errors). A module that imports from a layer above its own fails this test, naming the import
and its line.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lint(root: str) -> subprocess.CompletedProcess:
  code = 'import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())'
  return subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True, text=True,
                        env={**os.environ, 'PYTHONPATH': root}, timeout=300)


def test_no_import_runs_back_up_the_layers():
  out = lint(ROOT)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
  assert 'Layers only point down KEPT' in out.stdout


def test_an_import_that_runs_up_is_caught(tmp_path):
  """A copy of the package in which the training library imports the experiment driver."""
  import shutil
  shutil.copytree(os.path.join(ROOT, 'pep_jax'), tmp_path / 'pep_jax',
                  ignore=shutil.ignore_patterns('__pycache__'))
  shutil.copy(os.path.join(ROOT, 'pyproject.toml'), tmp_path / 'pyproject.toml')
  with open(tmp_path / 'pep_jax' / 'train' / 'optim.py', 'a') as f:
    f.write('\nfrom pep_jax import experiment  # noqa: E402,F401\n')
  out = lint(str(tmp_path))
  assert out.returncode != 0
  assert 'pep_jax.train.optim -> pep_jax.experiment' in out.stdout
