"""experiments/setup_times.py: the README's commands and pytest's final line (nothing is run)."""

import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def setup_times():
  return importlib.import_module('experiments.setup_times')


def test_the_commands_are_the_readmes_after_the_install(setup_times):
  with open(os.path.join(ROOT, 'README.md')) as f:
    commands = setup_times.readme_commands(f.read())
  assert commands['demo'].startswith('python -m pep_jax.main --config=configs/demo.py ')
  assert '--workdir=' in commands['demo']
  assert commands['tests'] == 'python -m pytest -q'


@pytest.mark.parametrize('line, counts', [
    ('799 passed in 1076.12s (0:17:56)', {'passed': 799}),
    ('3 failed, 796 passed, 2 skipped, 1 warning in 12.30s',
     {'failed': 3, 'passed': 796, 'skipped': 2, 'warnings': 1}),
    ('====== 1 failed, 10 passed, 1 error in 3.20s ======',
     {'failed': 1, 'passed': 10, 'errors': 1}),
    ('2 passed, 1 xfailed, 1 xpassed, 4 deselected, 3 warnings in 1.00s',
     {'passed': 2, 'xfailed': 1, 'xpassed': 1, 'deselected': 4, 'warnings': 3}),
    ('no tests ran in 0.01s', {}),
])
def test_pytest_final_line(setup_times, line, counts):
  assert setup_times.pytest_counts(line) == counts


@pytest.mark.parametrize('line', [
    '........................................................................ [ 10%]',
    'FAILED tests/test_fit.py::test_resume - AssertionError: 3 passed',
    'the demo ran in 92.4s',
    '',
])
def test_other_lines_are_not_the_final_line(setup_times, line):
  assert setup_times.pytest_counts(line) is None


def test_a_suite_is_recorded_with_its_counts_and_its_status(setup_times, capsys):
  passed = setup_times.time_tests("python -c \"print('..'); print('2 passed in 0.01s')\"")
  assert passed['status'] == 'passed' and passed['counts'] == {'passed': 2}
  assert passed['seconds'] > 0 and len(passed['load_average_before']) == 3
  assert passed['machine']['cpus'] == os.cpu_count()
  assert '2 passed in 0.01s' in capsys.readouterr().out  # the output passed through
  failed = setup_times.time_tests(
      "python -c \"import sys; print('1 failed, 1 passed in 0.10s'); sys.exit(1)\"")
  assert failed['status'] == 'failed' and failed['counts'] == {'failed': 1, 'passed': 1}
  assert failed['output_tail'] == ['1 failed, 1 passed in 0.10s']
