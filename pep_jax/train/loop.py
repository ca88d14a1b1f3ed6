"""The old import path of the batch iterators and of evaluation, kept while callers move.

:func:`resumable_batches` lives in :mod:`pep_jax.train.batches`, :func:`predict` and
:func:`evaluate` in :mod:`pep_jax.train.evaluation`. ``pep_jax.export`` and ``pep_jax.analysis``
still reach them through this module; delete it once they import from those two.
"""

from pep_jax.train.batches import resumable_batches
from pep_jax.train.evaluation import evaluate, predict

__all__ = ['evaluate', 'predict', 'resumable_batches']
