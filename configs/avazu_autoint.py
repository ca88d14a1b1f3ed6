"""PEP with AutoInt+ on Avazu, with the public scripts' hyper-parameters.

    python -m pep_jax.main --config=configs/avazu_autoint.py \
        --config.data.dir=/path/to/avazu --workdir=runs/avazu_autoint

`data.dir` holds Avazu's Kaggle train CSV (train or train.gz); the columnar cache is built
there on first use. At its sparsest setting (PEP-0) the paper reports 0.7607 AUC with 2,805
parameters (AutoInt+LR: 0.7620 with 2,225). Its figures are means of per-batch AUCs selected on
the test split: compare them with `test_auc_batch_mean`; `test_auc` is the global AUC of the
best validation state.
"""

from pep_jax.presets import paper_config


def get_config(arg=None):
  return paper_config('avazu', 'autoint', arg)
