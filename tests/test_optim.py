"""The faithful optimizer against a float64 re-implementation of the public code's update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pep_jax.config import default_config
from pep_jax.ops.threshold import soft_threshold
from pep_jax.train.optim import build_optimizer


def reference_step(params, grads, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, wd=1e-5,
                   clip=100.0):
  """clip_grad_norm_(100) then torch.optim.Adam(weight_decay=1e-5), in float64."""
  norm = np.sqrt(sum(np.sum(g * g) for g in grads))
  scale = min(1.0, clip / norm)  # optax divides by max(norm, clip): the same scale
  out = []
  for i, (p, g) in enumerate(zip(params, grads)):
    g = g * scale + wd * p
    m[i] = b1 * m[i] + (1 - b1) * g
    v[i] = b2 * v[i] + (1 - b2) * g * g
    mhat, vhat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
    out.append(p - lr * mhat / (np.sqrt(vhat) + eps))
  return out


def test_matches_torch_adam_with_coupled_l2_and_clipping():
  rng = np.random.default_rng(0)
  params = [rng.normal(size=(5, 3)), rng.normal(size=(4,))]
  tx = build_optimizer(default_config().optimizer)
  p = [jnp.asarray(x, jnp.float32) for x in params]
  state = tx.init(p)
  m = [np.zeros_like(x) for x in params]
  v = [np.zeros_like(x) for x in params]
  for t in range(1, 21):
    grads = [rng.normal(scale=30.0 if t % 3 else 0.01, size=x.shape) for x in params]
    params = reference_step(params, grads, m, v, t)
    updates, state = tx.update([jnp.asarray(g, jnp.float32) for g in grads], state, p)
    p = optax.apply_updates(p, updates)
  for a, b in zip(p, params):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def climb(decoupled: bool, steps: int = 300) -> np.ndarray:
  """Thresholds at s=-150 with the loss giving them no gradient, as in PEP's first epochs."""
  cfg = default_config().optimizer
  cfg.decoupled_weight_decay = decoupled
  tx = build_optimizer(cfg)
  params = {'v': jnp.full((4, 3), 0.05), 's': jnp.full((4, 3), -150.0)}
  state = tx.init(params)
  loss = lambda p: jnp.sum(soft_threshold(p['v'], p['s']) ** 2)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  return np.asarray(params['s'])


def test_coupled_l2_makes_thresholds_climb_about_lr_per_step():
  s = climb(decoupled=False)
  np.testing.assert_allclose(s, -150.0 + 300 * 1e-3, atol=0.01)


def test_decoupled_weight_decay_leaves_thresholds_almost_still():
  s = climb(decoupled=True)
  # AdamW shrinks s by lr * wd * |s| per step only: 300 steps move it by ~5e-4, not 0.3.
  assert np.all(np.abs(s + 150.0) < 1e-3)
