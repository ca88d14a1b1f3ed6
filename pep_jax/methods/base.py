"""What every embedding-size method provides, the context it runs in, and accounting helpers.

A method is one module of :mod:`pep_jax.methods` that ends with a :class:`Method`: a record of
functions, typed the way optax types a ``GradientTransformation``, listed once in
:data:`pep_jax.methods.METHODS`. The experiment driver, the exporter, the server, the summary
and the analyses reach a method only through these fields and never test its name. Adding a
method is its module, one line in the registry and its config section (``docs/methods.md``
has the checklist).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from pep_jax import sharding
from pep_jax import workdir as wd
from pep_jax.data.base import CTRDataset
from pep_jax.errors import ConfigError, InputError
from pep_jax.layers import compact as compact_lib
from pep_jax.layers import quant
from pep_jax.train import evaluation, fit
from pep_jax.train.logging import MetricWriter
from pep_jax.train.setup import Stage

@dataclasses.dataclass
class Context:
  """One experiment: its config, data, work directory (a path) and metric writer."""

  config: Any
  data: CTRDataset
  workdir: str
  writer: MetricWriter | None
  _train_counts: np.ndarray | None = dataclasses.field(default=None, repr=False)

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
    method: the name of the method that trains it (a key of ``METHODS``).
    run: its run folder (:func:`pep_jax.workdir.run_name`).
    setting: what distinguishes it from the method's other candidates, readable (``'b0.1'``).
    report: JSON-serialisable facts its summary row carries (``budget``, ``search_seconds``,
      ...).
    info: JSON-serialisable facts its method needs to build it (not reported).
    series: the curve its summary row belongs to (``'pep_random'`` for a ticket retrained from
      a random table); the method's name by default.
  """

  method: str
  run: str
  setting: str
  report: dict = dataclasses.field(default_factory=dict)
  info: dict = dataclasses.field(default_factory=dict)
  series: str | None = None

  @property
  def label(self) -> str:
    """The name its summary row carries: its series."""
    return self.series or self.method

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, document: dict) -> Candidate:
    return cls(**document)


class Compact(NamedTuple):
  """A trained embedding as it is stored: a layout's name and its arrays (host numpy; a table
  of a quantised form is a :class:`pep_jax.layers.quant.Quantized`).

  ``bytes`` is what the artifact stores for the embedding; the summary's ``bytes`` column is
  this same number for the float form, so accounting and artifact cannot disagree.
  """

  layout: str
  arrays: dict[str, np.ndarray | quant.Quantized]

  @property
  def bytes(self) -> int:
    return compact_lib.nbytes(self.arrays)


Lookup = compact_lib.Lookup
Layout = compact_lib.Layout


class Method(NamedTuple):
  """An embedding-size method: everything the driver, export and serving ask of it.

  Attributes:
    name: its key in ``METHODS``, its config section and its run folders' prefix.
    labels: ``{series: label}`` for the summary and plots (a method with a single series
      maps its name).
    check: ``(ctx) -> None``; raises :class:`pep_jax.errors.ConfigError` naming a key it
      cannot use, before anything runs.
    search: ``(ctx) -> None``; runs, resumes or (when finished) skips the method's search. A
      method without a search does nothing.
    candidates: ``(ctx) -> list[Candidate]``; the slim models its finished search proposes,
      reading only; raises :class:`pep_jax.errors.MissingError` when the search has not run.
    build: ``(ctx, candidate) -> Stage``; the model around the candidate's embedding layer.
    initial: ``(ctx, candidate, stage) -> (state, constants)``; where training starts and the
      non-trained arrays its layer reads.
    size: ``(ctx, candidate, stage, state, constants) -> dict``; ``params`` stored (entries,
      projections, centroids and codes) and ``field_mean_size`` (mean width per field, or
      None).
    compact: ``(ctx, candidate, stage, state, constants, layout) -> Compact``; the trained
      embedding in its stored layout (``layout``: a requested one, or None for the default),
      float32. A quantised form is :func:`quantized` of it, for every method alike.
    layouts: ``{layout: Layout}``; how each stored layout is served: its lookup, the arrays
      derived at load, the float arrays read whole (:class:`pep_jax.layers.compact.Layout`).
    search_stage: ``(ctx) -> (stage, batch_map)`` whose train step the search runs
      (``batch_map(step, batch)`` adds per-step inputs, or None), for timing; None for a
      method without a search.
    rows_mode: whether it trains with ``optimizer.updates='rows'``.
    resumable_keys: its config keys that may change in a work directory without changing a
      result (more candidates, another ablation).
    floor: ``(config, field_dims) -> (share, why)``: the least share of the uniform table at
      the base width any model of the method can store on these fields, and why, in one
      clause (the summary gives it for a budget band where the method has no model); None for
      a method that reaches any budget it is given.
  """

  name: str
  labels: Mapping[str, str]
  check: Callable[[Context], None]
  search: Callable[[Context], None]
  candidates: Callable[[Context], list[Candidate]]
  build: Callable[[Context, Candidate], Stage]
  initial: Callable[[Context, Candidate, Stage], tuple[Any, dict]]
  size: Callable[..., dict]
  compact: Callable[..., Compact]
  layouts: Mapping[str, Layout]
  search_stage: Callable[[Context], tuple[Stage, Callable | None]] | None = None
  rows_mode: bool = False
  resumable_keys: tuple[str, ...] = ()
  floor: Callable[[Any, Sequence[int]], tuple[float, str]] | None = None


