"""What a train step's time is made of: each step timed whole and with parts of it removed.

    python experiments/step_anatomy.py --json=docs/results/step_anatomy.json

On ``bench_speed.py``'s MovieLens-sized table (7 fields, 1,280 features, d=32, FM, batch 1024,
fake data), three steps are timed beside the uniform model's (UE, the faithful optimizer):

* PEP's prune step (feature-dimension thresholds, the public ML-1M setting): whole; without
  the non-zero count; with plain SGD for the faithful optimizer (gradient clipping, coupled L2
  and Adam over every parameter) and no count; the forward pass alone (the loss, no gradient).
  The differences are the count's, the optimizer's, the backward pass's and the forward's cost.
* MGQE's step at 4 subspaces of 64 centroids: whole, and with every code fixed at 0 (no
  quantisation): the difference is the nearest-centroid search, ``rows x S x K x D_s``
  squared differences a step.
* DartsEmb's search step (candidates 1, 2 and 8): whole (a weights pass on a training batch,
  then an architecture pass on a validation batch), and one ordinary step of the supernet
  (one pass, every parameter updated by the faithful optimizer).

Every variant runs ``train_block`` over the same pre-placed slab of ``--steps`` batches per
call (one call per timing); the variants are timed in turn for ``--rounds`` rounds in one
process and each keeps its fastest round, so a change of the machine's speed during the run
(a shared VM's drifts by up to two) falls on every variant alike. Each row also counts the
kernels of the compiled one-step program (the operations XLA launches every step). Prints a
table and writes the JSON with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from experiments import bench_speed as bs  # noqa: E402
from pep_jax.analysis import conditions, machine_line  # noqa: E402
from pep_jax.layers.embedding import make_embedding  # noqa: E402
from pep_jax.methods import METHODS, dartsemb, mgqe  # noqa: E402
from pep_jax.methods.base import Context  # noqa: E402
from pep_jax.train import steps as steps_lib  # noqa: E402
from pep_jax.train.setup import build_stage, make_stage  # noqa: E402


def forward_only(model, tx, count_nonzeros):
  """Steps whose train step computes the loss and leaves the parameters as they are."""
  del tx, count_nonzeros

  def train_step(state, batch, constants):
    logits = model.apply({'params': state.params, 'batch_stats': state.batch_stats,
                          **constants}, batch['ids'], batch['weights'], train=True,
                         rngs={'dropout': state.rng})
    loss = steps_lib.weighted_bce(logits, batch['labels'], batch['weights'])
    return state.replace(step=state.step + 1), {'loss': loss}

  return train_step, steps_lib.step_functions(model, None, count_nonzeros=False)[1]


SGD = optax.sgd(1e-3)


def sgd_steps(model, tx, count_nonzeros):
  """The ordinary steps with plain SGD (learning rate 1e-3) for the stage's optimizer."""
  del tx, count_nonzeros
  return steps_lib.step_functions(model, SGD, count_nonzeros=False)


def uncounted(model, tx, count_nonzeros):
  """The ordinary steps without the non-zero count."""
  del count_nonzeros
  return steps_lib.step_functions(model, tx, count_nonzeros=False)


def no_codes(queries, centroids, limits):
  """Every code 0: the step without the nearest-centroid search."""
  del limits
  return jnp.zeros(queries.shape[:-1] + (centroids.shape[0],), jnp.int32)


def kernels(stage, state, constants, batch) -> int:
  """Operations of the compiled one-step program (fusions, copies, gathers, ...), each a kernel
  XLA launches every step; parameters, constants, tuples and bitcasts left out."""
  text = stage.steps.train_step.lower(state, batch, constants).compile().as_text()
  ops = re.findall(r'= \S+ ([\w-]+)\(', text[text.index('ENTRY'):])
  return sum(op not in ('parameter', 'get-tuple-element', 'tuple', 'constant', 'bitcast')
             for op in ops)


