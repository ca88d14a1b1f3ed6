"""Every method at several budgets on synthetic data whose truth frequency cannot reveal.

    python -m pep_jax.main --config=configs/compare.py --workdir=runs/compare
    python -m pep_jax.main --config=configs/compare.py:quick --workdir=runs/compare_quick

FM, base width 16, on the ``independent`` synthetic preset (pep_jax/data/config.py): 20 fields
pairing 4 vocabulary sizes with 5 planted intrinsic dimensions, so vocabulary size says nothing
about importance. Runs UE (d = 16, 4, 1), PEP (tickets at 30%, 10% and 3% of the table),
SSEDS (same budgets, stored parameters), MDE (32 blocks, two temperatures), MGQE (4 codes
per feature and 1, two codebook sizes each), DartsEmb (two candidate sets) and the three
baselines every learned method must beat: magnitude pruning of the trained uniform table and
random masks (PEP's budgets), and quotient-remainder embeddings (30%, 10% and 5%: one bucket
count for all fields stores at least 4.4% of the table here), each retrained to its best
validation AUC. Every method has a model in each band of ``compare.bands`` (at most 30%, 10%
and 3% of the table) that it can reach; ``summary.md`` says in one line why a method cannot
reach a band (UE, MDE, MGQE and DartsEmb keep at least one entry per feature, 1/16 of the
table; QR's floor is above 3% here). Runs train two at a time on two cores
(``train.parallel_runs=0``).

Three seeds (42, 43, 44), each the whole experiment, searches included, in
``runs/compare/seeds/<seed>/``, all scored on the same test rows (the split is
``data.split_seed``'s). ``comparison.json`` and ``summary.md`` give each model's stored
parameters and bytes, the mean test AUC over seeds with its 95% interval and the paired
difference to UE at d=16, the rank correlation of its per-field widths with the planted
dimensions and its share of parameters spent on noise fields; ``summary.md`` ends with the
headline comparisons, each with a paired bootstrap interval over the test rows, and says which
are not separable; ``frontier.png`` has one curve per method against parameters and against
bytes, with the seeds' intervals as error bars.

Variants: ``quick``, seed 42 alone in the work directory itself (a third of the time; the same
experiment as ``seeds/42`` of the full run); ``tiny``, one seed on a few thousand rows, for
tests; ``movielens``, ``criteo`` and ``avazu``, the comparison on your copy of that dataset
(:func:`real_data_config`)::

    python -m pep_jax.main --config=configs/compare.py:movielens \
        --config.data.dir=/path/to/ml-1m --workdir=runs/compare_movielens

Settings that differ from the paper's: 300k rows and at most 8 retraining epochs with patience
2, so the whole comparison runs in minutes on a CPU; PEP's thresholds as the reachability
analysis recommends for small budgets (``embedding.gate_scale=4``, ``embedding.s_init=-8``);
first-order weights initialised at std 0.01 (as configs/demo.py); MGQE with 16 and 64 centroids
(the paper's grid starts at 64; every centroid costs a distance per lookup, which dominates a
CPU step).
"""

from pep_jax.config import default_config
from pep_jax.data.config import independent_synthetic
from pep_jax.presets import paper_config

METHODS = ('ue', 'pep', 'sseds', 'mde', 'mgqe', 'dartsemb', 'magnitude', 'random', 'qr')
BUDGETS = (0.3, 0.1, 0.03)  # fractions of the uniform table, one per band of compare.bands
REAL_DATA = ('movielens', 'criteo', 'avazu')


