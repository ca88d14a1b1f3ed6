"""DartsEmb: a differentiable (DARTS) search over candidate widths for every field.

During the search each field's embedding is a softmax-weighted mixture over the candidates,

    e_f = sum_c softmax(arch_f)_c * (table_c[x_f] @ proj_c[f]),

with one table ``[rows, w_c]`` per candidate width, one projection ``[w_c, D]`` per field and
candidate, and architecture logits ``arch [F, C]``. Each field then keeps the candidate of
largest weight, and the slim model (:class:`pep_jax.layers.embedding.FieldWidthEmbedding`) is
retrained from scratch with those widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pep_jax import workdir as wd
from pep_jax.data.pipeline import make_batch
from pep_jax.errors import ConfigError, MissingError
from pep_jax.layers import compact as compact_lib
from pep_jax.layers.embedding import (FieldWidthEmbedding, field_offsets, projection_init,
                                      xavier_table_init)
from pep_jax.methods.base import Candidate, Compact, Context, Method, embedding_arrays
from pep_jax.train import steps as steps_lib
from pep_jax.train.fit import train_steps
from pep_jax.train.optim import build_optimizer
from pep_jax.train.setup import Stage, make_stage


def check_candidates(candidates: Sequence[int], dim: int) -> tuple[int, ...]:
  """The candidate widths as a tuple; ValueError unless distinct and in ``[1, dim]``."""
  widths = tuple(int(w) for w in candidates)
  if not widths or len(set(widths)) != len(widths) or not all(1 <= w <= dim for w in widths):
    raise ConfigError(f'config key dartsemb.candidate_sets: candidates {widths} must be distinct '
                     f'widths in [1, embedding.dim={dim}]')
  return widths


class DartsEmbedding(nn.Module):
  """The search-stage embedding: a softmax mixture over candidate widths per field.

  Params: ``table_w{w} [rows, w]`` (Xavier-uniform), ``proj_w{w} [F, w, dim]`` (U(+-1/sqrt(w)))
  for every candidate ``w``, and ``arch [F, C]`` (zeros: the uniform mixture).

  Attributes:
    field_dims: vocabulary size of each field.
    dim: output width ``D``.
    candidates: candidate widths ``C``, distinct, each in ``[1, dim]``.
  """

  field_dims: Sequence[int]
  dim: int
  candidates: Sequence[int]
  # Layout of the model's other per-feature arrays (the first-order weights): padded to a
  # multiple of ``row_multiple`` rows and split over ``mesh``, as a uniform table's would be.
  row_multiple: int = 1
  mesh: jax.sharding.Mesh | None = None

  def setup(self):
    widths = check_candidates(self.candidates, self.dim)
    num_rows, num_fields = int(sum(self.field_dims)), len(self.field_dims)
    self.tables = [self.param(f'table_w{w}', xavier_table_init(num_rows), (num_rows, w))
                   for w in widths]
    self.projections = [self.param(f'proj_w{w}', projection_init, (num_fields, w, self.dim))
                        for w in widths]
    self.arch = self.param('arch', nn.initializers.zeros, (num_fields, len(widths)))

  def __call__(self, ids: jax.Array) -> jax.Array:
    """Per-field local ids ``[B, F]`` -> ``[B, F, dim]``.

    A field of no more features than the batch has rows has its whole mixture computed
    (:meth:`small_field_mixtures`) and its rows gathered, every such field by one gather; the
    other fields mix their looked-up rows.
    """
    batch, num_fields = ids.shape
    weights = jax.nn.softmax(self.arch, axis=-1)  # [F, C]
    whole = [f for f, n in enumerate(self.field_dims) if int(n) <= batch]
    looked = np.asarray([f for f, n in enumerate(self.field_dims) if int(n) > batch], int)
    fields = {}
    if whole:
      table = self.small_field_mixtures(whole, weights)  # [V, D]
      starts = jnp.asarray(field_offsets([int(self.field_dims[f]) for f in whole]))
      rows = jnp.take(table, ids[:, np.asarray(whole)] + starts[None, :], axis=0)  # [B, F', D]
      fields.update((f, rows[:, i]) for i, f in enumerate(whole))
    if len(looked):
      gids = ids[:, looked] + jnp.asarray(field_offsets(self.field_dims)[looked])[None, :]
      out = jnp.zeros(gids.shape + (self.dim,), jnp.float32)  # [B, F'', D]
      for c, (table, proj) in enumerate(zip(self.tables, self.projections)):
        rows = jnp.take(table, gids, axis=0)  # [B, F'', w_c]
        out += weights[None, looked, c, None] * jnp.einsum('bfw,fwd->bfd', rows, proj[looked])
      fields.update((f, out[:, i]) for i, f in enumerate(looked))
    return jnp.stack([fields[f] for f in range(num_fields)], axis=1)  # [B, F, D]

  def small_field_mixtures(self, fields: Sequence[int], weights: jax.Array) -> jax.Array:
    """``sum_c weights[f, c] * table_c[rows of f] @ proj_c[f]`` of each field ``f`` of
    ``fields``, stacked: ``[sum_f vocab_f, D]``.

    Each candidate's rows of all these fields are read by one gather of constant indices, not by
    a slice per field: a slice's gradient is a zero table the size of the whole table with the
    slice written in, one per field and candidate, where a gather's is one scatter per candidate.
    """
    offsets = field_offsets(self.field_dims)
    sizes = [int(self.field_dims[f]) for f in fields]
    rows = np.concatenate([np.arange(offsets[f], offsets[f] + n) for f, n in zip(fields, sizes)])
    starts = field_offsets(sizes)
    out = jnp.zeros((len(rows), self.dim), jnp.float32)
    for c, (table, proj) in enumerate(zip(self.tables, self.projections)):
      looked = jnp.take(table, jnp.asarray(rows), axis=0)  # [V, w_c]
      out += jnp.concatenate([
          weights[f, c] * (looked[s:s + n] @ proj[f]) for f, s, n in zip(fields, starts, sizes)])
    return out

  def chosen_widths(self) -> jax.Array:
    """Width of each field's largest architecture weight, ``[F]`` int32."""
    widths = jnp.asarray(check_candidates(self.candidates, self.dim), jnp.int32)
    return widths[jnp.argmax(self.arch, axis=-1)]


