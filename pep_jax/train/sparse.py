"""Row-sparse updates (``optimizer.updates='rows'``): a step costs O(batch), not O(table).

The faithful optimizer (:mod:`pep_jax.train.optim`) updates every row of the table, its
thresholds and their Adam moments at every step, although a batch looks up a few thousand rows
of a million. Here a step gathers the rows its batch looks up (``U <= B * F`` of them), takes
the loss gradient with respect to those rows only, applies the optimizer to them and scatters
them back. Dense parameters (MLP, attention, biases, thresholds that are not per feature) are
updated as in the faithful mode, with the same optax transforms.

What a row misses while it is not looked up. Under the faithful optimizer, coupled L2 gives
every row the gradient ``wd * p`` even at steps whose batch does not contain it; Adam
normalises it, so untouched table entries shrink towards 0 and untouched thresholds climb
(``pep.md``: this is what prunes rare rows first). Dropping those steps (a plain lazy Adam)
would switch that off. Instead every row remembers the step it was last updated
(``last``), and when it is next looked up the steps it missed are applied first, in closed
form (:func:`catch_up`): the missed steps are split into ``SEGMENTS`` pieces of geometrically
growing length (1, 2, 6, 18, ... steps); within a piece the decay gradient ``wd * p`` is held
at its value at the start of the piece, the moments follow their exact recursions (sums of
geometric series) and the summed update uses the exact sum of the first moment and the
second moment at the piece's midpoint; an update towards zero is damped (exactly to second
order in ``update / p``), so a parameter is never carried past zero
(the step-by-step dynamics slow down near zero and only approach it). Against a
float64 step-by-step reference (``tests/test_sparse.py``) the displacement this gives is
within a few percent for gaps up to thousands of steps.

Every row is brought up to date (``materialize``) when a stage starts, every
``optimizer.rows_sync_steps`` steps (a block of steps halts there, and the training loop
materializes between two calls: inside the compiled loop a conditional over the whole state
would copy it at every step), when a ticket is cut, before an evaluation and when a stage ends, so what is evaluated, saved as
a ticket or exported is the table with every decay applied. PEP's non-zero count is kept
incrementally between those points (the count of the rows as stored, updated by the rows a
step changes) and recounted exactly at each of them; for thresholds that are not per feature
(global, dimension-wise) the count is recomputed every step, since ``s`` changes every row.
The count of the rows as stored is an upper bound of the true count (what rows not looked up
lately still have to apply only prunes), so the training loop takes the true count after every
compiled call and, once it reaches a budget, replays that call one step at a time to the step
it reached it (:class:`pep_jax.train.fit` ``_Blocks``): tickets are cut where the faithful
count would cut them.

The gradient's global norm (clipping) covers the looked-up rows and the dense parameters, as in
the faithful mode (a row that is not looked up has no loss gradient to clip).

Limits: the table must sit on one device of the mesh's ``'table'`` axis (data parallelism
over ``'data'`` is fine), and only the table layers of PEP, its tickets and the uniform
baseline are supported (``config.validate`` says so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pep_jax.layers.embedding import field_offsets
from pep_jax.sharding import specs
from pep_jax.train import steps as steps_lib
from pep_jax.train.optim import build_optimizer

SEGMENTS = 12  # pieces the missed steps are split into
RATIO = 3.0  # each piece is this many times longer than the previous one


@dataclasses.dataclass(frozen=True)
class Adam:
  """The faithful optimizer's constants (``config.optimizer``)."""

  lr: float
  b1: float
  b2: float
  eps: float
  wd: float  # coupled L2 (added to the gradient before Adam)
  clip: float  # global-norm clip; 0 disables


def adam_constants(opt_config) -> Adam:
  return Adam(float(opt_config.learning_rate), float(opt_config.b1), float(opt_config.b2),
              float(opt_config.eps), float(opt_config.weight_decay),
              float(opt_config.clip_norm))


