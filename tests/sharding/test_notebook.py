"""The Colab TPU notebook runs top to bottom on CPU devices, with the tiny demo config.

Its code cells are run in order as one script, in a fresh process with 2 fake CPU devices (so
the table really is split); shell lines (``!pip ...``) are skipped and ``CONFIG_ARG`` is set to
``'tiny'``.
"""

import json
import os

from multidevice import REPO, run_on_devices

NOTEBOOK = os.path.join(REPO, 'experiments', 'colab_tpu.ipynb')
CONFIG_LINE = 'CONFIG_ARG = None'


def code_cells(path: str) -> list[str]:
  """The source of every code cell (nbformat when installed, the JSON otherwise)."""
  try:
    import nbformat
    cells = nbformat.read(path, as_version=4).cells
  except ImportError:
    with open(path) as f:
      cells = json.load(f)['cells']
  out = []
  for cell in cells:
    if cell['cell_type'] == 'code':
      source = cell['source']
      out.append(source if isinstance(source, str) else ''.join(source))
  return out


def runnable(source: str) -> str:
  """A cell without its shell and magic lines."""
  return '\n'.join(line for line in source.splitlines()
                   if not line.lstrip().startswith(('!', '%')))


def test_notebook_is_valid_and_points_at_a_placeholder():
  with open(NOTEBOOK) as f:
    notebook = json.load(f)
  assert notebook['nbformat'] == 4
  cells = code_cells(NOTEBOOK)
  assert any('pip install' in c for c in cells)
  assert any(CONFIG_LINE in c for c in cells)


def test_notebook_runs_top_to_bottom(tmp_path):
  cells = [runnable(c) for c in code_cells(NOTEBOOK)]
  script = '\n\n'.join(cells)
  assert CONFIG_LINE in script
  script = script.replace(CONFIG_LINE, "CONFIG_ARG = 'tiny'")
  script = f'import os\nos.chdir({str(tmp_path)!r})\n' + script + '''
with open(os.path.join(WORKDIR, 'summary.json')) as f:
  result({'rows': json.load(f), 'devices': jax.device_count(),
          'plot': os.path.exists(os.path.join(WORKDIR, 'frontier.png'))})
'''
  out = run_on_devices(2, script, timeout=180)
  assert out['devices'] == 2 and out['plot']
  methods = {row['method'] for row in out['rows']}
  assert {'pep', 'ue'} <= methods
