"""Embedding-size methods, each one module with the same entry points (see :mod:`.base`).

=========  ===============================================================================
ue         uniform embeddings at each width of ``ue.dims`` (no search)
pep        PEP: learnable soft thresholds, a ticket per budget, each retrained from V0 * mask
sseds      SSEDS: one-shot saliency of each (field, dimension) of a trained uniform model
mde        MDE: block widths from feature popularity, projected to the model's width
mgqe       MGQE: product-quantised embeddings, more centroids for frequent features
dartsemb   DartsEmb: differentiable search over candidate widths per field, then retrained
=========  ===============================================================================

``config.methods`` lists what ``stage=all`` runs; :func:`get` resolves a name.
"""

from pep_jax.methods import dartsemb, mde, mgqe, pep, sseds, ue

METHODS = {'ue': ue, 'pep': pep, 'sseds': sseds, 'mde': mde, 'mgqe': mgqe, 'dartsemb': dartsemb}


def get(name: str):
  """The module of method ``name``.

  Raises:
    ValueError: naming ``methods``, for an unknown name.
  """
  if name not in METHODS:
    raise ValueError(f'config key methods: unknown method {name!r}; expected some of '
                     f'{tuple(METHODS)}')
  return METHODS[name]