def catch_up(p: jax.Array, m: jax.Array, v: jax.Array, count: jax.Array, gap: jax.Array,
             hp: Adam) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Applies ``gap`` optimizer steps in which the loss gave no gradient, in closed form.

  Each such step is ``g = wd p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
  p -= lr mhat / (sqrt(vhat) + eps)`` with Adam's bias corrections at the step's count.

  Args:
    p, m, v: a parameter's rows and their moments ``[U, ...]``.
    count: optimizer count of each row's last update ``[U, 1, ...]`` (broadcastable to p).
    gap: steps each row missed ``[U, 1, ...]`` (0: unchanged).

  Returns:
    ``(p, m, v)`` after the missed steps.
  """
  if hp.wd == 0:  # no gradient at all: Adam's update of a zero gradient only decays moments
    return p, m * jnp.power(hp.b1, gap), v * jnp.power(hp.b2, gap)
  lb1, lb2 = np.log(hp.b1), np.log(hp.b2)
  gap = gap.astype(jnp.float32)
  count = count.astype(jnp.float32)
  coefficients, start = [], 0.0  # per row [U, 1, ...]: what each piece does to a row
  for i in range(SEGMENTS):
    length = np.inf if i == SEGMENTS - 1 else (RATIO ** (i - 1) * (RATIO - 1) if i else 1.0)
    steps = jnp.clip(gap - start, 0.0, length)  # steps of this piece (1, 2, 6, 18, ...)
    mid = (steps + 1.0) / 2.0
    a1, a2 = jnp.exp(steps * lb1), jnp.exp(steps * lb2)  # b^steps
    h2 = jnp.exp(mid * lb2)
    at = count + start + mid  # the count at the piece's midpoint
    bias1, bias2 = 1.0 - jnp.exp(at * lb1), 1.0 - jnp.exp(at * lb2)
    geometric = hp.b1 * (1.0 - a1) / (1.0 - hp.b1)  # sum_{j=1..steps} b1^j
    coefficients.append((steps, a1, a2, h2, hp.lr / bias1, 1.0 / bias2, geometric))
    start += length
  for steps, a1, a2, h2, lr1, inv2, geometric in coefficients:
    g = hp.wd * p
    m_sum = geometric * m + (steps - geometric) * g  # sum of the first moment over the piece
    v_mid = h2 * v + (1.0 - h2) * g * g
    update = lr1 * m_sum / (jnp.sqrt(v_mid * inv2) + hp.eps)
    # An update towards zero moves p to p / (1 + r + r^2), r = update / p: p - update to second
    # order in r, but never past zero however long the piece (the step-by-step dynamics slow
    # down near zero and only approach it).
    shrink = p * p * p / jnp.maximum(p * p + p * update + update * update, 1e-30)
    p = jnp.where(p * update > 0, shrink, p - update)
    m = a1 * m + (1.0 - a1) * g
    v = a2 * v + (1.0 - a2) * g * g
  return p, m, v


def adam_rows(p: jax.Array, g: jax.Array, m: jax.Array, v: jax.Array, count: jax.Array,
              hp: Adam) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One faithful step on rows (``g`` already clipped), as optax computes it."""
  g = g + hp.wd * p
  m = (1 - hp.b1) * g + hp.b1 * m
  v = (1 - hp.b2) * g * g + hp.b2 * v
  m_hat = m / (1 - hp.b1 ** count.astype(jnp.float32))
  v_hat = v / (1 - hp.b2 ** count.astype(jnp.float32))
  return p - hp.lr * (m_hat / (jnp.sqrt(v_hat) + hp.eps)), m, v


@flax.struct.dataclass
class RowsState:
  """Optimizer state of the rows mode (the train state's ``opt_state``)."""

  dense: optax.OptState  # optax state of the dense leaves (row leaves are None there)
  m: tuple  # first moment of each row leaf, in leaf order
  v: tuple  # second moment of each row leaf
  last: jax.Array  # int32 [rows]: optimizer count of each row's last update
  nonzeros: jax.Array  # int32: PEP's count of the rows as stored (set by materialize)


@dataclasses.dataclass(frozen=True)
class RowLayout:
  """Which parameter leaves have one row per table row (and are updated sparsely)."""

  is_row: tuple[bool, ...]  # per leaf of the flattened params
  treedef: jax.tree_util.PyTreeDef

  @classmethod
  def of(cls, params, per_feature_threshold: bool) -> 'RowLayout':
    paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    flags = tuple(specs.is_row_sharded(path, per_feature_threshold=per_feature_threshold)
                  for path, _ in paths)
    return cls(flags, treedef)

  def split(self, tree) -> tuple[list, list]:
    """``(row leaves, dense leaves or None)`` of a params-shaped tree."""
    leaves = self.treedef.flatten_up_to(tree)
    rows = [x for x, r in zip(leaves, self.is_row) if r]
    dense = [None if r else x for x, r in zip(leaves, self.is_row)]
    return rows, dense

  def merge(self, rows: list, dense: list):
    it = iter(rows)
    return self.treedef.unflatten([next(it) if r else d for d, r in zip(dense, self.is_row)])


