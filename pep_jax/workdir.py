"""The layout of a work directory: the one module that spells its folders and files.

Every other module (the methods, the experiment driver, export, the analyses and benchmarks)
asks this one where a run, a search or a ticket lives, whether it finished, and for a run's best
state; none spells a folder's name or parses one. A work directory holds one config::

    config.json               the flattened config it was made with (:func:`check_config`)
    summary.json, summary.md, frontier.png   the experiment's summary
    comparison.json           one row per (method, setting): means and intervals over seeds
    significance.json         the headline comparisons, bootstrapped on the test rows
    metrics.jsonl, tensorboard/              training metrics
    retrain/<run>/            one slim model (a method's candidate): run.json (its method and
                              candidate), latest/<step>/, best/<epoch>/, test_probs.npy (its
                              best state's test-set probabilities), result.json (written
                              last: the run is finished), .lock while it trains
                              (.lock.<process> in a multi-process run)
    init/0/                   PEP: the initial state V0
    prune/                    PEP: checkpoints/<step>/ of the pruning, result.json when finished
    tickets/b<budget>/        PEP: a ticket's mask and ticket.json; state/<step>/ the pruning
                              state of the ticket's step
    sseds/                    SSEDS: search/0/ (scores and masks), result.json
    dartsemb/c<set>/          DartsEmb: the search of one candidate set, result.json

A run folder is named ``<method>_<key>`` (:func:`run_name`): ``ue_d16``, ``pep_b53441``,
``pep_random_b53441``, ``sseds_b4000``, ``mde_d16_b8_a0.2``, ``mgqe_d16_s4_k256``,
``dartsemb_c1-2-8``.

An experiment with several seeds (``config.seeds``) holds one such work directory per seed, each
a complete experiment with its own ``config.json`` (``seed`` set, ``seeds`` empty), under the
folder of the experiment, whose ``config.json`` and summary files cover all of them::

    config.json, summary.json, summary.md, frontier.png, comparison.json, significance.json
    seeds/<seed>/             the experiment of one seed (:func:`seed_dir`), laid out as above
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from typing import Any

import jax
import numpy as np

from pep_jax import config as config_lib
from pep_jax.errors import ConfigError, InputError, MissingError
from pep_jax.train import fit
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.logging import METRICS
from pep_jax.train.setup import write_json

CONFIG = 'config.json'
RESULT = 'result.json'  # a step's done marker, written last
RUN_RECORD = 'run.json'  # which method and candidate a run folder trains
RUNS = 'retrain'
SUMMARY_JSON, SUMMARY_MD, FRONTIER = 'summary.json', 'summary.md', 'frontier.png'
COMPARISON, SIGNIFICANCE = 'comparison.json', 'significance.json'
SEEDS = 'seeds'
TEST_PROBS = 'test_probs.npy'  # a finished run's test-set probabilities, float32 [test rows]
TICKET = 'ticket.json'


# ------------------------------------------------------------------------------ documents


def read_json(path: str, kind: type | None = None) -> Any:
  """The JSON document at ``path``, or None when there is none.

  Args:
    kind: the type the document must have (``dict``, ``list``), or None for any.

  Raises:
    InputError: naming the file, when it exists but is not valid JSON or not of ``kind``.
  """
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      document = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InputError(f'{path} is not valid JSON ({e}); delete it to redo that step') from e
  if kind is not None and not isinstance(document, kind):
    raise InputError(f'{path} holds a JSON {type(document).__name__}, expected a '
                     f'{kind.__name__}; delete it to redo that step')
  return document


def read_result(path: str, keys: tuple[str, ...] = ()) -> dict | None:
  """A ``result.json``-like document (an object), or None; ``keys`` must be present.

  Raises:
    InputError: naming the file and the first missing key.
  """
  document = read_json(path, dict)
  if document is not None:
    for key in keys:
      if key not in document:
        raise InputError(f'{path} lacks the key {key!r}; delete it to redo that step')
  return document


# ------------------------------------------------------------------------------ the config


def config_path(root: str) -> str:
  return os.path.join(root, CONFIG)


def check_config(config, root: str, resumable_keys: tuple[str, ...]) -> None:
  """Records ``config`` in ``root/config.json``, or refuses one that differs from it.

  A work directory belongs to one config: keys other than ``resumable_keys`` must match, so
  results from different settings never mix. A key the recorded config lacks (one added to
  pep_jax after the work directory was made) counts as its default value. A work directory
  that holds runs or searches but no ``config.json`` is refused too: nothing says which config
  made them.

  Raises:
    ConfigError: naming the keys that differ, or the missing ``config.json``.
    InputError: naming ``config.json`` when it is not a JSON object.
  """
  path = config_path(root)
  current = config_lib.flatten(config.to_dict())
  saved = read_json(path, dict)
  if saved is None:
    made = sorted(n for n in os.listdir(root) if not n.startswith('.')) if os.path.isdir(
        root) else []
    # Another process of a multi-process run may be writing config.json at this moment.
    made = [n for n in made if n not in (METRICS, 'tensorboard') and not n.startswith(CONFIG)]
    if made:
      raise ConfigError(f'{path} is missing, but {root} holds {", ".join(made[:5])}: nothing '
                        'says which config made them. Use a new --workdir, or restore '
                        'config.json.')
  else:
    defaults = config_lib.flatten(config_lib.default_config().to_dict())
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    differ = sorted(k for k in set(saved) | set(current)
                    if k not in resumable_keys and saved.get(k) != current.get(k))
    if differ:
      details = ', '.join(f'{k}: {saved.get(k)!r} -> {current.get(k)!r}' for k in differ)
      raise ConfigError(f'{root} holds a run with another config ({details}). Use a new '
                        '--workdir, or the same config to resume.')
  if jax.process_index() == 0:
    write_json(path, current)


def recorded_config(root: str) -> dict | None:
  """The flattened config ``root/config.json`` records, or None before one was recorded."""
  return read_json(config_path(root), dict)


def read_config(root: str):
  """The config a work directory was made with (its ``config.json``), as a ConfigDict.

  Raises:
    MissingError: when ``root`` has no ``config.json``.
    InputError: naming the file and key, when it does not rebuild.
  """
  path = config_path(root)
  flat = read_json(path, dict)
  if flat is None:
    raise MissingError(f'{path} not found: {root} is not a pep_jax work directory')
  try:
    return config_lib.from_flat(flat)
  except (AttributeError, KeyError, TypeError) as e:
    raise InputError(f'{path}: not a config this pep_jax can rebuild ({e!r})') from e


# ------------------------------------------------------------------------------ runs


def run_name(method: str, key: str) -> str:
  """The folder of one of ``method``'s runs: ``<method>_<key>``."""
  return f'{method}_{key}'


