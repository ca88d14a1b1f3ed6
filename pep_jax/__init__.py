"""pep_jax: learnable embedding sizes (PEP) for CTR models in JAX/Flax.

The reparameterisation is a pure function, usable in any model::

    from pep_jax import soft_threshold
    rows = soft_threshold(table[ids], s[ids])   # sign(V) * relu(|V| - sigmoid(s))
"""

from pep_jax.layers.embedding import MaskedEmbedding, PEPEmbedding, PlainEmbedding
from pep_jax.ops.threshold import count_nonzero, keep_mask, row_sizes, soft_threshold

__all__ = ['soft_threshold', 'keep_mask', 'count_nonzero', 'row_sizes', 'PEPEmbedding',
           'MaskedEmbedding', 'PlainEmbedding']
__version__ = '0.1.0'
