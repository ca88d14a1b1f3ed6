"""PEP with AutoInt+ on Criteo, with the public scripts' hyper-parameters.

    python -m pep_jax.main --config=configs/criteo_autoint.py \
        --config.data.dir=/path/to/criteo --workdir=runs/criteo_autoint

`data.dir` holds Criteo's Kaggle train.txt (or train.txt.gz); the columnar cache is built there
on first use. At its sparsest setting (PEP-0) the paper reports 0.7922 AUC with 3,116
parameters (AutoInt+LR: 0.7980 with 1,117). Its figures are means of per-batch AUCs selected on
the test split: compare them with `test_auc_batch_mean`; `test_auc` is the global AUC of the
best validation state.

`:small_budget` departs from the paper to let the count fall below the sigmoid's
plateau: thresholds `4 * sigmoid(s)` (`embedding.gate_scale=4`), s_init kept at -150.
`:small` is a first look at a sample of thousands of rows, not the paper's protocol:
budgets of 50% and 30% of the table, `s_init=-6` with `gate_scale=4` (thresholds bite within
~100 steps), at most 50 pruning and 3 retraining epochs, one uniform baseline.
"""

from pep_jax.presets import paper_config


def get_config(arg=None):
  return paper_config('criteo', 'autoint', arg)