def real_data_config(dataset: str):
  """The comparison on a real dataset in ``data.dir``: FM at the paper's width, the paper's
  preprocessing, every method at the budgets of :data:`BUDGETS` where it can reach them.

  PEP: on MovieLens the thresholds of ``docs/analyses.md``'s reachability grid on the real
  MovieLens-100K sample that reached 10% of the table (``gate_scale=4``, ``s_init=-6``: 8.9%
  after 300 epochs there; no measured setting reached 3%, which the summary then says); on
  Criteo and Avazu the paper's, which reach far smaller budgets (its tickets keep 20k of 26M
  entries). QR on MovieLens stops at 10%: its fields are small (the zip code's 3,439 values
  are the largest), so one bucket count cannot go much lower. MGQE with the paper's smallest
  codebook (64 centroids), 4 codes per feature and 1; MDE and DartsEmb as on the synthetic
  benchmark.
  """
  c = paper_config(dataset, 'fm')
  dim = int(c.embedding.dim)
  c.methods = METHODS
  if dataset == 'movielens':
    c.embedding.gate_scale = 4.0
    c.embedding.s_init = -6.0
    c.prune.max_epochs = 300
    c.qr.budgets = BUDGETS[:2]
    c.train.max_epochs = 20
    c.train.patience = 3
  else:
    c.qr.budgets = BUDGETS
  c.prune.budgets = c.sseds.budgets = c.magnitude.budgets = c.random.budgets = BUDGETS
  c.ue.dims = (dim, dim // 4, 1)
  c.mde.dims = (dim,)
  c.mde.blocks = (32,)
  c.mde.alphas = (0.3, 1.0)
  c.mgqe.dims = (dim,)
  c.mgqe.subspaces = (4, 1)
  c.mgqe.centroids = (64,)
  c.dartsemb.candidate_sets = ((1, 2, 8), (1, 2))
  c.train.parallel_runs = 0
  c.seeds = (42, 43, 44)
  return c


def get_config(arg=None):
  if arg in REAL_DATA:
    return real_data_config(arg)
  c = default_config()
  c.methods = METHODS
  c.data.name = 'synthetic'
  c.data.synthetic = independent_synthetic(num_rows=300_000)
  c.model.name = 'fm'
  c.model.linear_init_std = 0.01
  c.embedding.dim = 16
  # Small budgets need thresholds above the sigmoid's bound of 1 (docs/analyses.md,
  # reachability): gate_scale 4. The first threshold, 4 * sigmoid(-8) = 0.0013, is a tenth of
  # Xavier's bound sqrt(6 / (33,330 + 16)) = 0.0134; with s_init=-7 (a quarter) the tickets
  # were cut within 11 s of pruning and every one scored lower (0.6946 against 0.7096 at 30%).
  c.embedding.gate_scale = 4.0
  c.embedding.s_init = -8.0
  c.prune.budgets = c.sseds.budgets = c.magnitude.budgets = c.random.budgets = BUDGETS
  c.prune.max_epochs = 30
  c.qr.budgets = (0.3, 0.1, 0.05)
  c.ue.dims = (16, 4, 1)
  c.mde.dims = (16,)
  # Every method in each band of compare.bands (30%, 10%, 3%) it can reach: MDE at 19.8% and
  # 9.3% (32 blocks; alpha 1 leaves every block but the first at width 1), MGQE at 25% and
  # 6.3% (4 codes per feature, and 1), DartsEmb between 6.3% and 12.5% with widths {1, 2}.
  # The summary says why a method has no model in a band (methods.base.Method.floor).
  c.mde.blocks = (32,)
  c.mde.alphas = (0.3, 1.0)
  c.mgqe.dims = (16,)
  c.mgqe.subspaces = (4, 1)
  c.mgqe.centroids = (16, 64)
  c.dartsemb.candidate_sets = ((1, 2, 8), (1, 2))
  c.dartsemb.search_epochs = 4
  c.train.max_epochs = 8
  c.train.patience = 2
  c.train.parallel_runs = 0  # one run per CPU core (pep_jax/experiment.py)
  c.seeds = (42, 43, 44)
  if arg == 'quick':  # a first look: seed 42 alone
    c.seeds = ()
    c.seed = 42
  elif arg == 'tiny':  # seconds, for tests
    c.seeds = ()
    c.data.synthetic.num_rows = 20_000
    c.data.synthetic.vocab_sizes = (3, 40, 3, 40, 3, 40)
    c.data.synthetic.intrinsic_dims = (0, 0, 2, 2, 4, 4)
    c.data.synthetic.latent_dim = 4
    c.embedding.dim = 8
    c.embedding.gate_scale = 1.0  # the tiny table's thresholds bite early enough without it
    c.embedding.s_init = -3.0
    c.prune.budgets = (0.5, 0.2)
    c.sseds.budgets = (0.5, 0.2)
    c.magnitude.budgets = (0.5, 0.2)
    c.random.budgets = (0.5, 0.2)
    c.qr.budgets = (0.5, 0.4)  # the smallest QR table of these fields is 37% of the uniform one
    c.ue.dims = (8,)
    c.mde.dims = (8,)
    c.mde.blocks = (4,)
    c.mde.alphas = (0.3,)
    c.mgqe.dims = (8,)
    c.mgqe.subspaces = (2,)
    c.mgqe.centroids = (16,)
    c.dartsemb.candidate_sets = ((1, 2, 8),)
    c.train.parallel_runs = 1
    c.dartsemb.search_epochs = 2  # two calls, so a kill can land inside the search
    c.prune.checkpoint_every_steps = 10
    c.train.batch_size = 256
    c.train.eval_batch_size = 1024
    c.train.max_epochs = 3
    c.train.checkpoint_every_steps = 10
    c.train.log_every_steps = 10
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/compare.py; expected 'quick', "
                     f"'tiny', one of {REAL_DATA} or none")
  return c
