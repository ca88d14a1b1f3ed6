"""Train state and the jitted train/eval steps shared by every stage.

A stage is a model (with its embedding layer), an optimizer and, for retraining, the constant
ticket mask. :func:`step_functions` writes its train and eval steps; :func:`compile_steps` jits
each twice: for one batch, and as a loop over a block of ``K`` batches per call (a slab), which
is what the training loop runs, so the host dispatches and reads metrics once per ``K`` steps.
Each program compiles once per stage (the batch and slab shapes never change).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@dataclasses.dataclass(frozen=True)
class StepShardings:
  """Where the steps' arguments and results live (see :mod:`pep_jax.sharding.specs`)."""

  state: PyTree  # a NamedSharding per TrainState leaf
  batch: Any  # the batch sharding, for every array of a batch
  constants: PyTree  # a NamedSharding per leaf of `constants`
  replicated: Any  # metrics and probabilities


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes; checkpointed as one pytree."""

  step: jax.Array  # int32 scalar
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jax.Array  # uint32 [2]: dropout key, folded with the step number


def weighted_bce(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean binary cross-entropy over the real rows of a padded batch (weights 0/1)."""
  losses = optax.sigmoid_binary_cross_entropy(logits, labels)  # [B]
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def aux_loss(updates: dict) -> jax.Array:
  """Sum of every auxiliary loss a layer sowed into the ``'losses'`` collection (0 if none).

  Layers that need a term besides the click loss (a quantiser's commitment loss) add it with
  ``self.sow('losses', name, value)``.
  """
  return sum((jnp.sum(x) for x in jax.tree.leaves(updates.get('losses', {}))), jnp.zeros(()))


def init_variables(model: nn.Module, num_fields: int, seed: int, batch_size: int = 2) -> dict:
  """``model.init`` on a dummy batch (``batch_size`` rows); deterministic in ``seed``."""
  ids = jnp.zeros((batch_size, num_fields), jnp.int32)
  return model.init({'params': jax.random.PRNGKey(seed)}, ids, train=False)


