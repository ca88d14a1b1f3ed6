"""Embedding-size methods, each one module ending in a :class:`.base.Method` (see :mod:`.base`).

=========  ===============================================================================
ue         uniform embeddings at each width of ``ue.dims`` (no search)
pep        PEP: learnable soft thresholds, a ticket per budget, each retrained from V0 * mask
sseds      SSEDS: one-shot saliency of each (field, dimension) of a trained uniform model
mde        MDE: block widths from feature popularity, projected to the model's width
mgqe       MGQE: product-quantised embeddings, more centroids for frequent features
dartsemb   DartsEmb: differentiable search over candidate widths per field, then retrained
magnitude  the largest |v| of the trained uniform table under each budget, retrained masked
random     a random mask of exactly each budget's entries, retrained masked (the control)
qr         quotient-remainder tables per field, the bucket count chosen to fit each budget
=========  ===============================================================================

:data:`METHODS` is the one registry: ``config.methods`` names what ``stage=all`` runs and
:func:`get` resolves a name. Nothing else lists the methods.
"""

from pep_jax.errors import ConfigError
from pep_jax.methods import dartsemb, magnitude, mde, mgqe, pep, qr, random, sseds, ue
from pep_jax.methods.base import Method

METHODS: dict[str, Method] = {m.name: m for m in (
    ue.METHOD,
    pep.METHOD,
    sseds.METHOD,
    mde.METHOD,
    mgqe.METHOD,
    dartsemb.METHOD,
    magnitude.METHOD,
    random.METHOD,
    qr.METHOD,
)}


def get(name: str) -> Method:
  """The method named ``name``.

  Raises:
    ConfigError: naming ``methods``, for an unknown name.
  """
  if name not in METHODS:
    raise ConfigError(f'config key methods: unknown method {name!r}; expected some of '
                      f'{tuple(METHODS)}')
  return METHODS[name]


def labels() -> dict[str, str]:
  """``{series: label}`` of every method's summary rows and plot curves."""
  return {series: label for m in METHODS.values() for series, label in m.labels.items()}


def floors(config, field_dims) -> dict[str, tuple[float, str]]:
  """``{series: (least share of the uniform table, why)}`` of every method with a floor
  (:attr:`.base.Method.floor`) on fields of ``field_dims``."""
  return {series: m.floor(config, field_dims) for m in METHODS.values() if m.floor
          for series in m.labels}


def resumable_keys() -> tuple[str, ...]:
  """Config keys of every method that may change in a work directory without changing a
  result."""
  return tuple(k for m in METHODS.values() for k in m.resumable_keys)