def accounting(field_dims: Sequence[int], widths: Sequence[int], dim: int) -> dict[str, int]:
  """Stored size of the retrained slim model, field ``f`` with width ``w_f``.

  ``params = sum_f w_f vocab_f + sum_{f: w_f > 0} w_f dim`` (tables and projections);
  ``bytes = 4 params``.
  """
  vocab = np.asarray(field_dims, np.int64)
  widths = np.asarray(widths, np.int64)
  params = int(np.sum(widths * vocab) + np.sum(widths[widths > 0]) * int(dim))
  return dict(params=params, bytes=4 * params)


# ------------------------------------------------------------------------- search and retraining
# The search trains the supernet with first-order DARTS: every step updates the weights on a
# training batch (architecture held), then the architecture on a validation batch with the
# updated weights. The chosen width of each field is the argmax of its architecture weights;
# the slim model (FieldWidthEmbedding) is then trained from scratch.

NAME = 'dartsemb'


def _is_arch(path) -> bool:
  return any(getattr(k, 'key', None) == 'arch' for k in path)


def _optimizers(config):
  """The search's optimizers: ``(opt_init, weights_tx, arch_tx)``.

  ``weights_tx`` is the faithful optimizer (``config.optimizer``) over every parameter but
  ``arch``; ``arch_tx`` is Adam (``dartsemb.arch_learning_rate``, beta1 0.5 as DARTS) over
  ``arch`` alone. ``opt_init`` initialises both states, as the pair ``TrainState.opt_state``
  holds; the search step applies each to its own gradient.
  """
  weights = optax.masked(build_optimizer(config.optimizer), lambda p: _mask(p, False))
  arch = optax.masked(optax.adam(config.dartsemb.arch_learning_rate, b1=0.5),
                      lambda p: _mask(p, True))

  def init(params):
    return (weights.init(params), arch.init(params))

  return init, weights, arch


def _mask(params, arch: bool):
  return jax.tree_util.tree_map_with_path(lambda path, _: _is_arch(path) == arch, params)


