"""The errors a user can fix from the message alone: the bottom of the import graph.

Every command line (:mod:`pep_jax.cli`) prints a :class:`UserError` as one line,
``error: <message>``, and exits with status 1. Any other exception is a bug, in pep_jax or in a
library it calls, and keeps its traceback.

Each kind also derives from the built-in exception a caller would expect (``ValueError`` for a
bad value, ``FileNotFoundError`` for a missing file), so ``except ValueError`` still catches a
bad config value.
"""

from __future__ import annotations


class UserError(Exception):
  """A failure the user can fix from its message, which names the key, file, line or flag."""


class ConfigError(UserError, ValueError):
  """A config key holds a value that cannot be used (the message names the key and value)."""


class InputError(UserError, ValueError):
  """An input (a data file, a flag, a results file) is malformed; the message names it."""


class MissingError(UserError, FileNotFoundError):
  """An input file or folder, or a finished step a command depends on, is missing."""


class ExistsError(UserError, FileExistsError):
  """An output would overwrite something that exists (an artifact is never overwritten)."""