def run_dir(root: str, run: str) -> str:
  return os.path.join(root, RUNS, run)


def runs(root: str) -> list[str]:
  """Every run folder of ``root``, finished or not, sorted."""
  folder = os.path.join(root, RUNS)
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def result(root: str, run: str) -> dict | None:
  """The result of a finished run (its ``result.json``), or None."""
  return read_result(os.path.join(run_dir(root, run), RESULT), ('best_epoch',))


def finished_runs(root: str) -> list[str]:
  """The runs of ``root`` that finished, sorted."""
  return [r for r in runs(root) if os.path.exists(os.path.join(run_dir(root, r), RESULT))]


def was_finished(root: str, run: str) -> bool:
  """Whether a run finished, including one whose result :func:`set_aside_results` moved."""
  path = os.path.join(run_dir(root, run), RESULT)
  return os.path.exists(path) or os.path.exists(path + '.previous')


def finish(root: str, run: str, document: dict) -> dict:
  """Writes a run's ``result.json`` (its done marker); returns the document."""
  write_json(os.path.join(run_dir(root, run), RESULT), document)
  return document


def set_aside_results(root: str) -> None:
  """Moves every finished run's result aside, so that the runs are scored again.

  A finished run then resumes at its last step with nothing left to train, restores its best
  checkpoint and writes a fresh ``result.json``.
  """
  for run in finished_runs(root):
    path = os.path.join(run_dir(root, run), RESULT)
    os.replace(path, path + '.previous')