def _held(params, arch: bool):
  """``params`` with the architecture (``arch``) or every weight (not ``arch``) held constant:
  its gradient is zero and nothing of the backward pass that only it needs is computed."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jax.lax.stop_gradient(x) if _is_arch(p) == arch else x, params)


def _search_steps(weights_tx, arch_tx):
  """``(model, tx, count) -> (train_step, eval_step)`` of the bi-level search."""

  def make(model, tx, count_nonzeros):
    del tx, count_nonzeros

    def loss_fn(params, state, constants, ids, labels, weights, key):
      logits, updates = model.apply(
          {'params': params, 'batch_stats': state.batch_stats, **constants}, ids, weights,
          train=True, rngs={'dropout': key}, mutable=['batch_stats', 'losses'])
      return steps_lib.weighted_bce(logits, labels, weights) + steps_lib.aux_loss(updates), updates

    def weights_loss(params, *args):
      return loss_fn(_held(params, arch=True), *args)

    def arch_loss(params, *args):
      return loss_fn(_held(params, arch=False), *args)

    def train_step(state, batch, constants):
      key = jax.random.fold_in(state.rng, state.step)
      grad = jax.value_and_grad(weights_loss, has_aux=True)  # zero for arch
      (loss, updates), g = grad(state.params, state, constants, batch['ids'], batch['labels'],
                                batch['weights'], key)
      step, w_state = weights_tx.update(g, state.opt_state[0], state.params)
      params = optax.apply_updates(state.params, step)
      grad = jax.value_and_grad(arch_loss, has_aux=True)  # zero but for arch
      (valid_loss, _), g = grad(params, state, constants, batch['valid_ids'],
                                batch['valid_labels'], batch['valid_weights'],
                                jax.random.fold_in(key, 1))
      step, a_state = arch_tx.update(g, state.opt_state[1], params)
      params = optax.apply_updates(params, step)
      state = state.replace(step=state.step + 1, params=params,
                            batch_stats=updates.get('batch_stats', state.batch_stats),
                            opt_state=(w_state, a_state))
      return state, {'loss': loss, 'valid_loss': valid_loss}

    def eval_step(state, batch, constants):
      logits = model.apply({'params': state.params, 'batch_stats': state.batch_stats,
                            **constants}, batch['ids'], batch['weights'], train=False)
      return jax.nn.sigmoid(logits)

    return train_step, eval_step

  return make


def _set_name(cset) -> str:
  return '-'.join(str(int(w)) for w in cset)


def _search(cset) -> tuple[str, str]:
  """The folder of one candidate set's search (pep_jax.workdir.search_dir)."""
  return (NAME, f'c{_set_name(cset)}')


def check(ctx: Context) -> None:
  sets = ctx.config.dartsemb.candidate_sets
  if not sets:
    raise ConfigError('config key dartsemb.candidate_sets: give at least one candidate set')
  for cset in sets:
    check_candidates(cset, int(ctx.config.embedding.dim))
  if not ctx.config.dartsemb.search_epochs >= 1:
    raise ConfigError(f'config key dartsemb.search_epochs: must be at least 1, got '
                     f'{ctx.config.dartsemb.search_epochs!r}')


def search_stage(ctx: Context, cset):
  """The supernet's stage for one candidate set, and ``batch_map(step, batch)``, which adds the
  validation rows the architecture step of ``step`` uses (a fixed shuffled cycle through the
  validation split, so a resumed search sees the rows an uninterrupted one would have)."""
  config, data = ctx.config, ctx.data
  opt_init, weights_tx, arch_tx = _optimizers(config)
  cset = tuple(int(w) for w in cset)
  stage = make_stage(config, data, lambda rm, mesh: DartsEmbedding(
      tuple(int(x) for x in data.field_dims), int(config.embedding.dim), cset,
      row_multiple=rm, mesh=mesh),
      steps=_search_steps(weights_tx, arch_tx), opt_init=opt_init)
  bs = config.train.batch_size
  valid_order = np.random.default_rng([config.seed, 17]).permutation(len(data.valid))

  def add_valid(step, batch):
    rows = valid_order[(np.arange(bs) + (step - 1) * bs) % len(valid_order)]
    rows = make_batch(data.valid, rows, bs)
    return {**batch, **{f'valid_{k}': v for k, v in rows.items()}}

  return stage, add_valid


