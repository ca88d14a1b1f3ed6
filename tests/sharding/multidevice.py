"""Runs a snippet in a fresh Python process with ``n`` fake CPU devices.

JAX fixes its device count when its backend starts, so a test that needs 8 devices (or any
count other than the test process's) runs its body in a subprocess. The snippet prints one
line ``RESULT <json>``; :func:`run_on_devices` returns the decoded object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Shared by snippets: a test config on tiny synthetic data, and a mesh over the first n devices.
PRELUDE = '''
import json
import jax
import numpy as np
from configs.demo import get_config
from pep_jax import sharding


def tiny_config(**overrides):
  c = get_config('tiny')
  c.data.synthetic.num_rows = 4000
  c.prune.budgets = (0.6, 0.55)  # reached after about 8 and 40 steps
  c.train.batch_size = 128
  c.prune.max_epochs = 4
  c.train.max_epochs = 2
  c.train.patience = 1
  c.ue.dims = ()
  for key, value in overrides.items():
    section, name = key.split('.')
    c[section][name] = value
  return c


def mesh_of(n, config):
  """The config's mesh over the first n devices."""
  return sharding.build_mesh(config.mesh, jax.devices()[:n])


def on_first_devices(n):
  """Makes every stage built without an explicit mesh use the first n devices."""
  build = sharding.build_mesh.__wrapped__ if hasattr(sharding.build_mesh, '__wrapped__') \\
      else sharding.build_mesh
  def first_n(mesh_config, devices=None):
    return build(mesh_config, jax.devices()[:n])
  first_n.__wrapped__ = build
  sharding.build_mesh = first_n


def result(obj):
  print('RESULT ' + json.dumps(obj))
'''


def run_on_devices(n: int, snippet: str, timeout: float = 300) -> dict:
  """Runs ``PRELUDE + snippet`` with ``n`` CPU devices; returns what it passed to ``result``."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={n}',
             PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
  code = PRELUDE + textwrap.dedent(snippet)
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode != 0 or not lines:
    raise AssertionError(f'subprocess with {n} devices failed (exit {proc.returncode}):\n'
                         f'{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}')
  return json.loads(lines[-1][len('RESULT '):])
