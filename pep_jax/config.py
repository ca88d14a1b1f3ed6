"""The default experiment config; every file in ``configs/`` derives from it.

Keys users script against: ``stage``, ``seed``, ``seeds``, ``data.*``, ``model.name``,
``embedding.dim``, ``embedding.granularity``, ``embedding.s_init``, ``optimizer.*``,
``prune.budgets``, ``train.batch_size``, ``train.max_epochs``, ``train.patience``.

``seed`` and ``seeds``: an experiment runs once per seed of :func:`seed_list`, ``seeds`` or,
when it is empty (the default), ``(seed,)``. One seed is today's experiment in the work
directory itself, with ``seed`` that seed (``seeds=(7,)`` is ``seed=7``); several seeds are one
such experiment each, in ``seeds/<seed>/`` of the work directory (:func:`for_seed` makes each
one's config), summarised together. The data and its split never depend on a seed: they come
from ``data.*`` (``data.split_seed``, ``data.synthetic.seed``), so every seed is scored on the
same test rows.
"""

from __future__ import annotations

import numbers

import ml_collections

from pep_jax.data.config import data_defaults
from pep_jax.errors import ConfigError
from pep_jax.layers.embedding import EMBEDDINGS  # noqa: F401  (documented alongside)
from pep_jax.models.ctr import MODELS
from pep_jax.ops.threshold import GATES, GRANULARITIES

# all: search, then train every candidate; search (prune: its older name): searches only;
# retrain: candidates of finished searches; evaluate: re-score every finished run.
STAGES = ('all', 'search', 'prune', 'retrain', 'evaluate')

UPDATES = ('dense', 'rows')  # optimizer.updates

