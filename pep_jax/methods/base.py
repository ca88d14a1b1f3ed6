"""What every embedding-size method shares: the protocol, its run context and accounting helpers.

A method is one module of :mod:`pep_jax.methods` with five functions:

    candidates(ctx, search: bool) -> list[Candidate]
        Runs (or resumes, or with ``search=False`` only reads) the method's search and returns
        the slim models it proposes.
    build(ctx, candidate) -> Stage
        The stage that trains the candidate: its embedding layer inside the configured model.
    initial(ctx, candidate, stage) -> (state, constants)
        Where training the candidate starts, and the non-trained arrays its layer reads.
    check(ctx) -> None
        Raises ``ValueError`` naming the config key of a setting it cannot use, before anything
        runs.
    account(ctx, candidate, stage, state, constants) -> dict
        The embedding part's stored size: ``params`` (entries, projections, centroids and codes
        included) and ``bytes`` (index overhead included), and ``field_mean_size`` (mean width per
        field) or None where the method has no per-field widths.

:func:`pep_jax.train.experiment.run` loops over ``config.methods`` and never tests a method's
name; adding a method is one module plus one line in :data:`pep_jax.methods.METHODS` and its
config section.
"""

from __future__ import annotations

import dataclasses
import json
import contextlib
import fcntl
import os
from typing import Any

import numpy as np

from pep_jax.data.base import CTRDataset
from pep_jax.train import fit
from pep_jax.train.logging import MetricWriter

FLOAT_BYTES = 4  # float32 entries


