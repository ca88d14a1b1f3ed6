"""Builds what a stage trains: embedding, model, optimizer, jitted steps and initial state.

Everything is placed on the run's mesh (:mod:`pep_jax.sharding`): the initial state is
created by a program compiled with the state's shardings, so the table and its optimizer
state are born split by rows and never exist whole on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh

from pep_jax import sharding
from pep_jax.data.base import CTRDataset
from pep_jax.errors import ConfigError
from pep_jax.layers.embedding import make_embedding
from pep_jax.models.ctr import build_model
from pep_jax.ops.threshold import is_per_feature
from pep_jax.train import sparse
from pep_jax.train import steps as steps_lib
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.optim import build_optimizer


def write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (temporary file, then rename).

  Every process of a multi-host run writes the same content; each through its own temporary
  file, so processes sharing a file system never rename one another's.
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp{jax.process_index()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _init_fn(model: nn.Module, num_fields: int, mesh: Mesh, opt_init: Callable[[Any], Any],
             seed: int) -> Callable[[], steps_lib.TrainState]:
  """``() -> TrainState``: ``model``'s step 0 for ``seed``, to trace or to jit."""
  def init() -> steps_lib.TrainState:
    variables = steps_lib.init_variables(model, num_fields, seed, mesh.size)
    return steps_lib.new_state(variables['params'], variables.get('batch_stats', {}), opt_init,
                               seed)
  return init


@dataclasses.dataclass(frozen=True, eq=False)
class Stage:
  """One trainable configuration: a model around an embedding layer, and its steps.

  Built once by :func:`make_stage` and never changed; the only state it keeps is what it compiles
  on first use (the rows mode's steps per capacity, jitted embedding methods).
  """

  config: Any
  model: nn.Module
  embedding: nn.Module
  opt_init: Callable[[Any], Any]  # params -> the optimizer state the steps update
  steps: steps_lib.CompiledSteps
  num_fields: int
  mesh: Mesh
  shardings: steps_lib.StepShardings
  # Brings a lazily updated state up to date (rows mode, pep_jax/train/sparse.py); None when
  # every step already updates every row.
  materialize_fn: Callable[[Any], Any] | None = None
  # Rows mode: capacity -> the steps compiled for batches of at most that many distinct rows.
  capacity_steps: Callable[[int], steps_lib.CompiledSteps] | None = None
  # Compiled on first use: method name -> jitted embedding call; capacity -> steps.
  _embedding_fns: dict = dataclasses.field(default_factory=dict, repr=False)
  _by_capacity: dict = dataclasses.field(default_factory=dict, repr=False)

  def steps_for(self, distinct: int | None) -> steps_lib.CompiledSteps:
    """The steps for batches looking up at most ``distinct`` table rows each.

    The rows mode's cost grows with the static number of rows a step gathers, so blocks whose
    batches look up few distinct rows run a program sized for them: the smallest power of two
    (at least 1024) that holds them, each compiled on first use. Every other stage has one
    program.
    """
    if self.capacity_steps is None or distinct is None:
      return self.steps
    capacity = max(1024, 1 << max(0, int(distinct) - 1).bit_length())
    if capacity >= self.config.train.batch_size * self.num_fields:
      return self.steps
    if capacity not in self._by_capacity:
      self._by_capacity[capacity] = self.capacity_steps(capacity)
    return self._by_capacity[capacity]

  def materialize(self, state):
    """``state`` with every row up to date: what is evaluated, saved as a ticket or exported."""
    return state if self.materialize_fn is None else self.materialize_fn(state)

  @property
  def train_step(self):
    return self.steps.train_step

  @property
  def eval_step(self):
    return self.steps.eval_step

  @property
  def per_dispatch(self) -> int:
    """Train steps (or eval batches) per compiled call: ``train.steps_per_dispatch``."""
    return int(self.config.train.steps_per_dispatch)

  @property
  def table_entries(self) -> int:
    """Entries of the real (unpadded) table: the parameter count of a dense embedding."""
    return self.embedding.num_rows * self.embedding.dim

  @property
  def batch_sharding(self):
    return self.shardings.batch

  @property
  def row_sharding(self):
    """Sharding of arrays shaped like the table (e.g. a ticket mask)."""
    return sharding.specs.table_rows(self.mesh)

  def _init(self, seed: int) -> Callable[[], steps_lib.TrainState]:
    return _init_fn(self.model, self.num_fields, self.mesh, self.opt_init, seed)

  def abstract_state(self, seed: int | None = None) -> steps_lib.TrainState:
    """Shapes, dtypes and shardings of the initial state, computing nothing."""
    seed = self.config.seed if seed is None else seed
    shapes = jax.eval_shape(self._init(seed))
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes,
                        self.shardings.state)

  def initial_state(self, seed: int | None = None) -> steps_lib.TrainState:
    """The initial state, created in place on the mesh."""
    seed = self.config.seed if seed is None else seed
    return self.materialize(jax.jit(self._init(seed), out_shardings=self.shardings.state)())

  def with_params(self, state: steps_lib.TrainState, params) -> steps_lib.TrainState:
    """``state`` with new parameters and a fresh optimizer state for them, on the mesh."""
    return self.materialize(
        jax.jit(lambda st, p: st.replace(params=p, opt_state=self.opt_init(p)),
                out_shardings=self.shardings.state)(state, params))

  def initial_state_saved(self, directory: str) -> steps_lib.TrainState:
    """The initial state, saved to ``directory`` on first use and read back afterwards.

    Saving it before the first step is what lets every ticket rewind to ``V0``.
    """
    state = self.initial_state()
    ckpt = Checkpointer(directory, max_to_keep=None)
    if 0 in ckpt.steps():
      state, _ = ckpt.restore(0, state)
    else:
      ckpt.save(0, state, {'seed': self.config.seed})
    ckpt.close()
    return state

  def embedding_call(self, state, method: str, constants: dict | None = None):
    """A method of the embedding layer (``'mask'``, ``'nonzeros'``) on ``state``.

    Each method is jitted once per stage, not at every call (a prune run writes several
    tickets).
    """
    if method not in self._embedding_fns:
      self._embedding_fns[method] = jax.jit(
          functools.partial(steps_lib.embedding_call, self.model, method=method))
    return self._embedding_fns[method](state, constants or {})


