"""Every command line reports a user error in one line, without a traceback."""

import os
import subprocess
import sys

import pytest

from pep_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('module, args, message', [
    ('pep_jax.main', ['--config=configs/demo.py:tiny', '--workdir={tmp}',
                      '--config.train.batchsize=3'],
     "error: --config.train.batchsize=3: the config has no key 'train.batchsize' "
     '(did you mean "batch_size"?)'),
    ('pep_jax.main', ['--config=configs/no_such.py', '--workdir={tmp}'],
     "error: --config=configs/no_such.py: cannot load the config file (No such file or "
     "directory: 'configs/no_such.py')"),
    ('pep_jax.main', ['--config=configs/demo.py:huge', '--workdir={tmp}'],
     "unknown variant 'huge' of configs/demo.py"),
    ('pep_jax.main', ['--config=configs/demo.py:tiny', '--workdir={tmp}', 'extra'],
     "error: unexpected arguments: ['extra']"),
    ('pep_jax.data.prepare', ['--config=configs/criteo_fm.py', '--config.data.dirr=/x'],
     "error: --config.data.dirr=/x: the config has no key 'data.dirr'"),
    ('pep_jax.data.prepare', ['--config=configs/demo.py'],
     'error: config key data.name is synthetic: there is nothing to prepare'),
    ('pep_jax.data.prepare', ['--config=configs/criteo_fm.py', '--config.data.dir={tmp}'],
     "error: data.name='criteo': expected"),
    ('pep_jax.export', ['--workdir={tmp}'], 'error: flag --out=None'),
    ('pep_jax.predict', ['--artifact={tmp}', '--input={tmp}/rows.csv', '--format=csv'],
     'error: flag --format=csv'),
    ('pep_jax.main', ['--config=configs/demo.py:tiny', '--workdir={tmp}/w',
                      '--config.data.synthetic.seed=-1'],
     'error: config key data.synthetic.seed: expected a non-negative integer (a seed), got -1'),
    ('pep_jax.main', ['--config=configs/demo.py:tiny', '--workdir={tmp}/w',
                      '--config.prune.budgets=(1.5,)'],
     'error: config key prune.budgets: budget 1.5 is neither a fraction (at most 1) nor a whole '
     'count'),
    ('pep_jax.predict', ['--artifact={tmp}', '--input={tmp}'],
     'is a folder; give a file of rows'),
    ('pep_jax.predict', ['--artifact={tmp}', '--input=README.md', '--output={tmp}/no/p.txt'],
     'the folder {tmp}/no does not exist'),
])
def test_user_errors_take_one_line(tmp_path, module, args, message):
  proc = run(module, *(a.format(tmp=tmp_path) for a in args))
  assert proc.returncode == 1, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith('error: ') and message.format(tmp=tmp_path) in lines[0]
  assert not os.listdir(tmp_path)  # nothing started


def test_one_line_keeps_the_cause_of_a_wrapped_traceback():
  text = ('flag --config=c.py:x: Error whilst parsing config file:\n\nTraceback (most recent '
          'call last):\n  File "c.py", line 3\n    raise ValueError("no")\nValueError: no\n')
  assert cli.one_line(text) == 'flag --config=c.py:x: ValueError: no'
  assert cli.one_line('a\n  b\n') == 'a b'


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / 'file'
  path.write_text('')
  proc = run('pep_jax.main', '--config=configs/demo.py:tiny', f'--workdir={path}')
  assert proc.returncode == 1
  assert proc.stderr.strip() == (f'error: --workdir={path} is a file; a work directory is a '
                                 'folder (add --verbosity=1 for the traceback)')


def test_an_error_inside_a_library_keeps_its_traceback(tmp_path):
  """A ValueError that is not a pep_jax user error is a bug: it is not cut to one line."""
  code = ('from pep_jax import cli\n'
          'def fail():\n  raise ValueError("inside numpy")\n'
          'cli.exit_on_user_error(fail)\n')
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 1
  assert 'Traceback' in proc.stderr and 'ValueError: inside numpy' in proc.stderr
