"""PEP with FM on MovieLens-1M, with the public scripts' hyper-parameters.

    python -m pep_jax.main --config=configs/movielens_fm.py \
        --config.data.dir=/path/to/movielens --workdir=runs/movielens_fm

`data.dir` holds MovieLens-1M's users.dat, movies.dat and ratings.dat; the columnar cache is
built there on first use. At its sparsest setting (PEP-0) the paper reports 0.8368 AUC with
6,541 parameters. Its figures are means of per-batch AUCs selected on the test split: compare
them with `test_auc_batch_mean`; `test_auc` is the global AUC of the best validation state.
"""

from pep_jax.presets import paper_config


def get_config(arg=None):
  return paper_config('movielens', 'fm', arg)
