"""Recorded summaries of tiny runs, and the comparison the end-to-end tests make with them."""

import json
import os

import jax
import numpy as np
import pytest

from pep_jax import workdir as wd
from pep_jax.data import load_dataset
from pep_jax.train.setup import build_stage

HERE = os.path.dirname(os.path.abspath(__file__))
# Within these of the recorded run: float32 sums in another order (another JAX or CPU) move a
# tiny model's AUC by 1e-4 and a ticket by a few entries; a regression (a wrong gradient, a
# mask not applied, a wrong rewind) moves them by far more.
AUC_TOLERANCE = 2e-3
SIZE_TOLERANCE = 0.01  # relative, on params, bytes and non-zeros


def recorded(name: str) -> list[dict]:
  with open(os.path.join(HERE, f'{name}.json')) as f:
    return json.load(f)['rows']


def assert_like_recorded(rows: list[dict], name: str) -> None:
  """Each row matches the recorded run's row of the same method and setting."""
  expected = {(r['method'], r['setting']): r for r in recorded(name)}
  got = {(r['method'], r['setting']): r for r in rows}
  assert got.keys() == expected.keys()
  for key, row in got.items():
    want = expected[key]
    for column in ('valid_auc', 'test_auc'):
      assert row[column] == pytest.approx(want[column], abs=AUC_TOLERANCE), (key, column)
    for column in ('params', 'bytes', 'nonzeros'):
      if want.get(column) is not None:
        assert row[column] == pytest.approx(want[column], rel=SIZE_TOLERANCE), (key, column)


def recorded_tickets(name: str) -> list[dict]:
  with open(os.path.join(HERE, f'{name}.json')) as f:
    return json.load(f)['tickets']


def tickets_of(config, workdir: str) -> list[dict]:
  """Every ticket of a finished run, largest budget first: its budget, step, non-zeros,
  per-field sizes, and its mask over the real rows (``[features, D]`` bits, packed, as hex)."""
  data = load_dataset(config.data)
  stage = build_stage(config, data, 'masked')
  table = stage.abstract_state().params['embedding']['table']
  target = jax.ShapeDtypeStruct(table.shape, bool, sharding=stage.row_sharding)
  out = []
  for t in wd.find_tickets(workdir):
    mask = np.asarray(wd.load_ticket_mask(workdir, t, target))[:data.num_features]
    out.append({**{k: t[k] for k in ('budget', 'step', 'nonzeros', 'field_mean_size')},
                'mask_shape': list(mask.shape), 'mask': np.packbits(mask).tobytes().hex()})
  return out


def unpack_mask(ticket: dict):
  shape = tuple(ticket['mask_shape'])
  bits = np.unpackbits(np.frombuffer(bytes.fromhex(ticket['mask']), np.uint8))
  return bits[:int(np.prod(shape))].reshape(shape).astype(bool)


# A ticket cut on another platform (a GPU's or TPU's float32 sums in another order) crosses its
# budget within a few steps of the recorded one and keeps nearly the same entries; a wrong
# threshold gradient or mask moves the step by epochs and the entries by far more.
TICKET_STEP_TOLERANCE = 0.1  # relative
MASK_AGREEMENT = 0.97  # fraction of the table's entries kept or dropped alike


def assert_tickets_like_recorded(tickets: list[dict], name: str) -> None:
  """The tickets of a run match the recorded run's: the same budgets, the step within 10%,
  non-zeros within 1%, per-field sizes within 5% and 97% of the mask's entries the same."""
  want = {t['budget']: t for t in recorded_tickets(name)}
  got = {t['budget']: t for t in tickets}
  assert got.keys() == want.keys()
  for budget, ticket in got.items():
    expected = want[budget]
    assert ticket['step'] == pytest.approx(expected['step'], rel=TICKET_STEP_TOLERANCE), budget
    assert ticket['nonzeros'] == pytest.approx(expected['nonzeros'], rel=SIZE_TOLERANCE), budget
    np.testing.assert_allclose(ticket['field_mean_size'], expected['field_mean_size'], rtol=0.05)
    agreement = np.mean(unpack_mask(ticket) == unpack_mask(expected))
    assert agreement >= MASK_AGREEMENT, (budget, agreement)
