"""Every checkpoint of a run goes through :class:`Checkpointer`, a thin layer over Orbax.

A checkpointer owns one folder of step-numbered checkpoints, each holding a ``state`` pytree
(arrays, restored into an abstract tree that carries the target shardings) and a ``progress``
JSON document (what the loop needs to carry on: tickets written, validation history, ...).
Orbax writes each step to a temporary folder and renames it when complete, so a run killed
mid-save leaves only finished checkpoints behind. Steps that already exist are never
overwritten: a replayed step after a crash writes identical content, so it is skipped.

Where each folder of checkpoints lies in a work directory is :mod:`pep_jax.workdir`'s business.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from pep_jax.errors import UserError


class CheckpointError(UserError, RuntimeError):
  """A checkpoint is missing, damaged or does not match the run restoring it."""


def abstract_like(tree: Any) -> Any:
  """Shape/dtype/sharding skeleton of ``tree``, the target of a restore."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Step-numbered ``(state, progress)`` checkpoints in one folder.

  Args:
    directory: the folder (created on first save).
    max_to_keep: how many of the newest steps to keep (None keeps all).
  """

  def __init__(self, directory: str, max_to_keep: int | None = 2):
    self.directory = os.path.abspath(directory)
    # Synchronous saves: runs may train in parallel threads, and Orbax's background saves of
    # two managers at once lose each other's temporary folders.
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, progress: dict | None = None) -> bool:
    """Saves ``step`` unless it exists already; returns whether it was written."""
    step = int(step)
    if step in self._manager.all_steps():
      return False
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              progress=ocp.args.JsonSave(progress or {}))
    return bool(self._manager.save(step, args=args, force=True))

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """Restores ``step`` into the structure (and shardings) of ``target``.

    Raises:
      CheckpointError: naming the folder, when the step is missing, damaged or of another shape.
    """
    path = os.path.join(self.directory, str(step))
    if step not in self._manager.all_steps():
      raise CheckpointError(f'no finished checkpoint at {path}')
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_like(target)),
                              progress=ocp.args.JsonRestore())
    try:
      restored = self._manager.restore(step, args=args)
    except Exception as e:  # Orbax raises many types; all mean the same to the user.
      raise CheckpointError(
          f'checkpoint {path} could not be restored ({type(e).__name__}: {e}). It was left as '
          'it is: delete that folder to fall back to an earlier checkpoint, or start a new '
          '--workdir.') from e
    return restored['state'], dict(restored['progress'] or {})

  def wait(self) -> None:
    """Blocks until asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
