"""What every command line of pep_jax shares: user errors reported in one line.

``main``, ``data.prepare``, ``export`` and ``predict`` start through :func:`run` instead of
``absl.app.run``. A mistake the user can fix from the message alone (a bad flag, an unknown
``--config.*`` key, a config file that does not load, and every :class:`pep_jax.errors.UserError`:
a bad config value, a missing or damaged input) then ends the process with exit status 1 and
one line::

    error: <what is wrong, naming the key, file or line>

Any other exception, a ``ValueError`` from numpy or JAX included, is a bug and keeps its
traceback. With absl's ``--verbosity`` given, user errors keep their traceback too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from absl import app, flags, logging

from pep_jax.errors import UserError


def one_line(text: str) -> str:
  """A message on one line: a wrapped traceback keeps its first and last lines."""
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  if not lines:
    return ''
  if any(line.startswith('Traceback') for line in lines):
    head = lines[0].rstrip(':')
    head = re.sub(r':?\s*Error whilst parsing config file$', '', head)
    return f'{head}: {lines[-1]}'
  return ' '.join(lines)


def fail(message: str) -> SystemExit:
  """The exception that ends a command line with ``error: <message>`` on one line."""
  return SystemExit(f'error: {one_line(message)}')


def _verbose() -> bool:
  return flags.FLAGS.is_parsed() and flags.FLAGS['verbosity'].present


def exit_on_user_error(fn: Callable, *args, **kwargs):
  """Runs ``fn``; a :class:`UserError` exits with ``error: <message>``.

  With absl's ``--verbosity`` given on the command line the exception propagates with its
  traceback instead.
  """
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    if _verbose():
      raise
    raise fail(f'{e} (add --verbosity=1 for the traceback)') from e


def _unknown_override(error: Exception, argv: list[str]) -> str | None:
  """The message for a ``--config.*`` override naming no key, or None if it is not one."""
  text = str(error).replace("\\'", "'")
  names = re.findall(r"'([A-Za-z_][\w]*)'", text)
  if not names:
    return None
  for arg in argv[1:]:
    path = arg.lstrip('-').split('=', 1)[0]
    if '.' in path and names[0] in path.split('.')[1:]:
      hint = re.search(r'Did you mean "(\w+)"', text)
      extra = f' (did you mean "{hint.group(1)}"?)' if hint else ''
      return f'{arg}: the config has no key {path.split(".", 1)[1]!r}{extra}'
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, every failure reported on one line.

  Config files load lazily, so they are loaded here, once the flags are parsed, to report
  a config file that does not exist or does not build before any work starts.
  """
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    raise fail(str(e)) from e
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # ml_collections overrides
    raise fail(_unknown_override(e, argv) or f'flags {argv[1:]}: {e}') from e
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    error = getattr(flag.value, '_error', None) if flag.present else None
    if type(flag.value).__name__ == '_ErrorConfig' and isinstance(error, Exception):
      reason = one_line(str(error)).rsplit(']', 1)[-1].strip(' :')  # after '[Errno 2]'
      raise fail(f'--{name}={flag.serialize().split("=", 1)[-1]}: cannot load the config file '
                 f'({reason})') from error
  return rest


def run(main: Callable[[list[str]], None]) -> None:
  """``absl.app.run(main)`` with flag, usage and user errors reported on one line."""

  def guarded(argv):
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO
    try:
      return main(argv)
    except app.UsageError as e:
      raise fail(str(e)) from e

  app.run(guarded, flags_parser=parse_flags)


def exit_if_argv(argv: list[str]) -> None:
  """Refuses positional arguments (every command line takes flags only)."""
  if len(argv) > 1:
    raise fail(f'unexpected arguments: {argv[1:]} (every option is a --flag)')