def no_search(ctx: Context) -> None:
  del ctx


def embedding_arrays(stage: Stage, state, constants: dict) -> tuple[dict, dict]:
  """The embedding layer's parameters and constants on the host (``{name: array}`` each)."""
  params = sharding.to_host(state.params['embedding'])
  host = sharding.to_host(constants)
  layer_constants = {k: v for collection in host.values()
                     for k, v in collection.get('embedding', {}).items()}
  del stage
  return dict(params), layer_constants


def sparse_compact(ctx: Context, stage: Stage, state, constants, layout: str | None) -> Compact:
  """A masked table's non-zero entries: ``bitmask`` up to 32 dimensions, else ``csr``.

  Raises:
    InputError: naming ``--layout`` for another layout, or bitmask above 32 dimensions.
  """
  params, consts = embedding_arrays(stage, state, constants)
  rows = ctx.data.num_features
  table = params['table'][:rows]
  effective = table * consts['mask'][:rows].astype(table.dtype)
  layout = layout or ('bitmask' if table.shape[1] <= 32 else 'csr')
  if layout not in SPARSE_LAYOUTS or (layout == 'bitmask' and table.shape[1] > 32):
    raise InputError(f'--layout={layout}: a pruned table of {table.shape[1]} dimensions is '
                     f'stored as {"bitmask or csr" if table.shape[1] <= 32 else "csr"}')
  encode = compact_lib.encode_bitmask if layout == 'bitmask' else compact_lib.encode_csr
  return Compact(layout, encode(effective))


SPARSE_LAYOUTS: dict[str, Layout] = {'bitmask': compact_lib.BITMASK, 'csr': compact_lib.CSR}


def quantized(method: Method, stored: Compact, scheme: quant.Scheme | None) -> Compact:
  """``stored`` with every table quantised by ``scheme`` (None: as it is); the arrays its
  layout reads whole (``Layout.float32``) and the index arrays stay as they are."""
  if scheme is None:
    return stored
  layout = method.layouts[stored.layout]
  return Compact(stored.layout, compact_lib.quantize_arrays(layout, stored.arrays, scheme))


def fit_candidate(ctx: Context, method: Method, cand: Candidate) -> dict:
  """Trains one candidate of ``method`` to its best validation state, or reads its result.

  The best state's test-set probabilities are kept beside the result
  (:func:`pep_jax.workdir.write_test_probs`) for the summary's paired comparisons; a run that
  finished without them has them computed from its best checkpoint.

  Returns:
    The run's ``result.json``: the method's accounting (``params``, ``bytes`` of its stored
    layout, ``field_mean_size``), ``nonzeros`` of the table where the layer has one, and the
    metrics of :func:`pep_jax.train.fit.train_to_best`.
  """
  with wd.run_lock(ctx.workdir, cand.run):
    wd.write_run_record(ctx.workdir, cand.run, {'method': method.name,
                                                'candidate': cand.to_json()})
    done = wd.result(ctx.workdir, cand.run)
    if done is not None:
      if not wd.has_test_probs(ctx.workdir, cand.run):  # finished before they were kept
        stage = method.build(ctx, cand)
        _, constants = method.initial(ctx, cand, stage)
        best = wd.restore_best(ctx.workdir, cand.run, stage.abstract_state())
        wd.write_test_probs(ctx.workdir, cand.run,
                            evaluation.predict(stage, best, constants, ctx.data.test))
      return done
    stage = method.build(ctx, cand)
    state, constants = method.initial(ctx, cand, stage)
    result = fit.train_to_best(ctx.config, ctx.data, stage, state, constants,
                               wd.run_dir(ctx.workdir, cand.run),
                               f'{cand.label} {cand.setting}', ctx.writer)
    best = result.pop('best_state')
    wd.write_test_probs(ctx.workdir, cand.run, result.pop('test_probs'))
    size = method.size(ctx, cand, stage, best, constants)
    stored = method.compact(ctx, cand, stage, best, constants, None)
    nonzeros = None
    if hasattr(stage.embedding, 'nonzeros'):
      nonzeros = int(stage.embedding_call(best, 'nonzeros', constants))
    return wd.finish(ctx.workdir, cand.run, {'params': size['params'], 'bytes': stored.bytes,
                                             'field_mean_size': size['field_mean_size'],
                                             'nonzeros': nonzeros, **result})


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
    ConfigError: naming ``key``, for a budget outside ``(0, total]`` or a fractional count.
  """
  out = []
  for b in budgets:
    if b > 1 and b != int(b):
      raise ConfigError(f'config key {key}: budget {b} is neither a fraction (at most 1) nor a '
                        'whole count of entries')
    count = int(round(b * total)) if b <= 1 else int(b)
    if count <= 0 or count > total:
      raise ConfigError(f'config key {key}: budget {b} means {count}, outside 1..{total} (the '
                        f'uniform table has {total})')
    out.append(count)
  return sorted(set(out), reverse=True)


def field_means(row_sizes: np.ndarray, field_dims) -> list[float]:
  """Mean of ``row_sizes [num_features]`` over each field's rows."""
  bounds = np.concatenate([[0], np.cumsum(field_dims)])
  return [float(np.mean(row_sizes[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