@dataclasses.dataclass
class Context:
  """One experiment: its config, data, work directory and metric writer."""

  config: Any
  data: CTRDataset
  workdir: str
  writer: MetricWriter
  _train_counts: np.ndarray | None = dataclasses.field(default=None, repr=False)

  @contextlib.contextmanager
  def run_lock(self, run: str):
    """Holds the run's lock file while it trains: runs may train in parallel processes (two
    methods may ask for the same run, e.g. SSEDS for the uniform model it scores), never one
    run twice at once."""
    os.makedirs(self.run_dir(run), exist_ok=True)
    with open(os.path.join(self.run_dir(run), '.lock'), 'w') as f:
      fcntl.flock(f, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(f, fcntl.LOCK_UN)

  def run_dir(self, run: str) -> str:
    return os.path.join(self.workdir, 'retrain', run)

  def finished(self, run: str) -> dict | None:
    """The result of a finished run (``result.json``), or None."""
    return read_json(os.path.join(self.run_dir(run), 'result.json'))

  def was_finished(self, run: str) -> bool:
    """Whether a run finished, including one whose result the evaluate stage set aside."""
    path = os.path.join(self.run_dir(run), 'result.json')
    return os.path.exists(path) or os.path.exists(path + '.previous')

  def train_counts(self) -> np.ndarray:
    """Occurrences of every feature in the training split (:func:`feature_counts`), counted
    once per experiment: a method's build, start and accounting all read them."""
    if self._train_counts is None:
      self._train_counts = feature_counts(self.data.train.ids, self.data.field_dims)
    return self._train_counts

  @property
  def table_entries(self) -> int:
    """Entries of the uniform table at the base width: the reference for sparsity."""
    return self.data.num_features * int(self.config.embedding.dim)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One slim model a method's search proposes.

  Attributes:
    method: the name its summary rows carry (``'pep'``, ``'pep_random'``, ``'sseds'``, ...).
    run: its folder under ``workdir/retrain/``.
    setting: what distinguishes it from the method's other candidates, readable (``'b0.1'``).
    report: JSON-serialisable facts its summary row carries (``budget``, ``search_seconds``,
      ``field_mean_size``, ...).
    info: what its module needs to build it (not reported).
  """

  method: str
  run: str
  setting: str
  report: dict = dataclasses.field(default_factory=dict)
  info: dict = dataclasses.field(default_factory=dict)


def fit_candidate(ctx: Context, method, cand: Candidate) -> dict:
  """Trains one candidate of ``method`` to its best validation state, or reads its result.

  Returns:
    The run's ``result.json``: the method's accounting (``params``, ``bytes``,
    ``field_mean_size``), ``nonzeros`` of the table where the layer has one, and the metrics of
    :func:`pep_jax.train.fit.train_to_best`.
  """
  with ctx.run_lock(cand.run):
    return _fit(ctx, method, cand)


def _fit(ctx: Context, method, cand: Candidate) -> dict:
  done = ctx.finished(cand.run)
  if done is not None:
    return done
  stage = method.build(ctx, cand)
  state, constants = method.initial(ctx, cand, stage)
  result = fit.train_to_best(ctx.config, ctx.data, stage, state, constants,
                             ctx.run_dir(cand.run), f'{cand.method} {cand.setting}', ctx.writer)
  best = result['best_state']
  size = method.account(ctx, cand, stage, best, constants)
  nonzeros = None
  if hasattr(stage.embedding, 'nonzeros'):
    nonzeros = int(stage.embedding_call(best, 'nonzeros', constants))
  return fit.finish(ctx.run_dir(cand.run), {**size, 'nonzeros': nonzeros, **result})


def read_json(path: str) -> Any:
  """The JSON document at ``path``, or None when there is none.

  Raises:
    ValueError: naming the file, when it exists but is not valid JSON.
  """
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e}); delete it to redo that step') from e


def feature_counts(ids: np.ndarray, field_dims) -> np.ndarray:
  """How often each feature occurs: ``ids [R, F]`` local indices -> ``[sum(field_dims)]``.

  Counted in chunks of rows, so a memory-mapped split is never read whole.
  """
  offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]]).astype(np.int64)
  total = int(np.sum(field_dims))
  counts = np.zeros(total, np.int64)
  chunk = 1 << 20
  for start in range(0, len(ids), chunk):
    rows = np.asarray(ids[start:start + chunk], np.int64) + offsets[None, :]
    counts += np.bincount(rows.ravel(), minlength=total)
  return counts


def resolve_budgets(budgets, total: int, key: str) -> list[int]:
  """Budgets as absolute counts, largest first: ``<= 1`` a fraction of ``total``, else a count.

  Raises:
    ValueError: naming ``key``, for a budget outside ``(0, total]``.
  """
  out = []
  for b in budgets:
    count = int(round(b * total)) if b <= 1 else int(b)
    if count <= 0 or count > total:
      raise ValueError(f'config key {key}: budget {b} means {count}, outside 1..{total} (the '
                       f'uniform table has {total})')
    out.append(count)
  return sorted(set(out), reverse=True)


def dense_bytes(params: int) -> int:
  return FLOAT_BYTES * int(params)


def sparse_table_bytes(nonzeros: int, num_rows: int, dim: int) -> int:
  """Bytes of a pruned table in the layout its export uses (:mod:`pep_jax.serving`).

  Up to 32 dimensions, a bit mask of each feature's kept dimensions (1, 2 or 4 bytes), a 4-byte
  offset of its first value and the float values: ``N * (b + 4) + 4 * nnz``. Wider tables as CSR
  over features: 4-byte row pointers, 1- or 2-byte column indices and the values.
  """
  if dim <= 32:
    mask_bytes = 1 if dim <= 8 else 2 if dim <= 16 else 4
    return int(num_rows) * (mask_bytes + 4) + FLOAT_BYTES * int(nonzeros)
  column_bytes = 1 if dim <= 256 else 2
  return (FLOAT_BYTES + column_bytes) * int(nonzeros) + 4 * (int(num_rows) + 1)


def field_means(row_sizes: np.ndarray, field_dims) -> list[float]:
  """Mean of ``row_sizes [num_features]`` over each field's rows."""
  bounds = np.concatenate([[0], np.cumsum(field_dims)])
  return [float(np.mean(row_sizes[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
