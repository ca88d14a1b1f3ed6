"""The README's Python example runs and prints what it says."""

import contextlib
import io
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_flax_example_runs():
  with open(os.path.join(ROOT, 'README.md')) as f:
    blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
  assert blocks
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(blocks[0], 'README.md', 'exec'), {})
  expected = re.search(r'# (\(2,\) \d+)', blocks[0]).group(1)
  assert out.getvalue().strip() == expected


def test_readme_setup_commands_match_ci():
  with open(os.path.join(ROOT, 'README.md')) as f:
    readme = f.read()
  with open(os.path.join(ROOT, '.ci', 'run')) as f:
    ci = f.read()
  commands = re.findall(r'```bash\n(python3 -m venv[^\n]*)\n```', readme)
  assert len(commands) == 2
  test_command = commands[1].split('&& ', 2)[2]  # after creating and activating the venv
  assert test_command in ci