def rows_opt_init(opt_config, table_rows: int, *,
                  per_feature_threshold: bool) -> Callable[[object], RowsState]:
  """``params -> RowsState``: the rows mode's optimizer state at step 0.

  Zero moments for every row leaf (:class:`RowLayout`), ``config.optimizer``'s optax state for
  the dense leaves, every row last updated at count 0 and the non-zero count unset (``-1``, set
  by ``materialize``). The updates themselves are the rows step's (:func:`step_functions`).

  Args:
    table_rows: rows of the (padded) table, the length of every row leaf.
    per_feature_threshold: ``s`` has one row per table row (a row leaf).
  """
  dense_tx = build_optimizer(opt_config, clip=False)

  def init(params) -> RowsState:
    rows, dense = RowLayout.of(params, per_feature_threshold).split(params)
    zeros = tuple(jnp.zeros_like(x) for x in rows)
    return RowsState(dense=dense_tx.init(dense), m=zeros, v=zeros,
                     last=jnp.zeros((table_rows,), jnp.int32),
                     nonzeros=jnp.full((), -1, jnp.int32))

  return init


def unique_rows(ids: jax.Array, table_rows: int,
                size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """The distinct ids of a batch and where each id went: ``(uniq [size], inv [n])``.

  ``uniq[inv] == ids`` when the batch has at most ``size`` distinct ids (``n`` by default,
  always enough); the distinct ids come first, in order of first appearance, and the other
  slots hold ``table_rows`` (out of range: gathers clip it, scatters drop it). Found through a table-sized scratch array of first positions (a scatter-min), which
  costs XLA:CPU well under a millisecond for a Criteo batch where ``jnp.unique``'s sort takes
  about 15.
  """
  n = ids.shape[0]
  pos = jnp.arange(n, dtype=jnp.int32)
  first = jnp.full((table_rows,), n, jnp.int32).at[ids].min(pos)[ids]  # [n]
  is_first = first == pos
  slot = jnp.cumsum(is_first.astype(jnp.int32)) - 1
  size = n if size is None else size
  uniq = jnp.full((size,), table_rows, jnp.int32).at[jnp.where(is_first, slot, size)].set(
      ids, mode='drop')
  return uniq, slot[first]


def _global_norm_clip(grads: list, clip: float) -> list:
  """optax.clip_by_global_norm on a list of arrays."""
  if clip <= 0:
    return grads
  norm = optax.tree.norm(grads)
  return [jnp.where(norm < clip, g, (g / norm.astype(g.dtype)) * clip) for g in grads]


def step_functions(model: nn.Module, opt_config, field_dims, table_rows: int, *,
                   count_nonzeros: bool, per_feature_threshold: bool,
                   row_constants: Callable[[dict], dict], capacity: int | None = None):
  """``(train_step, eval_step, materialize)`` of the rows mode (see the module docstring).

  Args:
    table_rows: rows of the (padded) table, the length of every row leaf.
    count_nonzeros: also return PEP's non-zero count.
    per_feature_threshold: ``s`` has one row per table row (a row leaf, counted row by row).
    row_constants: ``constants -> constants`` with every table-shaped leaf replaced by
      ``f(leaf)``: called as ``row_constants(constants, f)``.
    capacity: distinct rows a batch may look up (the static size of every gathered array);
      ``B * F`` (always enough) by default. A smaller one costs proportionally less; the
      training loop picks, for every block of batches, a program whose capacity holds them
      (:meth:`~pep_jax.train.setup.Stage.steps_for`).
  """
  hp = adam_constants(opt_config)
  dense_tx = build_optimizer(opt_config, clip=False)
  offsets = jnp.asarray(field_offsets(field_dims))
  views = {}

  def view(size: int) -> tuple[nn.Module, jax.Array]:
    """The model over ``size`` gathered rows, and its field offsets.

    Same layers and attributes, but the vocabularies sum to ``size`` (so the per-feature
    parameters it expects are the gathered rows) and nothing is padded.
    """
    if size not in views:
      dims = (size - len(field_dims) + 1,) + (1,) * (len(field_dims) - 1)
      emb = model.embedding.clone(field_dims=dims, row_multiple=1)
      views[size] = (model.clone(field_dims=dims, embedding=emb),
                     field_offsets(dims))
    return views[size]

  def variables(params, state, constants):
    return {'params': params, 'batch_stats': state.batch_stats, **constants}

  def count_all(params, state, constants):
    return model.apply(variables(params, state, constants),
                       method=lambda m: m.embedding.nonzeros())

  def row_counts(params, state, constants, valid):
    """Non-zeros of gathered rows ``[U]`` (zero for the unique-padding slots)."""
    table = view(valid.shape[0])[0].apply(variables(params, state, constants),
                                          method=lambda m: m.embedding.effective_table())
    return jnp.where(valid, jnp.sum(table != 0, axis=-1, dtype=jnp.int32), 0)

  def materialize(state):
    """Every row brought up to the state's step; the count recomputed."""
    layout = RowLayout.of(state.params, per_feature_threshold)
    opt = state.opt_state
    rows, dense = layout.split(state.params)
    gap = (state.step - opt.last)[:, None]
    count = opt.last[:, None]
    caught = [catch_up(p, m, v, count.reshape(count.shape + (1,) * (p.ndim - 2)),
                       gap.reshape(gap.shape + (1,) * (p.ndim - 2)), hp)
              for p, m, v in zip(rows, opt.m, opt.v)]
    params = layout.merge([c[0] for c in caught], dense)
    opt = opt.replace(m=tuple(c[1] for c in caught), v=tuple(c[2] for c in caught),
                      last=jnp.full_like(opt.last, state.step))
    state = state.replace(params=params, opt_state=opt)
    if count_nonzeros:
      state = state.replace(opt_state=opt.replace(nonzeros=count_all(params, state, {})))
    return state

  def train_step(state, batch, constants):
    layout = RowLayout.of(state.params, per_feature_threshold)
    opt = state.opt_state
    t = state.step + 1
    ids = batch['ids']
    size = capacity or ids.size
    uniq, inv = unique_rows((ids + offsets[None, :]).ravel(), table_rows, size)
    valid = uniq < table_rows
    idx = jnp.minimum(uniq, table_rows - 1)
    sub_model, sub_offsets = view(size)
    local_ids = inv.reshape(ids.shape) - sub_offsets[None, :]  # the view adds them back

    rows, dense = layout.split(state.params)
    gathered = [jnp.take(x, idx, axis=0) for x in rows]
    m = [jnp.take(x, idx, axis=0) for x in opt.m]
    v = [jnp.take(x, idx, axis=0) for x in opt.v]
    last = jnp.take(opt.last, idx)  # [U]
    sub_constants = row_constants(constants, lambda x: jnp.take(x, idx, axis=0))

    nonzeros = opt.nonzeros  # valid: every state a stage starts from is materialized
    if count_nonzeros:
      if per_feature_threshold:
        before = row_counts(layout.merge(gathered, dense), state, sub_constants, valid)

    def expand(x, like):
      return x.reshape(x.shape + (1,) * (like.ndim - 1))

    caught = [catch_up(p, mm, vv, expand(last, p), expand(t - 1 - last, p), hp)
              for p, mm, vv in zip(gathered, m, v)]
    sub_params = layout.merge([c[0] for c in caught], dense)
    dropout_key = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      logits, updates = sub_model.apply(
          variables(params, state, sub_constants), local_ids, batch['weights'], train=True,
          rngs={'dropout': dropout_key}, mutable=['batch_stats', 'losses'])
      loss = steps_lib.weighted_bce(logits, batch['labels'], batch['weights'])
      return loss + steps_lib.aux_loss(updates), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(sub_params)
    row_grads, dense_grads = layout.split(grads)
    clipped = _global_norm_clip(row_grads + [g for g in dense_grads if g is not None], hp.clip)
    row_grads = clipped[:len(row_grads)]
    it = iter(clipped[len(row_grads):])
    dense_grads = [None if g is None else next(it) for g in dense_grads]

    dense_updates, dense_state = dense_tx.update(dense_grads, opt.dense, dense)
    dense = optax.apply_updates(dense, dense_updates)
    stepped = [adam_rows(p, g, mm, vv, t, hp)
               for (p, mm, vv), g in zip(caught, row_grads)]

    def scatter(full, new):
      return full.at[uniq].set(new.astype(full.dtype), mode='drop')

    params = layout.merge([scatter(x, s[0]) for x, s in zip(rows, stepped)], dense)
    opt = opt.replace(dense=dense_state,
                      m=tuple(scatter(x, s[1]) for x, s in zip(opt.m, stepped)),
                      v=tuple(scatter(x, s[2]) for x, s in zip(opt.v, stepped)),
                      last=opt.last.at[uniq].set(t, mode='drop'))
    state = state.replace(step=t, params=params, opt_state=opt,
                          batch_stats=updates.get('batch_stats', state.batch_stats))
    if count_nonzeros:
      if per_feature_threshold:
        after = row_counts(layout.merge([s[0] for s in stepped], dense), state, sub_constants,
                           valid)
        nonzeros = nonzeros + jnp.sum(after - before)
      else:
        nonzeros = count_all(params, state, constants)
      state = state.replace(opt_state=opt.replace(nonzeros=nonzeros))
    metrics = {'loss': loss}
    if count_nonzeros:
      metrics['nonzeros'] = state.opt_state.nonzeros
    return state, metrics

  _, eval_step = steps_lib.step_functions(model, optax.identity(), count_nonzeros=False)
  return train_step, eval_step, materialize
