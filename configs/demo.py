"""PEP-FM on the embedded synthetic data: prune -> retrain tickets -> uniform baselines.

    python -m pep_jax.main --config=configs/demo.py --workdir=runs/demo

The data (20 Criteo-like fields, 33,409 features, 500k rows; nothing to download) has a
planted FM teacher: 8 fields are pure noise (among them the three largest vocabularies) and the
others have intrinsic dimensions 1-8. The summary compares the retrained tickets (50%, 30%, 20%
and 10% of the d=16 table) with uniform embeddings at d=16 and d=4, and shows the teacher's
AUC as the ceiling. Measured results are in the README.

Two settings differ from the paper's scripts so the demo trains in minutes on a CPU:
``embedding.s_init=-8`` (thresholds bite after a few epochs instead of ~140k steps from -150)
and ``model.linear_init_std=0.01`` (first-order weights start near 0 instead of N(0, 1)).
"""

from pep_jax.config import default_config


def get_config(arg=None):
  c = default_config()
  c.data.name = 'synthetic'
  c.model.name = 'fm'
  c.model.linear_init_std = 0.01
  c.embedding.dim = 16
  c.embedding.s_init = -8.0
  c.prune.budgets = (0.5, 0.3, 0.2, 0.1)
  c.prune.max_epochs = 20
  c.ue.dims = (16, 4)
  c.train.max_epochs = 15
  c.train.patience = 3
  c.train.parallel_runs = 0  # one run per CPU core (pep_jax/experiment.py)
  if arg == 'tiny':  # seconds, for tests
    c.data.synthetic.num_rows = 20_000
    c.data.synthetic.vocab_sizes = (3, 10, 50, 200, 5, 100)
    c.data.synthetic.intrinsic_dims = (1, 2, 3, 4, 0, 0)
    c.data.synthetic.latent_dim = 4
    c.embedding.dim = 8
    c.embedding.s_init = -3.0
    c.prune.budgets = (0.5, 0.2)
    c.prune.max_epochs = 20
    c.prune.checkpoint_every_steps = 10
    c.train.batch_size = 256
    c.train.eval_batch_size = 1024
    c.train.max_epochs = 4
    c.train.patience = 2
    c.train.checkpoint_every_steps = 10
    c.train.log_every_steps = 10
    c.ue.dims = (8,)
    c.train.parallel_runs = 1
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/demo.py; expected 'tiny' or none")
  return c