# Keys that may change between runs sharing a work directory without changing any result
# (each method adds its own: pep_jax.methods.resumable_keys).
RESUMABLE_KEYS = ('stage', 'methods', 'train.log_every_steps', 'train.eval_batch_size',
                  'train.steps_per_dispatch', 'train.parallel_runs',
                  'mesh.data', 'mesh.table',
                  'compare.bootstrap_resamples', 'compare.bootstrap_seed', 'compare.bands')


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = 'all'  # all | search | retrain | evaluate
  c.seed = 42  # initial parameters, data order and dropout (the searches' too)
  # Seeds to run every method with, each in seeds/<seed>/ of the work directory; () runs
  # `seed` alone in the work directory itself. The data split is data.split_seed's, always.
  c.seeds = ()
  # Methods `stage` runs, in order (pep_jax/methods): ue, pep, sseds, mde, mgqe, dartsemb,
  # magnitude, random, qr.
  c.methods = ('pep', 'ue')

  c.data = data_defaults()

  c.model = ml_collections.ConfigDict()
  c.model.name = 'fm'  # lr | fm | deepfm | autoint | autoint_plus | autoint_lr
  c.model.mlp_dims = (400, 400, 400)
  c.model.dropout = 0.2
  c.model.attn_dim = 64
  c.model.num_heads = 2
  c.model.num_layers = 3
  c.model.attn_dropout = 0.0
  c.model.linear_init_std = 1.0  # first-order weights ~ N(0, std^2); 1.0 as the public code

  c.embedding = ml_collections.ConfigDict()
  c.embedding.dim = 24
  c.embedding.granularity = 'feature_dimension'
  c.embedding.s_init = -150.0
  c.embedding.gate = 'sigmoid'
  c.embedding.gate_scale = 1.0  # threshold = gate_scale * g(s) (the public code's gk)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 1e-5
  c.optimizer.decoupled_weight_decay = False  # False: coupled L2 as torch.optim.Adam
  c.optimizer.clip_norm = 100.0
  # dense: every row of the table, its thresholds and moments every step (the public code's
  # optimizer). rows: only the rows a batch looks up, with the coupled-L2 steps a row missed
  # applied when it is next looked up (pep_jax/train/sparse.py); for the methods that declare
  # rows_mode (pep and ue).
  c.optimizer.updates = 'dense'  # ('updates': ConfigDict.update is a method, not a key)
  c.optimizer.rows_sync_steps = 1000  # rows mode: every row brought up to date this often

  c.prune = ml_collections.ConfigDict()
  c.prune.budgets = (50_000, 30_000, 20_000)  # counts, or fractions (<= 1) of the table
  c.prune.max_epochs = 30
  c.prune.checkpoint_every_steps = 2000

  c.retrain = ml_collections.ConfigDict()
  c.retrain.init = 'rewind'  # rewind (V0 * mask) | random (fresh table * mask)

  c.ue = ml_collections.ConfigDict()
  c.ue.dims = (24,)  # widths of the uniform-embedding baselines

  # SSEDS (pep_jax/methods/sseds.py): one-shot saliency of a trained uniform model at
  # embedding.dim (the ue_d<dim> run, reused when finished).
  c.sseds = ml_collections.ConfigDict()
  c.sseds.budgets = (0.5, 0.2, 0.1)  # counts, or fractions (<= 1) of the uniform table
  c.sseds.budget_unit = 'params'  # params: sum_n d_n * vocab_n | slots: kept (field, dim) pairs
  # The order slots are taken in: saliency (the paper) | saliency_per_param (a slot's saliency
  # over the parameters it stores: vocab_n for a field's column, 1 for a table entry).
  c.sseds.rank = 'saliency'
  # prefix: slots in rank order until the next one does not fit | greedy: a slot that does not
  # fit is skipped and the next one that does is taken.
  c.sseds.fill = 'prefix'
  c.sseds.granularity = 'field'  # field: a mask [fields, d] | feature: one per table entry
  c.sseds.score_batches = 1  # batches the saliency |dL/d alpha| is averaged over
  c.sseds.min_width = 0  # dimensions every field keeps at least
  c.sseds.align = 'pad'  # pad: kept columns in place, zeros elsewhere | projection: d_n -> d
  c.sseds.init = 'reinit'  # reinit | warm (pre-trained values) | rewind (their initial values)

  # MDE (pep_jax/methods/mde.py): features split by training frequency into blocks of widths
  # dim * (popularity / top popularity) ** alpha, projected to dim. One model per grid point.
  c.mde = ml_collections.ConfigDict()
  c.mde.dims = (16,)  # the paper's grid: 4, 8, 16, 32
  c.mde.blocks = (8,)  # 8, 16
  c.mde.alphas = (0.2,)  # 0.1, 0.2, 0.3

  # MGQE (pep_jax/methods/mgqe.py): product quantisation with shared centroids per subspace;
  # the most frequent features may use every centroid, the others a share of them.
  c.mgqe = ml_collections.ConfigDict()
  c.mgqe.dims = (16,)  # the paper's grid: 8, 16, 32
  c.mgqe.subspaces = (4,)  # 4, 8, 16
  c.mgqe.centroids = (256,)  # 64, 128, 256, 512
  c.mgqe.frequent_fraction = 0.1  # share of features (by frequency) with every centroid
  c.mgqe.rare_centroid_fraction = 0.25  # share of the centroids the other features may use

  # DartsEmb (pep_jax/methods/dartsemb.py): first-order DARTS over candidate widths per field,
  # then the chosen widths retrained from scratch.
  c.dartsemb = ml_collections.ConfigDict()
  c.dartsemb.candidate_sets = ((1, 2, 8), (2, 4, 16), (4, 8, 32))
  c.dartsemb.search_epochs = 2
  c.dartsemb.arch_learning_rate = 3e-3

  # Magnitude pruning (pep_jax/methods/magnitude.py): the largest |v| of the trained uniform
  # model at embedding.dim (the ue_d<dim> run, reused when finished), retrained under the mask.
  c.magnitude = ml_collections.ConfigDict()
  c.magnitude.budgets = (0.5, 0.2, 0.1)  # counts, or fractions (<= 1) of the uniform table
  c.magnitude.scope = 'global'  # global: one ranking | field: shares by each field's entries
  c.magnitude.init = 'rewind'  # rewind (its initial values * mask) | finetune (trained values)

  # Random masks (pep_jax/methods/random.py): exactly the budget's entries, drawn uniformly
  # (seeded by config.seed and the budget), retrained as a PEP ticket.
  c.random = ml_collections.ConfigDict()
  c.random.budgets = (0.5, 0.2, 0.1)  # counts, or fractions (<= 1) of the uniform table

  # Quotient-remainder embeddings (pep_jax/methods/qr.py): for each budget the bucket count m
  # whose stored parameters are the largest within it; fields of more than m values get a
  # quotient and a remainder table.
  c.qr = ml_collections.ConfigDict()
  c.qr.budgets = (0.5, 0.2)  # counts, or fractions (<= 1) of the uniform table
  c.qr.combine = 'product'  # product | sum of the quotient and remainder rows

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 1024
  c.train.eval_batch_size = 8192
  c.train.max_epochs = 30
  c.train.patience = 5
  c.train.checkpoint_every_steps = 2000
  c.train.log_every_steps = 100
  # Train steps per compiled call (blocks never cross an epoch's end): the loops dispatch,
  # read metrics back and check a budget once per block (a ticket is still cut at its exact
  # step); evaluation reads as many rows per call. 1 runs one step per call. A resumed run
  # continues exactly at the same value; another value changes results by float32 rounding.
  c.train.steps_per_dispatch = 200
  # Runs trained at once, in worker processes (candidates, beside the searches); results do
  # not depend on it. 0: one per CPU core on a one-process CPU run, else 1.
  c.train.parallel_runs = 1

  # Devices (see pep_jax/sharding): the table's rows are split over `table`, copied over `data`;
  # batches are split over both. -1: every device the other axis leaves.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1
  c.mesh.table = -1
  # Table rows are padded to a multiple of this (a multiple of mesh.table). Fixed, not the
  # device count, so a checkpoint restores on any mesh whose table axis divides it.
  c.mesh.row_multiple = 1024

  # The summary's comparisons on the test rows (pep_jax/report.py): a paired bootstrap of the
  # AUC difference over this many resamples of the test rows, drawn from this seed.
  c.compare = ml_collections.ConfigDict()
  c.compare.bootstrap_resamples = 1000
  c.compare.bootstrap_seed = 0
  # Budget bands the summary checks every method against: upper edges as fractions of the
  # uniform table at the base width, decreasing; bands (next edge, edge], the last (0, edge].
  c.compare.bands = (0.3, 0.1, 0.03)
  return c