def build_stage(config, data: CTRDataset, kind: str, *, dim: int | None = None,
                mesh: Mesh | None = None) -> Stage:
  """The stage of ``kind`` ('pep', 'masked' or 'plain') for ``config`` and ``data``.

  Args:
    dim: width; ``config.embedding.dim`` by default.
    mesh: devices to run on; by default every device, shaped by ``config.mesh``.
  """
  def layer(row_multiple: int, mesh: Mesh) -> nn.Module:
    return make_embedding(kind, config.embedding, data.field_dims, dim=dim,
                          row_multiple=row_multiple, mesh=mesh)

  constants = {'ticket': {'embedding': {'mask': ROWS}}} if kind == 'masked' else {}
  return make_stage(config, data, layer, mesh=mesh, count_nonzeros=kind == 'pep',
                    per_feature_threshold=kind == 'pep' and is_per_feature(
                        config.embedding.granularity),
                    constants=constants)


ROWS, REPLICATED = 'rows', 'replicated'  # where a constant lives: split like the table, or copied


def make_stage(config, data: CTRDataset, layer: Callable[[int, Mesh], nn.Module], *,
               mesh: Mesh | None = None, count_nonzeros: bool = False,
               per_feature_threshold: bool = False, constants: dict | None = None,
               steps: Callable | None = None,
               opt_init: Callable[[Any], Any] | None = None) -> Stage:
  """A stage around any embedding layer: the one constructor every method uses.

  Args:
    layer: ``(row_multiple, mesh) -> embedding layer`` (the layer pads its per-feature arrays to
      ``row_multiple`` rows so they split over the mesh).
    mesh: devices to run on; by default every device, shaped by ``config.mesh``.
    count_nonzeros: the train step also returns the layer's ``nonzeros()``.
    per_feature_threshold: the layer's ``threshold`` has one row per table row.
    constants: the tree of non-trained collections the steps take (``{'ticket': {'embedding':
      {'mask': ROWS}}}``), each leaf saying where it lives (:data:`ROWS` or :data:`REPLICATED`).
    steps: ``(model, tx, count_nonzeros) -> (train_step, eval_step)``, not compiled (this
      compiles them), ``tx`` being ``config.optimizer``'s optimizer; the ordinary
      :func:`pep_jax.train.steps.step_functions` by default.
    opt_init: ``params -> opt_state``, the optimizer state ``steps`` update (only with
      ``steps``); ``tx.init`` by default.
  """
  if opt_init is not None and steps is None:
    raise ValueError('make_stage: opt_init initialises the state of the given steps; '
                     'pass steps with it')
  mesh = sharding.build_mesh(config.mesh) if mesh is None else mesh
  sharding.check_divides(mesh, config.train.batch_size, 'train.batch_size')
  sharding.check_divides(mesh, config.train.eval_batch_size, 'train.eval_batch_size')
  embedding = layer(sharding.row_multiple(mesh, config.mesh), mesh)
  model = build_model(config.model, data.field_dims, embedding)
  tx = build_optimizer(config.optimizer)
  rows = config.optimizer.updates == 'rows' and steps is None
  if rows:
    if mesh.shape[sharding.TABLE] > 1:
      raise ConfigError(f"config key optimizer.updates: 'rows' needs the table on one device of "
                        f"the mesh's table axis (set mesh.table=1; this mesh has "
                        f'{mesh.shape[sharding.TABLE]})')
    opt_init = sparse.rows_opt_init(config.optimizer, embedding.table_rows,
                                    per_feature_threshold=per_feature_threshold)
  elif opt_init is None:
    opt_init = tx.init
  state_shapes = jax.eval_shape(_init_fn(model, data.num_fields, mesh, opt_init, config.seed))
  place = {ROWS: sharding.specs.table_rows(mesh), REPLICATED: sharding.specs.replicated(mesh)}
  shardings = steps_lib.StepShardings(
      state=sharding.specs.tree_shardings(mesh, state_shapes,
                                          per_feature_threshold=per_feature_threshold),
      batch=sharding.specs.batch_sharding(mesh),
      constants=jax.tree.map(place.__getitem__, constants or {}),
      replicated=sharding.specs.replicated(mesh))
  halt_key = 'nonzeros' if count_nonzeros else None
  materialize_fn = capacity_steps = None
  if rows:
    placement = constants or {}

    def rows_steps(capacity: int | None):
      train_step, eval_step, materialize = sparse.step_functions(
          model, config.optimizer, data.field_dims, embedding.table_rows,
          count_nonzeros=count_nonzeros, per_feature_threshold=per_feature_threshold,
          capacity=capacity, row_constants=lambda c, f: jax.tree.map(
              lambda where, x: f(x) if where == ROWS else x, placement, c))
      compiled = steps_lib.compile_steps(train_step, eval_step, shardings, halt_key=halt_key,
                                         sync_every=int(config.optimizer.rows_sync_steps))
      return compiled, materialize

    def capacity_steps(capacity: int) -> steps_lib.CompiledSteps:
      return rows_steps(capacity)[0]

    compiled, materialize = rows_steps(None)
    materialize_fn = jax.jit(materialize, in_shardings=(shardings.state,),
                             out_shardings=shardings.state)
  else:
    steps = steps or (lambda m, t, count: steps_lib.step_functions(m, t,
                                                                   count_nonzeros=count))
    compiled = steps_lib.compile_steps(*steps(model, tx, count_nonzeros), shardings,
                                       halt_key=halt_key)
  return Stage(config, model, embedding, opt_init, compiled, data.num_fields, mesh, shardings,
               materialize_fn=materialize_fn, capacity_steps=capacity_steps)