def lock_path(root: str, run: str) -> str:
  """The run's lock file: ``.lock``, or ``.lock.<process index>`` in a multi-process run.

  The processes of a multi-process run train each run together, so each takes a lock of its
  own: on one shared lock the second would wait for the first, which waits for the second in
  the step's collectives.
  """
  suffix = f'.{jax.process_index()}' if jax.process_count() > 1 else ''
  return os.path.join(run_dir(root, run), '.lock' + suffix)


@contextlib.contextmanager
def run_lock(root: str, run: str):
  """Holds the run's lock file while it trains: runs may train in parallel processes (two
  methods may ask for the same run, e.g. SSEDS for the uniform model it scores), never one run
  twice at once."""
  os.makedirs(run_dir(root, run), exist_ok=True)
  with open(lock_path(root, run), 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def write_run_record(root: str, run: str, record: dict) -> None:
  """Records which method and candidate ``run`` trains (``run.json``), once."""
  path = os.path.join(run_dir(root, run), RUN_RECORD)
  if not os.path.exists(path) and jax.process_index() == 0:
    write_json(path, record)


def run_record(root: str, run: str) -> dict | None:
  """What :func:`write_run_record` recorded for ``run``, or None (runs written before it)."""
  return read_result(os.path.join(run_dir(root, run), RUN_RECORD), ('method', 'candidate'))


def restore_best(root: str, run: str, target) -> Any:
  """The best state of a finished run, restored into ``target`` (shapes and shardings).

  Raises:
    MissingError: naming the run, when it has not finished.
    CheckpointError: naming the folder, when the checkpoint does not restore.
  """
  done = result(root, run)
  if done is None:
    raise MissingError(f'{os.path.join(run_dir(root, run), RESULT)} not found: run {run} has '
                       'not finished')
  return fit.restore_best(run_dir(root, run), int(done['best_epoch']), target)


def _series(root: str, run: str) -> str | None:
  """The series a run belongs to, from its record; for a run trained before runs were recorded,
  its name up to its key (a letter and a digit: ``pep_random_b53441`` -> ``pep_random``)."""
  record = run_record(root, run)
  if record is not None:
    return record['candidate'].get('series') or record['method']
  match = re.fullmatch(r'(.+?)_[a-z]\d.*', run)
  return match.group(1) if match else None


def best_run(root: str, series: str) -> str:
  """The finished run of ``series`` (``'pep'``: rewound tickets) with the best validation AUC.

  Raises:
    MissingError: when there is none.
  """
  scores = {run: read_result(os.path.join(run_dir(root, run), RESULT), ('valid_auc',))[
      'valid_auc'] for run in finished_runs(root) if _series(root, run) == series}
  if not scores:
    seeds = seed_dirs(root)
    if seeds:
      raise MissingError(f'{root} holds an experiment with several seeds: name one seed\'s '
                         f'work directory, e.g. {next(iter(seeds.values()))}')
    raise MissingError(f'no finished {series} run in {os.path.join(root, RUNS)}: finish its '
                       'training, or name a run with --run')
  return max(scores, key=scores.get)


# ------------------------------------------------------------------------------ searches


def search_dir(root: str, *parts: str) -> str:
  """A folder of a method's search: ``sseds``, ``dartsemb/c1-2-8``, ``prune``, ``init``."""
  return os.path.join(root, *parts)


def search_result(root: str, *parts: str) -> dict | None:
  """A search's ``result.json`` (its done marker), or None."""
  return read_result(os.path.join(search_dir(root, *parts), RESULT))


def finish_search(root: str, parts: tuple[str, ...], document: dict) -> dict:
  """Writes a search's ``result.json``; returns the document."""
  write_json(os.path.join(search_dir(root, *parts), RESULT), document)
  return document


def initial_state_dir(root: str) -> str:
  """PEP: the initial state V0 every ticket rewinds to."""
  return search_dir(root, 'init')


def prune_checkpoints(root: str) -> str:
  return search_dir(root, 'prune', 'checkpoints')


PRUNE = ('prune',)  # parts of the prune stage's folder (search_result, finish_search)


def tickets_dir(root: str) -> str:
  """PEP: every ticket's folder."""
  return os.path.join(root, 'tickets')


def ticket_dir(root: str, budget: int) -> str:
  return os.path.join(tickets_dir(root), f'b{int(budget)}')


def ticket_state_dir(root: str, budget: int) -> str:
  """The pruning model's whole state at the ticket's step (scored as it is, unretrained)."""
  return os.path.join(ticket_dir(root, budget), 'state')


def write_ticket_meta(root: str, budget: int, meta: dict) -> None:
  """Writes ``ticket.json``: the ticket is finished (its mask is on disk before)."""
  write_json(os.path.join(ticket_dir(root, budget), TICKET), meta)


def find_tickets(root: str) -> list[dict]:
  """Metadata of every finished ticket of a work directory, largest budget first."""
  folder = tickets_dir(root)
  found = []
  for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    meta = read_result(os.path.join(folder, name, TICKET), ('budget', 'step', 'nonzeros'))
    if meta is not None:
      found.append(meta)
  return sorted(found, key=lambda t: -t['budget'])


def load_ticket_mask(root: str, ticket: dict, target) -> jax.Array:
  """The mask array of a ticket, restored into ``target`` (shape and sharding)."""
  ckpt = Checkpointer(ticket_dir(root, ticket['budget']), max_to_keep=None)
  state, _ = ckpt.restore(ticket['step'], {'mask': target})
  ckpt.close()
  return state['mask']


# ------------------------------------------------------------------------------ seeds


def seed_dir(root: str, seed: int) -> str:
  """The work directory of one seed of an experiment with several: ``seeds/<seed>``."""
  return os.path.join(root, SEEDS, str(int(seed)))


def seed_dirs(root: str) -> dict[int, str]:
  """``{seed: work directory}`` of every seed folder of ``root`` (made or finished), sorted."""
  folder = os.path.join(root, SEEDS)
  names = os.listdir(folder) if os.path.isdir(folder) else []
  return {int(n): seed_dir(root, int(n)) for n in sorted((n for n in names if n.isdigit()),
                                                         key=int)}


# ------------------------------------------------------------------------------ predictions


def predictions_path(root: str, run: str) -> str:
  return os.path.join(run_dir(root, run), TEST_PROBS)


def has_test_probs(root: str, run: str) -> bool:
  return os.path.exists(predictions_path(root, run))


def write_test_probs(root: str, run: str, probs: np.ndarray) -> None:
  """Keeps a run's test-set click probabilities (float32 ``[test rows]``, in split order),
  written atomically."""
  if jax.process_index() != 0:
    return
  path = predictions_path(root, run)
  tmp = f'{path}.tmp.npy'
  np.save(tmp, np.asarray(probs, np.float32))
  os.replace(tmp, path)


def read_test_probs(root: str, run: str) -> np.ndarray:
  """What :func:`write_test_probs` kept for ``run``.

  Raises:
    MissingError: naming the file, when the run has none.
  """
  path = predictions_path(root, run)
  if not os.path.exists(path):
    raise MissingError(f'{path} not found: run {run} has no test predictions; run the '
                       'experiment again to compute them')
  return np.load(path)


# ------------------------------------------------------------------------------ summary


def summary_paths(root: str) -> dict[str, str]:
  """Where the experiment's summary goes: ``json``, ``md``, ``plot``, ``comparison`` and
  ``significance``."""
  return {'json': os.path.join(root, SUMMARY_JSON), 'md': os.path.join(root, SUMMARY_MD),
          'plot': os.path.join(root, FRONTIER), 'comparison': os.path.join(root, COMPARISON),
          'significance': os.path.join(root, SIGNIFICANCE)}


def metrics_path(root: str) -> str:
  """The training metrics every stage appends to (:class:`pep_jax.train.logging.MetricWriter`)."""
  return os.path.join(root, METRICS)