def seed_list(config) -> tuple[int, ...]:
  """The seeds an experiment runs: ``seeds``, or ``(seed,)`` when ``seeds`` is empty."""
  return tuple(int(s) for s in config.seeds) or (int(config.seed),)


def for_seed(config, seed: int) -> ml_collections.ConfigDict:
  """The config of one seed's experiment: a copy with ``seed`` set and ``seeds`` empty."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.seed = int(seed)
  out.seeds = ()
  return out


def validate(config) -> None:
  """Raises :class:`ConfigError` naming the first config key with an unusable value."""
  checks = [
      ('stage', config.stage in STAGES, STAGES),
      ('model.name', config.model.name in MODELS, MODELS),
      ('embedding.granularity', config.embedding.granularity in GRANULARITIES, GRANULARITIES),
      ('embedding.gate', config.embedding.gate in GATES, tuple(GATES)),
      ('retrain.init', config.retrain.init in ('rewind', 'random'), ('rewind', 'random')),
      ('optimizer.updates', config.optimizer.updates in UPDATES, UPDATES),
  ]
  for key, ok, allowed in checks:
    if not ok:
      raise ConfigError(f'config key {key}: got {_get(config, key)!r}, expected one of {allowed}')
  if config.model.name == 'lr':
    raise ConfigError("config key model.name: 'lr' has no embedding table, so there is nothing "
                      'for config.methods to size; choose fm, deepfm, autoint, autoint_plus or '
                      'autoint_lr (pep_jax.models.ctr.LR stays importable as a reference model)')
  if config.optimizer.updates == 'rows':
    if config.optimizer.name != 'adam' or config.optimizer.decoupled_weight_decay:
      raise ConfigError("config key optimizer.updates: 'rows' implements the faithful Adam with "
                        'coupled L2 (optimizer.decoupled_weight_decay=False)')
  positive = ('embedding.dim', 'optimizer.rows_sync_steps', 'train.batch_size', 'train.eval_batch_size', 'train.max_epochs',
              'train.patience', 'train.checkpoint_every_steps', 'train.log_every_steps',
              'train.steps_per_dispatch',
              'prune.max_epochs', 'prune.checkpoint_every_steps', 'optimizer.learning_rate',
              'embedding.gate_scale')
  for key in positive:
    if not _get(config, key) > 0:
      raise ConfigError(f'config key {key}: must be positive, got {_get(config, key)!r}')
  if not config.prune.budgets:
    raise ConfigError('config key prune.budgets: give at least one budget')
  for key in ('mesh.data', 'mesh.table'):
    if not (_get(config, key) == -1 or _get(config, key) > 0):
      raise ConfigError(f'config key {key}: expected a positive size or -1 (all remaining '
                        f'devices), got {_get(config, key)!r}')
  if config.mesh.data == -1 and config.mesh.table == -1:
    raise ConfigError('config keys mesh.data and mesh.table: at most one of them may be -1')
  if not config.train.parallel_runs >= 0:
    raise ConfigError(f'config key train.parallel_runs: must be 0 (automatic) or positive, got '
                      f'{config.train.parallel_runs!r}')
  if not config.mesh.row_multiple > 0:
    raise ConfigError(f'config key mesh.row_multiple: must be positive, got '
                      f'{config.mesh.row_multiple!r}')
  for key, value in flatten(config.to_dict()).items():
    if key.rsplit('.', 1)[-1].endswith('seed') and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0):
      raise ConfigError(f'config key {key}: expected a non-negative integer (a seed), got '
                        f'{value!r}')
  if any(int(d) <= 0 for d in config.ue.dims):
    raise ConfigError(f'config key ue.dims: widths must be positive, got {config.ue.dims}')
  seeds = config.seeds
  if not isinstance(seeds, (tuple, list)) or not all(_is_seed(s) for s in seeds):
    raise ConfigError(f'config key seeds: expected a tuple of non-negative integers (or () for '
                      f'config.seed alone), got {seeds!r}')
  if len(set(int(s) for s in seeds)) != len(seeds):
    raise ConfigError(f'config key seeds: each seed once, got {tuple(seeds)}')
  for key in ('compare.bootstrap_resamples', 'compare.bootstrap_seed'):
    value = _get(config, key)
    if not _is_seed(value) or (key.endswith('resamples') and value < 1):
      raise ConfigError(f'config key {key}: expected a '
                        f'{"positive" if key.endswith("resamples") else "non-negative"} '
                        f'integer, got {value!r}')
  bands = config.compare.bands
  if (not isinstance(bands, (tuple, list)) or not bands
      or not all(isinstance(b, (int, float)) and 0 < b <= 1 for b in bands)
      or any(a <= b for a, b in zip(bands, bands[1:]))):
    raise ConfigError(f'config key compare.bands: expected decreasing fractions in (0, 1], got '
                      f'{bands!r}')


def _is_seed(value) -> bool:
  """Whether ``value`` is a non-negative integer (numpy's included, bools not)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def _get(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


def flatten(config, prefix: str = '') -> dict:
  """``{'a.b': value}`` for every leaf of a (nested) config or dict."""
  out = {}
  for key, value in config.items():
    name = f'{prefix}{key}'
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flatten(value, f'{name}.'))
    else:
      out[name] = _as_json(value)
  return out


def from_flat(flat: dict) -> ml_collections.ConfigDict:
  """The config from its flattened form (a work directory's or an artifact's ``config.json``).

  Raises:
    KeyError, AttributeError, TypeError: for a key whose parent the default config lacks.
  """
  config = default_config()
  for key, value in flat.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return config


def _as_json(value):
  """Tuples (nested ones too) as lists, the form they take once written to JSON."""
  if isinstance(value, (tuple, list)):
    return [_as_json(v) for v in value]
  return value
