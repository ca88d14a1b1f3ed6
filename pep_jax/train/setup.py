"""Builds what a stage trains: embedding, model, optimizer, jitted steps and initial state."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import jax
import optax

from pep_jax.data.base import CTRDataset
from pep_jax.layers.embedding import make_embedding
from pep_jax.models.ctr import build_model
from pep_jax.train import steps as steps_lib
from pep_jax.train.checkpoint import Checkpointer
from pep_jax.train.optim import build_optimizer


def write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (temporary file, then rename)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


@dataclasses.dataclass
class Stage:
  """One trainable configuration: a model around an embedding layer, and its steps."""

  config: Any
  model: nn.Module
  embedding: nn.Module
  tx: optax.GradientTransformation
  train_step: Any
  eval_step: Any
  num_fields: int

  @property
  def table_entries(self) -> int:
    """Entries of the real (unpadded) table: the parameter count of a dense embedding."""
    return self.embedding.num_rows * self.embedding.dim

  def initial_state(self, seed: int | None = None) -> steps_lib.TrainState:
    seed = self.config.seed if seed is None else seed
    variables = steps_lib.init_variables(self.model, self.num_fields, seed)
    return steps_lib.new_state(variables['params'], variables.get('batch_stats', {}), self.tx,
                               seed)

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
    return jax.jit(lambda st, c: steps_lib.embedding_call(self.model, st, c, method))(
        state, constants or {})


def build_stage(config, data: CTRDataset, kind: str, *, dim: int | None = None) -> Stage:
  """The stage of ``kind`` ('pep', 'masked' or 'plain') for ``config`` and ``data``."""
  embedding = make_embedding(kind, config.embedding, data.field_dims, dim=dim)
  model = build_model(config.model, data.field_dims, embedding)
  tx = build_optimizer(config.optimizer)
  train_step, eval_step = steps_lib.make_steps(model, tx, count_nonzeros=kind == 'pep')
  return Stage(config, model, embedding, tx, train_step, eval_step, data.num_fields)
