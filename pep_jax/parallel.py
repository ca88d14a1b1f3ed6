"""Multi-process set-up: ``jax.distributed.initialize()`` when the environment asks for it."""

import os

import jax

_COORDINATOR_VARS = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS')


def initialize_distributed() -> bool:
  """Starts JAX's multi-host runtime when launched as one of several processes.

  Returns True when it was initialised. On Cloud TPU pods and SLURM clusters JAX reads the
  topology from the environment; elsewhere set ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
  """
  multi = any(os.environ.get(v) for v in _COORDINATOR_VARS) or \
      int(os.environ.get('JAX_NUM_PROCESSES', '1')) > 1 or 'SLURM_NTASKS' in os.environ and \
      int(os.environ['SLURM_NTASKS']) > 1 or 'TPU_WORKER_HOSTNAMES' in os.environ and \
      ',' in os.environ['TPU_WORKER_HOSTNAMES']
  if multi:
    jax.distributed.initialize()
  return multi