def variants(data, args):
  """``[(step, variant, what it leaves out, stage, state, constants, batches)]``."""
  case = bs.Case('small', 'fm', 'ue', 'feature_dimension', 'dense')
  config = bs.case_config(case, args, args.steps)
  config.embedding.s_init = -15.0
  out = []

  def add(step, variant, leaves_out, stage, state=None, constants=None, rows=None):
    rows = rows or bs.device_batches(stage, data, args.steps)
    out.append([step, variant, leaves_out, stage,
                stage.initial_state() if state is None else state, constants or {}, rows])

  def pep_layer(row_multiple, mesh):
    return make_embedding('pep', config.embedding, data.field_dims, row_multiple=row_multiple,
                          mesh=mesh)

  add('ue', 'whole', '', build_stage(config, data, 'plain'))
  add('pep prune', 'whole', '', build_stage(config, data, 'pep'))
  add('pep prune', 'no count', 'the non-zero count',
      make_stage(config, data, pep_layer, steps=uncounted))
  add('pep prune', 'sgd, no count', 'the count and the faithful optimizer',
      make_stage(config, data, pep_layer, steps=sgd_steps, opt_init=SGD.init))
  add('pep prune', 'forward only', 'the count, the optimizer and the backward pass',
      make_stage(config, data, pep_layer, steps=forward_only, opt_init=lambda p: ()))

  mgqe_config = bs.case_config(case, args, args.steps)
  bs.SETTINGS['mgqe'](mgqe_config, bs.SHAPES['small'].dim)
  quantize = mgqe.quantize
  for variant, leaves_out, fn in (('whole', '', quantize),
                                  ('no quantisation', 'the nearest-centroid search', no_codes)):
    mgqe.quantize = fn  # read when the step is traced, i.e. by the first timed call below
    with tempfile.TemporaryDirectory(prefix='step_anatomy_') as workdir:
      ctx = Context(mgqe_config, data, workdir, None)
      method = METHODS['mgqe']
      cand = method.candidates(ctx)[0]
      stage = method.build(ctx, cand)
      state, constants = method.initial(ctx, cand, stage)
    add('mgqe S=4 K=64', variant, leaves_out, stage, state, constants)
    out[-1][4] = bs.time_block(stage, out[-1][4], constants, out[-1][6], 1)[0]  # traced now
  mgqe.quantize = quantize

  darts_config = bs.case_config(case, args, args.steps)
  bs.SETTINGS['dartsemb'](darts_config, bs.SHAPES['small'].dim)
  with tempfile.TemporaryDirectory(prefix='step_anatomy_') as workdir:
    ctx = Context(darts_config, data, workdir, None)
    cset = darts_config.dartsemb.candidate_sets[0]
    stage, batch_map = dartsemb.search_stage(ctx, cset)
    rows = [batch_map(i + 1, jax.device_get(b))
            for i, b in enumerate(bs.device_batches(stage, data, args.steps))]
    add('dartsemb search {1,2,8}', 'whole', '', stage, rows=rows)

    def supernet(row_multiple, mesh):
      return dartsemb.DartsEmbedding(tuple(int(x) for x in data.field_dims),
                                     int(darts_config.embedding.dim), tuple(cset),
                                     row_multiple=row_multiple, mesh=mesh)

    one_pass = make_stage(darts_config, data, supernet, steps=uncounted)
    add('dartsemb search {1,2,8}', 'one pass', 'the architecture pass (one ordinary step of '
        'the supernet)', one_pass)
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=100, help='steps per timed call')
  parser.add_argument('--rounds', type=int, default=8, help='timings of every variant, in turn')
  parser.add_argument('--json', default='step_anatomy.json', help='where to write the results')
  args = parser.parse_args(argv)
  args.batch_size, args.eval_batch_size = 1024, 8192
  data = bs.fake_data(bs.SHAPES['small'].field_dims, 2 * args.steps * args.batch_size,
                      16 * 1024)
  items = variants(data, args)
  times = [[] for _ in items]
  states = [item[4] for item in items]
  load_before = os.getloadavg()
  for _ in range(args.rounds + 1):  # the first round compiles and is not kept
    for i, (_, _, _, stage, _, constants, rows) in enumerate(items):
      states[i], seconds, _ = bs.time_block(stage, states[i], constants, rows, args.steps)
      times[i].append(seconds)
  ue = min(times[0][1:])
  rows = []
  print(f'{machine_line()}; batch {args.batch_size}, {args.steps} steps per call, fastest of '
        f'{args.rounds} rounds')
  print(f'{"step":26s} {"variant":16s} {"ms/step":>8s} {"x UE":>6s} {"kernels":>8s}')
  for (step, variant, leaves_out, stage, _, constants, batches), seconds, state in zip(
      items, times, states):
    best = min(seconds[1:])
    count = kernels(stage, state, constants, batches[0])
    rows.append({'step': step, 'variant': variant, 'leaves_out': leaves_out,
                 'ms_per_step': 1e3 * best, 'ue_steps': best / ue, 'kernels': count,
                 'ms_per_step_rounds': [1e3 * s for s in seconds[1:]]})
    print(f'{step:26s} {variant:16s} {1e3 * best:8.3f} {best / ue:6.2f} {count:8d}')
  doc = {'command': 'python experiments/step_anatomy.py --json=docs/results/step_anatomy.json',
         'machine': bs.machine(), 'machine_line': machine_line(),
         **conditions(load_before),
         'batch_size': args.batch_size, 'steps_per_call': args.steps, 'rounds': args.rounds,
         'shape': {'field_dims': list(bs.SHAPES['small'].field_dims),
                   'dim': bs.SHAPES['small'].dim},
         'rows': rows}
  with open(args.json, 'w') as f:
    json.dump(doc, f, indent=1)
  print(f'wrote {args.json}')
  return doc


if __name__ == '__main__':
  main()
