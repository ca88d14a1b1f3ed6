"""A finished run rebuilt in memory: what export, the analyses and the benchmarks read.

The run's method comes from its record in the work directory (:func:`pep_jax.workdir.run_record`),
its best state from :func:`pep_jax.workdir.restore_best`; the method rebuilds the stage and the
constants it trained with.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from pep_jax import methods as methods_lib
from pep_jax import workdir as wd
from pep_jax.data import load_dataset
from pep_jax.data.base import CTRDataset
from pep_jax.errors import InputError, MissingError
from pep_jax.methods.base import Candidate, Context, Method
from pep_jax.train.setup import Stage

DEFAULT_METHOD = 'pep'  # a run to load when none is named: this method's best


@dataclasses.dataclass
class Run:
  """A finished run, rebuilt in memory.

  Attributes:
    name: the run folder (``pep_b<budget>``, ``ue_d<dim>``, ``sseds_b<budget>``, ...).
    config: the work directory's config.
    data: the dataset (loaded as training loaded it).
    method: the method that trained it.
    candidate: the candidate it trained.
    ctx: the experiment context (config, data, work directory).
    stage: the stage the run trained (model, eval step, shardings).
    state: the best checkpoint's state.
    constants: non-trained variables (a ticket mask, an index map).
    result: the run's ``result.json``.
  """

  name: str
  config: Any
  data: CTRDataset
  method: Method
  candidate: Candidate
  ctx: Context
  stage: Stage
  state: Any
  constants: dict
  result: dict

  @property
  def num_rows(self) -> int:
    return int(self.data.num_features)

  @property
  def dim(self) -> int:
    return int(self.stage.embedding.dim)


def find_candidate(ctx: Context, name: str) -> tuple[Method, Candidate]:
  """The method and candidate that trained the run folder ``name``.

  Read from the run's record; a run trained before runs were recorded is found among the
  candidates of the method its name starts with.

  Raises:
    InputError: naming ``--run``, for a folder that is not a run of this work directory.
  """
  record = wd.run_record(ctx.workdir, name)
  if record is not None:
    return methods_lib.get(record['method']), Candidate.from_json(record['candidate'])
  for method in methods_lib.METHODS.values():
    if name.startswith(method.name + '_'):
      try:
        cands = method.candidates(ctx)
      except MissingError:  # that method's search never ran in this work directory
        continue
      for cand in cands:
        if cand.run == name:
          return method, cand
  raise InputError(f'--run={name}: not a run of this work directory; its finished runs are '
                   f'{wd.finished_runs(ctx.workdir)}')


def load_run(workdir: str, run: str | None = None, data: CTRDataset | None = None) -> Run:
  """Rebuilds a finished run of ``workdir``: config, data, model, best state, its method.

  Args:
    workdir: the work directory (``python -m pep_jax.main --workdir``).
    run: a run folder; None picks the best finished PEP run (:func:`pep_jax.workdir.best_run`).
    data: the work directory's dataset, when the caller has it loaded already.

  Raises:
    MissingError, InputError: naming the missing or unusable file or run.
  """
  config = wd.read_config(workdir)
  name = run or wd.best_run(workdir, DEFAULT_METHOD)
  data = load_dataset(config.data) if data is None else data
  ctx = Context(config, data, workdir, None)
  method, cand = find_candidate(ctx, name)
  result = wd.result(workdir, name)
  if result is None:
    raise MissingError(f'{os.path.join(wd.run_dir(workdir, name), wd.RESULT)} not found: run '
                       f'{name} is not finished')
  stage = method.build(ctx, cand)
  _, constants = method.initial(ctx, cand, stage)
  state = wd.restore_best(workdir, name, stage.abstract_state())
  return Run(name, config, data, method, cand, ctx, stage, state, constants, result)
