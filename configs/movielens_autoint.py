"""PEP-autoint on movielens with the public scripts' hyper-parameters.

    python -m pep_jax.main --config=configs/movielens_autoint.py --config.data.dir=/path/to/movielens \
        --workdir=runs/movielens_autoint

`data.dir` holds MovieLens-1M's users.dat, movies.dat and ratings.dat; the columnar cache is built there on first use. The paper
reports 0.8530 AUC with 9,281 parameters (PEP-0); its figures are
means of per-batch AUCs selected on the test split, reported here as `test_auc_batch_mean`
beside the global test AUC of the best validation state.
"""

from pep_jax.presets import paper_config


def get_config(arg=None):
  return paper_config('movielens', 'autoint', arg)
