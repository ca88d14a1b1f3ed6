"""experiments/bench_speed.py on a tiny grid: the rows, ratios and machine it reports.

Nothing here asserts a speed.
"""

import importlib
import json
import os

import jax
import pytest


@pytest.fixture(scope='module')
def bench():
  return importlib.import_module('experiments.bench_speed')  # the repository root is on the path


def test_a_tiny_run_writes_every_part_and_the_machine(bench, tmp_path):
  """PEP only (UE runs the same code with another stage; the ratios are tested below)."""
  out = tmp_path / 'bench.json'
  bench.main(['--shapes=small', '--models=fm', '--methods=pep',
              '--granularities=feature_dimension', '--modes=dense', '--steps=3',
              '--per-dispatch=2', '--batch-size=64', '--eval-batch-size=128', '--eval-rows=300',
              f'--json={out}'])
  report = json.loads(out.read_text())
  assert {'platform', 'processor', 'cpu_count', 'jax', 'jaxlib', 'device_kind', 'python',
          'date'} <= set(report['machine'])
  assert report['machine']['cpu_count'] == os.cpu_count()
  got = [(r['part'], r['method'], r['granularity'], r['per_dispatch']) for r in report['rows']]
  assert got == [('step', 'pep', 'feature_dimension', 1), ('step', 'pep', 'feature_dimension', 2),
                 ('loop', 'pep', 'feature_dimension', 1), ('loop', 'pep', 'feature_dimension', 2),
                 ('eval', 'pep', 'feature_dimension', 2)]
  for row in report['rows']:
    if row['part'] in ('step', 'loop'):
      assert row['samples_per_second'] > 0 and row['bytes_per_step'] > 0
      assert row['steps_timed'] >= 3
    else:
      assert row['rows'] == 300 and row['rows_per_second'] > 0
  kinds = [item['ratio'] for item in report['ratios']]
  assert kinds == (['loop/step samples/s'] * 2 + ['loop/block step samples/s'] +
                   ['K>1/K=1 samples/s'] * 2)


def test_traffic_model_counts_nine_passes_per_parameter_and_the_count(bench):
  """Dense Adam with clipping: 9 bytes per parameter byte; PEP also reads its table to count."""
  args = bench.parse_args(['--batch-size=64'])
  data = bench.fake_data(bench.SMALL, 64, 64)
  got = {}
  for method, granularity in (('ue', None), ('pep', 'feature_dimension'), ('pep', 'global')):
    case = bench.Case('small', 'fm', method, granularity, 'dense')
    stage = bench.build_stage(bench.case_config(case, args, 1), data, bench.KINDS[method])
    state = stage.abstract_state()
    params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params))
    table = state.params['embedding']['table']
    got[granularity] = bench.dense_step_bytes(stage, state, method == 'pep')
    counted = 0 if method == 'ue' else sum(
        x.size * 4 for x in jax.tree.leaves(state.params['embedding']))
    assert got[granularity] == pytest.approx(9 * params + counted, rel=1e-4)
  table_bytes = table.size * 4
  assert got['feature_dimension'] - got['global'] == pytest.approx(10 * table_bytes, rel=1e-3)


def test_both_update_modes_are_in_the_grid(bench):
  args = bench.parse_args(['--shapes=small', '--models=fm', '--modes=dense,rows'])
  notes = []
  assert {case.mode for case in bench.cases(args, notes)} == {'dense', 'rows'} and not notes


