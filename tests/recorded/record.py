"""Writes the recorded summaries the end-to-end tests are pinned to.

    python tests/recorded/record.py            # every config below, into tests/recorded/

Each file is the summary of one tiny run (``configs/<name>.py:tiny``) without its timings,
and its tickets (step, non-zeros, per-field sizes and mask), with the machine and versions it
was recorded on. The tests compare a fresh run with it within
tolerances a real regression exceeds (``tests/recorded/__init__.py``); rerun this command, and
say why in the commit, when a change is meant to move the numbers.
"""

import json
import os
import platform
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tests'))

import jax  # noqa: E402

from configs import demo  # noqa: E402
from pep_jax import experiment  # noqa: E402
from recorded import tickets_of  # noqa: E402

CONFIGS = {'demo_tiny': demo}
TIMINGS = ('search_seconds', 'train_seconds', 'score_seconds', 'search_seconds_per_epoch')


def main():
  for name, module in CONFIGS.items():
    with tempfile.TemporaryDirectory() as workdir:
      rows = experiment.run(module.get_config('tiny'), workdir)
      tickets = tickets_of(module.get_config('tiny'), workdir)
    rows = [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f'{name}.json')
    with open(path, 'w') as f:
      json.dump({'config': f'configs/{module.__name__.split(".")[-1]}.py:tiny',
                 'machine': {'processor': platform.processor() or platform.machine(),
                             'cpus': os.cpu_count(), 'python': platform.python_version(),
                             'jax': jax.__version__},
                 'rows': rows, 'tickets': tickets}, f, indent=1)
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
