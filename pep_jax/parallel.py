"""Multi-process set-up: ``jax.distributed.initialize()`` when the environment asks for it."""

import os

import jax

_COORDINATOR_VARS = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS')
# Seconds without a heartbeat after which the coordinator declares a process dead and ends the
# others (JAX's default, 100, when unset): what a surviving process waits, at most, once another
# was killed.
HEARTBEAT_TIMEOUT = 'PEP_JAX_HEARTBEAT_TIMEOUT_SECONDS'


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value else None


def initialize_distributed() -> bool:
  """Starts JAX's multi-host runtime when launched as one of several processes.

  Returns True when it was initialised. On Cloud TPU pods and SLURM clusters JAX reads the
  topology from the environment; elsewhere set ``JAX_COORDINATOR_ADDRESS`` (host:port of
  process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` on every process.
  ``PEP_JAX_HEARTBEAT_TIMEOUT_SECONDS`` shortens how long the others outlive a process that
  died.
  """
  coordinator = next((os.environ[v] for v in _COORDINATOR_VARS if os.environ.get(v)), None)
  num_processes = _env_int('JAX_NUM_PROCESSES')
  slurm = (_env_int('SLURM_NTASKS') or 1) > 1
  tpu_pod = ',' in os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if not (coordinator or (num_processes or 1) > 1 or slurm or tpu_pod):
    return False
  timeouts = {}
  heartbeat = _env_int(HEARTBEAT_TIMEOUT)
  if heartbeat:
    timeouts['heartbeat_timeout_seconds'] = heartbeat
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=_env_int('JAX_PROCESS_ID'), **timeouts)
  return True