def new_state(params: PyTree, batch_stats: PyTree, opt_init: Callable[[PyTree], PyTree],
              seed: int) -> TrainState:
  """Step 0: ``params``, their optimizer state ``opt_init(params)`` and the dropout key."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=opt_init(params), rng=jax.random.PRNGKey(seed + 1))


def step_functions(model: nn.Module, tx: optax.GradientTransformation, *,
                   count_nonzeros: bool) -> tuple[Callable, Callable]:
  """The ``train_step`` and ``eval_step`` of a stage, not yet compiled.

  ``train_step(state, batch, constants) -> (state, metrics)``: one optimizer update of the
  click loss plus :func:`aux_loss`. ``metrics`` holds ``loss`` and, with ``count_nonzeros``,
  ``nonzeros``: the non-zero entries of the embedding table *after* the update.

  ``eval_step(state, batch, constants) -> probs [B]``.

  ``constants`` holds non-trained variable collections (``{'ticket': {...}}`` when retraining a
  ticket, ``{}`` otherwise); it is an argument, not a closure, so the mask is not baked into
  the compiled program. :func:`compile_steps` compiles both, one step or a block of steps per
  call.
  """

  def variables(params, batch_stats, constants):
    return {'params': params, 'batch_stats': batch_stats, **constants}

  def train_step(state: TrainState, batch: dict, constants: dict):
    dropout_key = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      logits, updates = model.apply(
          variables(params, state.batch_stats, constants), batch['ids'], batch['weights'],
          train=True, rngs={'dropout': dropout_key}, mutable=['batch_stats', 'losses'])
      return weighted_bce(logits, batch['labels'], batch['weights']) + aux_loss(updates), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, param_updates)
    state = state.replace(step=state.step + 1, params=params,
                          batch_stats=updates.get('batch_stats', state.batch_stats),
                          opt_state=opt_state)
    metrics = {'loss': loss}
    if count_nonzeros:
      metrics['nonzeros'] = model.apply(variables(params, state.batch_stats, constants),
                                        method=lambda m: m.embedding.nonzeros())
    return state, metrics

  def eval_step(state: TrainState, batch: dict, constants: dict) -> jax.Array:
    logits = model.apply(variables(state.params, state.batch_stats, constants), batch['ids'],
                         batch['weights'], train=False)
    return jax.nn.sigmoid(logits)

  return train_step, eval_step


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
  """A stage's steps, jitted once for one batch and once for a block of batches per call.

  ``train_step(state, batch, constants) -> (state, metrics)`` (the state is donated).

  ``train_block(state, slab, constants, start, stop, halt_at) -> (state, metrics, done)``: runs
  the train step on ``slab[start]``, ``slab[start + 1]``, ... up to ``slab[stop - 1]`` in one
  compiled loop (``slab`` holds ``K`` batches stacked on a leading axis; ``start`` and
  ``stop`` are traced, so every block of a run shares one program). It halts early after
  the first step whose loss is not finite or, with ``halt_key``, whose ``metrics[halt_key]``
  is at or under ``halt_at`` (``halt_at < 0``: never): the returned state is then exactly the
  state after that step, which is how a ticket is cut at its step without one dispatch per
  step. ``metrics`` are ``[K]`` arrays (valid in ``[start, done)``); ``done`` is the slot
  after the last step run.

  ``eval_step(state, batch, constants) -> probs [B]``;
  ``eval_block(state, slab, constants, stop) -> probs [K, B]`` (valid in ``[0, stop)``).
  """

  train_step: Callable
  eval_step: Callable
  train_block: Callable
  eval_block: Callable


def compile_steps(train_step: Callable, eval_step: Callable,
                  shardings: StepShardings | None = None, *,
                  halt_key: str | None = None, sync_every: int | None = None) -> CompiledSteps:
  """Jits ``train_step``/``eval_step`` (see :func:`step_functions`) and their block loops.

  ``sync_every``: blocks also halt after every step that is a multiple of it (the rows mode's
  :meth:`~pep_jax.train.setup.Stage.materialize` points).

  With ``shardings``, every program is compiled for the mesh: the state stays where it lives
  (table rows split, dense parameters replicated), batches are split (slabs along their batch
  axis), metrics and probabilities come back replicated so every host can read them.
  """

  def train_block(state, slab, constants, start, stop, halt_at):
    first = jax.tree.map(lambda x: x[0], slab)
    shapes = jax.eval_shape(train_step, state, first, constants)[1]
    size = jax.tree.leaves(slab)[0].shape[0]
    metrics = jax.tree.map(lambda m: jnp.zeros((size,) + m.shape, m.dtype), shapes)

    def cond(carry):
      i, _, _, halted = carry
      return (i < stop) & ~halted

    def body(carry):
      i, state, metrics, _ = carry
      batch = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), slab)
      state, m = train_step(state, batch, constants)
      metrics = jax.tree.map(lambda buf, v: buf.at[i].set(v), metrics, m)
      halted = ~jnp.isfinite(m['loss'])
      if sync_every is not None:  # the loop brings lazily updated rows up to date here
        halted |= state.step % sync_every == 0
      if halt_key is not None:
        halted |= (halt_at >= 0) & (m[halt_key] <= halt_at)
      return i + 1, state, metrics, halted

    done, state, metrics, _ = jax.lax.while_loop(
        cond, body, (jnp.asarray(start, jnp.int32), state, metrics, jnp.zeros((), bool)))
    return state, metrics, done

  def eval_block(state, slab, constants, stop):
    size, batch = jax.tree.leaves(slab)[0].shape[:2]
    out = jnp.zeros((size, batch), jnp.float32)

    def body(i, out):
      rows = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), slab)
      return out.at[i].set(eval_step(state, rows, constants).astype(jnp.float32))

    return jax.lax.fori_loop(0, stop, body, out)

  if shardings is None:
    return CompiledSteps(jax.jit(train_step, donate_argnums=0), jax.jit(eval_step),
                         jax.jit(train_block, donate_argnums=0), jax.jit(eval_block))
  sh = shardings
  slab = slab_sharding(sh.batch)
  scalar = sh.replicated
  return CompiledSteps(
      jax.jit(train_step, in_shardings=(sh.state, sh.batch, sh.constants),
              out_shardings=(sh.state, sh.replicated), donate_argnums=0),
      jax.jit(eval_step, in_shardings=(sh.state, sh.batch, sh.constants),
              out_shardings=sh.replicated),
      jax.jit(train_block, in_shardings=(sh.state, slab, sh.constants, scalar, scalar, scalar),
              out_shardings=(sh.state, sh.replicated, sh.replicated), donate_argnums=0),
      jax.jit(eval_block, in_shardings=(sh.state, slab, sh.constants, scalar),
              out_shardings=sh.replicated))


def slab_sharding(batch_sharding):
  """The sharding of a slab ``[K, B, ...]`` whose batches are split as ``batch_sharding``."""
  spec = jax.sharding.PartitionSpec(None, *batch_sharding.spec)
  return jax.sharding.NamedSharding(batch_sharding.mesh, spec)


def embedding_call(model: nn.Module, state: TrainState, constants: dict, method: str):
  """Calls a method of the model's embedding layer (e.g. ``'mask'``, ``'effective_table'``)."""
  return model.apply({'params': state.params, 'batch_stats': state.batch_stats, **constants},
                     method=lambda m: getattr(m.embedding, method)())