def test_ratios_pair_rows_of_the_same_configuration(bench):
  def row(part, method, gran, k, ms, mode='dense', nbytes=None):
    r = {'part': part, 'shape': 'small', 'model': 'fm', 'method': method, 'granularity': gran,
         'mode': mode, 'per_dispatch': k, 'ms_per_step': ms, 'samples_per_second': 1e3 / ms}
    return r | ({'bytes_per_step': nbytes} if nbytes else {})

  rows = [row('step', 'ue', None, 1, 2.0, nbytes=100), row('step', 'pep', 'dimension', 1, 2.4,
                                                            nbytes=110),
          row('step', 'ue', None, 4, 1.0), row('loop', 'ue', None, 4, 1.25),
          row('step', 'ue', None, 4, 0.5, mode='rows')]
  got = {(i['ratio'], i['part'], i['method'], i['mode'], i['per_dispatch']): i
         for i in bench.ratios(rows)}
  pep = got['pep/ue step time', 'step', 'pep', 'dense', 1]
  assert pep['measured'] == pytest.approx(1.2) and pep['traffic_implied'] == pytest.approx(1.1)
  assert not pep['meets_target']  # dimension-wise: at most 1.1x a UE step
  loop = got['loop/step samples/s', 'loop', 'ue', 'dense', 4]  # against the K=1 step
  assert loop['measured'] == pytest.approx(1.6) and loop['meets_target']
  assert got['loop/block step samples/s', 'loop', 'ue', 'dense', 4]['measured'] == (
      pytest.approx(0.8))
  assert got['K>1/K=1 samples/s', 'step', 'ue', 'dense', 4]['measured'] == pytest.approx(2.0)
  assert got['rows/dense samples/s', 'step', 'ue', 'rows', 4]['measured'] == pytest.approx(2.0)
  assert len(got) == 5


def test_methods_part_times_every_registered_method_against_ue(bench, tmp_path):
  from pep_jax.methods import METHODS
  out = tmp_path / 'bench.json'
  bench.main(['--parts=methods', '--shapes=small', '--models=fm', '--modes=dense', '--steps=2',
              '--repeats=2', '--per-dispatch=2', '--batch-size=64', f'--json={out}'])
  report = json.loads(out.read_text())
  rows = report['rows']
  assert {r['part'] for r in rows} == {'methods'} and {r['repeats'] for r in rows} == {2}
  assert {r['method'] for r in rows} == set(METHODS)
  searches = {r['method'] for r in rows if r['stage'] == 'search'}
  assert searches == {name for name, m in METHODS.items() if m.search_stage is not None}
  (score,) = [r for r in rows if r['stage'] == 'score']  # SSEDS's scoring pass, per batch
  assert score['method'] == 'sseds' and score['steps_per_call'] == 1 and score['ms_per_step'] > 0
  ratios = {(i['method'], i['stage'], i['setting']): i for i in report['ratios']}
  assert len(ratios) == len(rows)
  ue = next(i for (method, _, _), i in ratios.items() if method == 'ue')
  assert ue['measured'] == 1.0
  targets = {(m, s) for (m, s, _), i in ratios.items() if 'meets_target' in i}
  assert targets == set(bench.METHOD_TARGETS)


def test_step_anatomy_removes_parts_of_each_step(tmp_path):
  """Each variant compiles to fewer kernels than the step it leaves parts out of."""
  anatomy = importlib.import_module('experiments.step_anatomy')
  doc = anatomy.main(['--steps=2', '--rounds=1', f'--json={tmp_path / "a.json"}'])
  kernels = {(r['step'], r['variant']): r['kernels'] for r in doc['rows']}
  pep = [kernels[('pep prune', v)] for v in ('whole', 'no count', 'sgd, no count',
                                             'forward only')]
  assert pep == sorted(pep, reverse=True) and len(set(pep)) == 4
  assert kernels[('mgqe S=4 K=64', 'whole')] > kernels[('mgqe S=4 K=64', 'no quantisation')]
  darts = kernels[('dartsemb search {1,2,8}', 'whole')]
  assert darts > kernels[('dartsemb search {1,2,8}', 'one pass')] > kernels[('ue', 'whole')]
  assert all(r['ms_per_step'] > 0 and len(r['ms_per_step_rounds']) == 1 for r in doc['rows'])
  assert json.loads((tmp_path / 'a.json').read_text())['rows'] == doc['rows']
