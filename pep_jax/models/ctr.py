"""CTR models that take their embedding layer as a plug-in.

Every model maps per-field indices ``[B, F]`` to logits ``[B]`` and owns its embedding layer as
the submodule ``embedding`` (any of :mod:`pep_jax.layers.embedding`, or a user's own layer
with the same call signature). Architectures follow the public PEP implementation:

* LR: ``b + sum_f w[x_f]``.
* FM: LR + ``0.5 * sum_k[(sum_f e_fk)^2 - sum_f e_fk^2]``.
* DeepFM: FM + an MLP on the flattened embeddings.
* AutoInt: ``Linear(D -> 64)``, self-attention layers (2 heads, 64 wide) stacked without
  residuals, a residual ``Linear(D -> 64)`` of the embeddings added after the stack, ReLU,
  flatten, ``Linear -> 1``; AutoInt+ adds the MLP branch, AutoInt+LR the LR part.

Initialisation mirrors PyTorch's defaults as the public code uses them: first-order weights
N(0, 1), linear layers uniform(+-1/sqrt(fan_in)) for weights and biases.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pep_jax.errors import ConfigError
from pep_jax.layers.embedding import field_offsets, padded_rows
from pep_jax.sharding.lookup import take_rows


def _torch_uniform(key, shape, dtype=jnp.float32, fan_in=None):
  bound = 1.0 / np.sqrt(fan_in if fan_in is not None else shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class TorchDense(nn.Module):
  """``nn.Dense`` with PyTorch's default init: weight and bias ~ U(+-1/sqrt(fan_in))."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param('kernel', _torch_uniform, (fan_in, self.features))
    bias = self.param('bias', lambda k, s: _torch_uniform(k, s, fan_in=fan_in), (self.features,))
    return x @ kernel + bias


class FirstOrder(nn.Module):
  """The LR part: ``b + sum_f w[offset_f + x_f]`` -> ``[B]``.

  ``w`` has one row per feature, like the embedding table, and is padded and split over
  devices the same way (it takes ``row_multiple`` and ``mesh`` from the model's embedding).
  """

  field_dims: Sequence[int]
  init_std: float = 1.0  # N(0, 1): PyTorch's nn.Embedding default, as in the public code
  row_multiple: int = 1
  mesh: jax.sharding.Mesh | None = None

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    num_rows = int(sum(self.field_dims))

    def init(key, shape):
      weight = self.init_std * jax.random.normal(key, (num_rows, 1))
      return jnp.pad(weight, ((0, shape[0] - num_rows), (0, 0)))  # padding rows are zero

    weight = self.param('weight', init, (padded_rows(num_rows, self.row_multiple), 1))
    bias = self.param('bias', nn.initializers.zeros, (1,))
    gids = ids + jnp.asarray(field_offsets(self.field_dims))[None, :]
    return jnp.sum(take_rows(weight, gids, self.mesh)[..., 0], axis=1) + bias[0]


def first_order(model: nn.Module) -> FirstOrder:
  """The LR part of ``model``, laid out like its embedding table."""
  emb = model.embedding
  return FirstOrder(model.field_dims, model.linear_init_std, getattr(emb, 'row_multiple', 1),
                    getattr(emb, 'mesh', None), name='linear')


def fm_interaction(emb: jax.Array) -> jax.Array:
  """Second-order FM term ``0.5 * sum_k[(sum_f e_fk)^2 - sum_f e_fk^2]``.

  Args:
    emb: ``[B, F, D]`` field embeddings.

  Returns:
    ``[B]``: the sum over field pairs ``f < g`` of ``<e_f, e_g>``.
  """
  square_of_sum = jnp.square(jnp.sum(emb, axis=1))  # [B, D]
  sum_of_square = jnp.sum(jnp.square(emb), axis=1)  # [B, D]
  return 0.5 * jnp.sum(square_of_sum - sum_of_square, axis=1)


class MLP(nn.Module):
  """Hidden layers Linear -> BatchNorm -> ReLU -> Dropout, then Linear -> 1; returns ``[B]``."""

  hidden: Sequence[int]
  dropout: float

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
    for width in self.hidden:
      x = TorchDense(width)(x)
      # PyTorch's BatchNorm1d: momentum 0.1 (flax: 0.9), eps 1e-5. Padding rows are masked out.
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x, mask=mask)
      x = nn.relu(x)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return TorchDense(1)(x)[:, 0]


