"""PEP with AutoInt+ on Criteo, with the public scripts' hyper-parameters.

    python -m pep_jax.main --config=configs/criteo_autoint.py \
        --config.data.dir=/path/to/criteo --workdir=runs/criteo_autoint

`data.dir` holds Criteo's Kaggle train.txt (or train.txt.gz); the columnar cache is built there
on first use. At its sparsest setting (PEP-0) the paper reports 0.7922 AUC with 3,116
parameters (AutoInt+LR: 0.7980 with 1,117). Its figures are means of per-batch AUCs selected on
the test split: compare them with `test_auc_batch_mean`; `test_auc` is the global AUC of the
best validation state.
"""

from pep_jax.presets import paper_config


def get_config(arg=None):
  return paper_config('criteo', 'autoint', arg)
