"""PEP-FM on the embedded synthetic data: prune -> retrain tickets -> uniform baseline.

    python -m pep_jax.main --config=configs/demo.py --workdir=runs/demo

About 3 minutes on 2 CPU cores. The data (20 Criteo-like fields, 35,809 features, 500k rows)
has a planted teacher: 8 fields are pure noise, the others have intrinsic dimensions 1-8.
The summary compares retrained tickets with a uniform d=16 embedding and the teacher's AUC.
"""

from pep_jax.config import default_config


def get_config(arg=None):
  c = default_config()
  c.data.name = 'synthetic'
  c.model.name = 'fm'
  c.embedding.dim = 16
  c.embedding.s_init = -8.0
  c.prune.budgets = (0.5, 0.3, 0.2, 0.1, 0.05)
  c.prune.max_epochs = 15
  c.ue.dims = (16, 4)
  c.train.max_epochs = 15
  c.train.patience = 2
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
  return c
