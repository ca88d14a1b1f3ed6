"""The optimizer of the public PEP code, built from optax transforms.

Faithful mode (default), on every parameter (table, thresholds, linear, MLP):

    clip global norm 100  ->  g + 1e-5 * p (coupled L2)  ->  Adam(1e-3, 0.9, 0.999, eps 1e-8)

Coupled L2 is what makes PEP prune at all from ``s_init = -150``: ``1e-5 * s`` is normalised
by Adam into a steady climb of about ``lr`` per step, while the loss gives ``s`` no gradient
(``sigmoid'(-150) == 0`` in float32). ``optimizer.decoupled_weight_decay=True`` (AdamW) is
offered for comparison; with it thresholds started at -150 never move.

``optimizer.updates='rows'`` (:mod:`pep_jax.train.sparse`) applies the same optimizer to the rows
a batch looks up, with the steps a row missed applied when it is next looked up.
"""

from __future__ import annotations

import optax

from pep_jax.errors import ConfigError


def build_optimizer(opt_config, clip: bool = True) -> optax.GradientTransformation:
  """``config.optimizer`` -> an optax transformation (dense updates of all parameters).

  ``clip=False`` leaves out the global-norm clip (the rows mode clips over its rows and the
  dense parameters together before calling this).
  """
  if opt_config.name != 'adam':
    raise ConfigError(f"config key optimizer.name: only 'adam' is supported, got "
                      f'{opt_config.name!r}')
  parts = []
  if clip and opt_config.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_config.clip_norm))
  if opt_config.weight_decay > 0 and not opt_config.decoupled_weight_decay:
    parts.append(optax.add_decayed_weights(opt_config.weight_decay))  # coupled L2, before Adam
  parts.append(optax.scale_by_adam(b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps))
  if opt_config.weight_decay > 0 and opt_config.decoupled_weight_decay:
    parts.append(optax.add_decayed_weights(opt_config.weight_decay))  # AdamW
  parts.append(optax.scale(-opt_config.learning_rate))
  return optax.chain(*parts)