def run_search(ctx: Context, cset) -> dict:
  """Trains the supernet of one candidate set (resumable); returns the chosen widths."""
  done = wd.search_result(ctx.workdir, *_search(cset))
  if done is not None:
    return done
  config, data = ctx.config, ctx.data
  cset = tuple(int(w) for w in cset)
  stage, add_valid = search_stage(ctx, cset)
  state, progress = train_steps(
      config, data, stage, stage.initial_state(), {},
      wd.search_dir(ctx.workdir, *_search(cset), 'checkpoints'),
      f'dartsemb c{_set_name(cset)}', ctx.writer,
      max_epochs=int(config.dartsemb.search_epochs),
      checkpoint_every=config.train.checkpoint_every_steps, on_step=lambda *a: False,
      batch_map=add_valid, log_keys=('valid_loss',))
  arch = np.asarray(state.params['embedding']['arch'], np.float64)  # [F, C]
  probs = np.exp(arch - arch.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  result = {
      'candidates': list(cset), 'widths': [cset[i] for i in probs.argmax(axis=1)],
      'arch_probs': probs.tolist(), 'seconds': progress['seconds'],
      'seconds_per_epoch': progress['seconds'] / int(config.dartsemb.search_epochs),
  }
  return wd.finish_search(ctx.workdir, _search(cset), result)


def search(ctx: Context) -> None:
  for cset in ctx.config.dartsemb.candidate_sets:
    run_search(ctx, cset)


def candidates(ctx: Context) -> list[Candidate]:
  out = []
  for cset in ctx.config.dartsemb.candidate_sets:
    result = wd.search_result(ctx.workdir, *_search(cset))
    if result is None:
      raise MissingError(f'{wd.search_dir(ctx.workdir, *_search(cset))}/{wd.RESULT} is missing: '
                         'run the DartsEmb search first (config.stage=search or all)')
    setting = '{' + ','.join(str(int(w)) for w in cset) + '}'
    out.append(Candidate(NAME, wd.run_name(NAME, f'c{_set_name(cset)}'), setting,
                         report={'search_seconds': result['seconds'],
                                 'search_seconds_per_epoch': result['seconds_per_epoch']},
                         info={'widths': result['widths']}))
  return out


def build(ctx: Context, cand: Candidate) -> Stage:
  dims = tuple(int(x) for x in ctx.data.field_dims)
  return make_stage(ctx.config, ctx.data, lambda rm, mesh: FieldWidthEmbedding(
      dims, int(ctx.config.embedding.dim), tuple(cand.info['widths']), rm, mesh))


def initial(ctx: Context, cand: Candidate, stage: Stage):
  del ctx, cand
  return stage.initial_state(), {}


def size(ctx: Context, cand: Candidate, stage: Stage, state, constants) -> dict:
  del stage, state, constants
  widths = cand.info['widths']
  params = accounting(ctx.data.field_dims, widths, int(ctx.config.embedding.dim))['params']
  return {'params': params, 'field_mean_size': [float(w) for w in widths]}


def compact(ctx: Context, cand: Candidate, stage: Stage, state, constants,
            layout: str | None) -> Compact:
  """Each field's table at its chosen width and its projection."""
  del ctx, cand, layout
  params, _ = embedding_arrays(stage, state, constants)
  return Compact('fieldwidth', compact_lib.encode_fieldwidth(params))


def _search_stage(ctx: Context):
  """The supernet of the first candidate set (its bi-level step adds validation rows)."""
  return search_stage(ctx, ctx.config.dartsemb.candidate_sets[0])


METHOD = Method(
    name=NAME, labels={NAME: 'DartsEmb'}, check=check, search=search, candidates=candidates,
    build=build, initial=initial, size=size, compact=compact,
    layouts={'fieldwidth': compact_lib.FIELDWIDTH}, search_stage=_search_stage,
    floor=lambda config, field_dims: (
        (sum(field_dims) + len(field_dims) * int(config.embedding.dim))
        / (sum(field_dims) * int(config.embedding.dim)),
        'every field keeps a width of at least 1 and its projection, and the size is what the '
        'search picks, not a budget'))
