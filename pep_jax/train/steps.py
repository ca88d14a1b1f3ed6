"""Train state and the jitted train/eval steps shared by every stage.

A stage is a model (with its embedding layer), an optimizer and, for retraining, the constant
ticket mask. :func:`make_steps` jits one train step and one eval step for it; each compiles
once per stage (the batch shape never changes).
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


def new_state(params: PyTree, batch_stats: PyTree, tx: optax.GradientTransformation,
              seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), rng=jax.random.PRNGKey(seed + 1))


def make_steps(model: nn.Module, tx: optax.GradientTransformation, *, count_nonzeros: bool,
               shardings: StepShardings | None = None) -> tuple[Callable, Callable]:
  """The jitted ``train_step`` and ``eval_step`` of a stage.

  ``train_step(state, batch, constants) -> (state, metrics)``: one optimizer update of the
  click loss plus :func:`aux_loss`; the state is donated. ``metrics`` holds ``loss`` and, with ``count_nonzeros``, ``nonzeros``: the
  non-zero entries of the embedding table *after* the update, counted on the device.

  ``eval_step(state, batch, constants) -> probs [B]``.

  ``constants`` holds non-trained variable collections (``{'ticket': {...}}`` when retraining a
  ticket, ``{}`` otherwise); it is an argument, not a closure, so the mask is not baked into
  the compiled program.

  With ``shardings``, both steps are compiled for the mesh: the state stays where it lives
  (table rows split, dense parameters replicated), batches are split, metrics and
  probabilities come back replicated so every host can read them.
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

  if shardings is None:
    return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)
  sh = shardings
  inputs = (sh.state, sh.batch, sh.constants)
  return (jax.jit(train_step, in_shardings=inputs, out_shardings=(sh.state, sh.replicated),
                  donate_argnums=0),
          jax.jit(eval_step, in_shardings=inputs, out_shardings=sh.replicated))


def embedding_call(model: nn.Module, state: TrainState, constants: dict, method: str):
  """Calls a method of the model's embedding layer (e.g. ``'mask'``, ``'effective_table'``)."""
  return model.apply({'params': state.params, 'batch_stats': state.batch_stats, **constants},
                     method=lambda m: getattr(m.embedding, method)())
