"""QR: quotient-remainder compositional embeddings (Shi et al., KDD 2020).

Every field shares one bucket count ``m``. Field ``f`` of vocabulary ``V_f`` has

* ``V_f <= m``: a plain table ``field_<f> [V_f, D]``, ``e(x) = field_f[x]``;
* ``V_f > m``: a quotient table ``quotient_<f> [ceil(V_f / m), D]`` and a remainder table
  ``remainder_<f> [m, D]``, composed entry by entry::

      e(x) = quotient_f[x // m] * remainder_f[x mod m]   (qr.combine='product', the default)
      e(x) = quotient_f[x // m] + remainder_f[x mod m]   (qr.combine='sum')

  Two ids of a field share their quotient or their remainder, never both (the partitions are
  complementary), so distinct features keep distinct embeddings.

Stored parameters: ``P(m) = D sum_f (V_f if V_f <= m else ceil(V_f / m) + m)``.

Budgets (``qr.budgets``: counts, or fractions at most 1 of the uniform table ``N D``, as
``prune.budgets``) are met through ``m`` (:func:`choose_buckets`): every ``m`` from 1 to the
largest vocabulary is tried (from there on every field is a plain table: the uniform model),
and a budget ``b`` takes the ``m`` whose ``P(m)`` is the largest not above ``b``, the largest
such ``m`` among equal ``P(m)``. ``P`` is not monotone in ``m`` (a split field costs
``ceil(V/m) + m``, least near ``sqrt(V)``, and more than its plain table for ``m = 1``), hence
the exhaustive search. A budget below ``min_m P(m)`` has no model (the run says so, and the
summary's budget bands say why); a list of budgets all below it is refused with a ConfigError
naming ``qr.budgets``.

There is no search: each budget is one candidate (``qr_b<budget>``), trained from fresh values
(``config.seed``). Initial values keep the uniform table's spread: with ``a = sqrt(6 / (N + D))``
its Xavier-uniform bound over all ``N`` features, plain tables are ``U(+-a)``; for
``'product'`` both tables are ``U(+-(3 a^2)^(1/4))`` and for ``'sum'`` ``U(+-a / sqrt(2))``, so
a composed entry has the plain entry's variance ``a^2 / 3``.

Stored as the tables themselves (layout ``qr_product`` or ``qr_sum``: the layout's name says how
they compose, ``m`` is the remainder tables' row count): ``bytes = 4 P(m)``, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pep_jax import workdir as wd
from pep_jax.errors import ConfigError
from pep_jax.layers import compact as compact_lib
from pep_jax.layers import quant
from pep_jax.methods.base import (Candidate, Compact, Context, Method, embedding_arrays,
                                  no_search, resolve_budgets)
from pep_jax.train.setup import Stage, make_stage

NAME = 'qr'
COMBINES = ('product', 'sum')


# ----------------------------------------------------------------------------- accounting


def field_entries(field_dims: Sequence[int], dim: int, buckets: int) -> np.ndarray:
  """Stored entries of each field ``[F]``: ``D V_f`` if ``V_f <= m``, else
  ``D (ceil(V_f / m) + m)``."""
  vocab = np.asarray(field_dims, np.int64)
  m = int(buckets)
  return int(dim) * np.where(vocab <= m, vocab, -(-vocab // m) + m)


def stored_params(field_dims: Sequence[int], dim: int, buckets: int) -> int:
  """``P(m) = D sum_f (V_f if V_f <= m else ceil(V_f / m) + m)``."""
  return int(field_entries(field_dims, dim, buckets).sum())


def params_by_buckets(field_dims: Sequence[int], dim: int) -> np.ndarray:
  """``P(m)`` for every ``m = 1 .. max_f V_f``: int64 ``[max_f V_f]``, entry ``m - 1``."""
  m = np.arange(1, int(max(field_dims)) + 1, dtype=np.int64)
  total = np.zeros_like(m)
  for vocab in field_dims:
    v = int(vocab)
    total += np.where(m >= v, v, -(-v // m) + m)
  return int(dim) * total


def choose_buckets(field_dims: Sequence[int], dim: int, budget: int) -> int:
  """The ``m`` of the largest ``P(m) <= budget`` (the largest ``m`` among equal ``P(m)``).

  Raises:
    ConfigError: naming ``qr.budgets``, when no ``m`` fits the budget.
  """
  params = params_by_buckets(field_dims, dim)
  fits = params <= budget
  if not fits.any():
    least = int(np.argmin(params))
    raise ConfigError(f'config key qr.budgets: budget {budget} is below the smallest QR '
                      f'embedding, {int(params[least])} entries (m={least + 1}); raise the '
                      'budget')
  best = params[fits].max()
  return int(np.flatnonzero(params == best)[-1]) + 1


# ----------------------------------------------------------------------------- the layer


def split(ids: jax.Array, buckets: int) -> tuple[jax.Array, jax.Array]:
  """Quotient and remainder indices of local ids: ``(x // m, x mod m)``, each like ``ids``."""
  return ids // buckets, ids % buckets


def compose(quotient: jax.Array, remainder: jax.Array, combine: str) -> jax.Array:
  """``quotient * remainder`` (``'product'``) or ``quotient + remainder`` (``'sum'``)."""
  if combine == 'product':
    return quotient * remainder
  if combine == 'sum':
    return quotient + remainder
  raise ValueError(f'unknown QR combine {combine!r}; expected one of {COMBINES}')


def qr_rows(tables: Mapping[str, jax.Array], ids: jax.Array, combine: str) -> jax.Array:
  """Embeddings of per-field ids from the QR tables, without any ``[V_f, D]`` table.

  Field ``f`` reads ``field_<f>[x]``, or ``compose(quotient_<f>[x // m], remainder_<f>[x mod
  m])`` with ``m`` the remainder table's rows.

  Args:
    tables: ``field_<f> [V_f, D]``, or ``quotient_<f> [ceil(V_f / m), D]`` and
      ``remainder_<f> [m, D]``, for every field.
    ids: int ``[B, F]`` per-field local indices.
    combine: ``'product'`` or ``'sum'``.

  Returns:
    ``[B, F, D]``.
  """
  fields = []
  for f in range(ids.shape[1]):
    x = ids[:, f]  # [B]
    if f'field_{f}' in tables:
      fields.append(quant.take(tables[f'field_{f}'], x))  # [B, D]
      continue
    remainder = tables[f'remainder_{f}']  # [m, D]
    q, r = split(x, remainder.shape[0])
    fields.append(compose(quant.take(tables[f'quotient_{f}'], q),
                          quant.take(remainder, r), combine))  # [B, D]
  return jnp.stack(fields, axis=1)  # [B, F, D]


def _uniform(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class QREmbedding(nn.Module):
  """Quotient-remainder tables per field, composed to ``dim`` entries per feature.

  Attributes:
    field_dims: vocabulary size of each field.
    dim: output width ``D``.
    buckets: ``m``, the remainder tables' rows (fields of at most ``m`` values are plain).
    combine: ``'product'`` or ``'sum'``.
  """

  field_dims: Sequence[int]
  dim: int
  buckets: int
  combine: str = 'product'
  # Layout of the model's other per-feature arrays (the first-order weights): padded to a
  # multiple of ``row_multiple`` rows and split over ``mesh``, as a uniform table's would be.
  row_multiple: int = 1
  mesh: jax.sharding.Mesh | None = None

  @property
  def num_rows(self) -> int:
    return int(sum(self.field_dims))

  def setup(self):
    if self.combine not in COMBINES:
      raise ValueError(f'QREmbedding: combine {self.combine!r}, expected one of {COMBINES}')
    if int(self.buckets) < 1:
      raise ValueError(f'QREmbedding: buckets must be at least 1, got {self.buckets}')
    m = int(self.buckets)
    plain = np.sqrt(6.0 / (self.num_rows + self.dim))  # the uniform table's Xavier bound
    part = (3.0 * plain ** 2) ** 0.25 if self.combine == 'product' else plain / np.sqrt(2.0)
    tables = {}
    for f, vocab in enumerate(int(v) for v in self.field_dims):
      if vocab <= m:
        tables[f'field_{f}'] = self.param(f'field_{f}', _uniform(plain), (vocab, self.dim))
      else:
        tables[f'quotient_{f}'] = self.param(f'quotient_{f}', _uniform(part),
                                             (-(-vocab // m), self.dim))
        tables[f'remainder_{f}'] = self.param(f'remainder_{f}', _uniform(part), (m, self.dim))
    self.tables = tables

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Per-field local ids ``[B, F]`` -> ``[B, F, dim]``."""
    return qr_rows(self.tables, ids, self.combine)


# ----------------------------------------------------------------------------- stored layout


def encode(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The ``qr_<combine>`` layout of :class:`QREmbedding` params: the tables as they are.

  Bytes: ``4 P(m)``.

  Raises:
    ValueError: for another parameter name.
  """
  arrays = {}
  for name in sorted(params):
    kind, _, field = name.partition('_')
    if kind not in ('field', 'quotient', 'remainder') or not field.isdigit():
      raise ValueError(f'qr layout: unexpected parameter {name!r}; expected field_<f>, '
                       'quotient_<f> and remainder_<f>')
    arrays[name] = np.ascontiguousarray(params[name], np.float32)
  return arrays


def _lookup(combine: str):
  def lookup(arrays: dict[str, jax.Array], ids: jax.Array, gids: jax.Array,
             dim: int) -> jax.Array:
    """``qr_rows(arrays, ids)``: ``ids [B, F]`` -> ``[B, F, D]``; ``gids`` unused."""
    del gids, dim
    return qr_rows(arrays, ids, combine)
  return lookup


LAYOUTS = {f'qr_{combine}': compact_lib.Layout(_lookup(combine)) for combine in COMBINES}


# ----------------------------------------------------------------------------- the method


def check(ctx: Context) -> None:
  c = ctx.config.qr
  if c.combine not in COMBINES:
    raise ConfigError(f'config key qr.combine: got {c.combine!r}, expected one of {COMBINES}')
  if not c.budgets:
    raise ConfigError('config key qr.budgets: give at least one budget')
  fitting, below = _buckets(ctx)
  if not fitting:
    raise below[0]
  for error in below:  # the others train; the summary says why this band has no QR model
    print(f'{error}: no QR model at this budget')


def _buckets(ctx: Context) -> tuple[list[tuple[int, int]], list[ConfigError]]:
  """``(budget, m)`` of each budget some ``m`` fits, and the refusal of each other budget."""
  dims, dim = ctx.data.field_dims, int(ctx.config.embedding.dim)
  fitting, below = [], []
  for b in resolve_budgets(ctx.config.qr.budgets, ctx.table_entries, 'qr.budgets'):
    try:
      fitting.append((b, choose_buckets(dims, dim, b)))
    except ConfigError as error:
      below.append(error)
  return fitting, below


def candidates(ctx: Context) -> list[Candidate]:
  """One candidate per budget that some ``m`` fits, its ``m`` from :func:`choose_buckets`
  (budgets below the smallest QR table have none: :func:`check` names them, and refuses a
  list where none fits)."""
  return [Candidate(NAME, wd.run_name(NAME, f'b{b}'), f'b{b} m={m}',
                    report={'budget': b, 'buckets': m, 'search_seconds': 0.0},
                    info={'budget': b, 'buckets': m})
          for b, m in _buckets(ctx)[0]]


def build(ctx: Context, cand: Candidate) -> Stage:
  dims = tuple(int(x) for x in ctx.data.field_dims)
  dim, m, combine = int(ctx.config.embedding.dim), cand.info['buckets'], ctx.config.qr.combine
  return make_stage(ctx.config, ctx.data, lambda row_multiple, mesh: QREmbedding(
      dims, dim, m, combine, row_multiple, mesh))


def initial(ctx: Context, cand: Candidate, stage: Stage):
  del ctx, cand
  return stage.initial_state(), {}


def size(ctx: Context, cand: Candidate, stage: Stage, state, constants) -> dict:
  """``P(m)``; a field's mean size is its stored entries per feature, ``P_f / V_f``."""
  del stage, state, constants
  entries = field_entries(ctx.data.field_dims, int(ctx.config.embedding.dim),
                          cand.info['buckets'])
  return {'params': int(entries.sum()),
          'field_mean_size': [float(e) / int(v) for e, v in zip(entries, ctx.data.field_dims)]}


def compact(ctx: Context, cand: Candidate, stage: Stage, state, constants,
            layout: str | None) -> Compact:
  """The tables as trained, in the layout of ``qr.combine``."""
  del cand, layout
  params, _ = embedding_arrays(stage, state, constants)
  return Compact(f'qr_{ctx.config.qr.combine}', encode(params))


METHOD = Method(
    name=NAME, labels={NAME: 'QR'}, check=check, search=no_search, candidates=candidates,
    build=build, initial=initial, size=size, compact=compact, layouts=LAYOUTS,
    floor=lambda config, field_dims: (
        int(params_by_buckets(field_dims, 1).min()) / sum(field_dims),
        'a field of V features stores at least ceil(V/m) + m rows for any bucket count m, '
        'about 2 sqrt(V) at best'))