def _row_mask(weights: jax.Array | None) -> jax.Array | None:
  return None if weights is None else (weights > 0)[:, None]


class LR(nn.Module):
  """Logistic regression; it has an embedding only so every model shares one interface."""

  embedding: nn.Module
  field_dims: Sequence[int]
  linear_init_std: float = 1.0

  @nn.compact
  def __call__(self, ids, weights=None, *, train: bool = False):
    del weights, train
    return first_order(self)(ids)


class FM(nn.Module):
  embedding: nn.Module
  field_dims: Sequence[int]
  linear_init_std: float = 1.0

  @nn.compact
  def __call__(self, ids, weights=None, *, train: bool = False):
    del weights, train
    linear = first_order(self)(ids)
    return linear + fm_interaction(self.embedding(ids))


class DeepFM(nn.Module):
  embedding: nn.Module
  field_dims: Sequence[int]
  mlp_dims: Sequence[int] = (400, 400, 400)
  dropout: float = 0.2
  linear_init_std: float = 1.0

  @nn.compact
  def __call__(self, ids, weights=None, *, train: bool = False):
    emb = self.embedding(ids)  # [B, F, D]
    deep = MLP(self.mlp_dims, self.dropout)(emb.reshape(emb.shape[0], -1), train=train,
                                             mask=_row_mask(weights))
    return first_order(self)(ids) + fm_interaction(emb) + deep


class AutoInt(nn.Module):
  """AutoInt with optional MLP branch (AutoInt+) and LR part (AutoInt+LR)."""

  embedding: nn.Module
  field_dims: Sequence[int]
  attn_dim: int = 64
  num_heads: int = 2
  num_layers: int = 3
  attn_dropout: float = 0.0
  use_mlp: bool = True
  use_linear: bool = False
  mlp_dims: Sequence[int] = (400, 400, 400)
  dropout: float = 0.2
  linear_init_std: float = 1.0

  @nn.compact
  def __call__(self, ids, weights=None, *, train: bool = False):
    emb = self.embedding(ids)  # [B, F, D]
    x = TorchDense(self.attn_dim, name='attn_embedding')(emb)  # [B, F, A]
    for i in range(self.num_layers):
      x = nn.MultiHeadDotProductAttention(
          num_heads=self.num_heads, qkv_features=self.attn_dim, out_features=self.attn_dim,
          dropout_rate=self.attn_dropout, deterministic=not train, name=f'attention_{i}')(x, x)
    x = x + TorchDense(self.attn_dim, name='residual')(emb)
    x = nn.relu(x).reshape(x.shape[0], -1)  # [B, F * A]
    logit = TorchDense(1, name='attn_out')(x)[:, 0]
    if self.use_mlp:
      logit += MLP(self.mlp_dims, self.dropout)(emb.reshape(emb.shape[0], -1), train=train,
                                                mask=_row_mask(weights))
    if self.use_linear:
      logit += first_order(self)(ids)
    return logit


MODELS = ('lr', 'fm', 'deepfm', 'autoint', 'autoint_plus', 'autoint_lr')


def build_model(model_config, field_dims: Sequence[int], embedding: nn.Module) -> nn.Module:
  """The model named by ``model_config.name`` around ``embedding``.

  Args:
    model_config: the ``config.model`` section.
    field_dims: vocabulary size of each field.
    embedding: an embedding layer mapping ``[B, F]`` to ``[B, F, D]``.
  """
  name = model_config.name
  dims = tuple(int(d) for d in field_dims)
  std = float(model_config.linear_init_std)
  mlp = dict(mlp_dims=tuple(model_config.mlp_dims), dropout=model_config.dropout,
             linear_init_std=std)
  if name == 'lr':
    return LR(embedding, dims, std)
  if name == 'fm':
    return FM(embedding, dims, std)
  if name == 'deepfm':
    return DeepFM(embedding, dims, **mlp)
  if name in ('autoint', 'autoint_plus', 'autoint_lr'):
    return AutoInt(embedding, dims, attn_dim=model_config.attn_dim,
                   num_heads=model_config.num_heads, num_layers=model_config.num_layers,
                   attn_dropout=model_config.attn_dropout, use_mlp=name == 'autoint_plus',
                   use_linear=name == 'autoint_lr', **mlp)
  raise ConfigError(f'config key model.name: unknown model {name!r}; expected one of {MODELS}')
