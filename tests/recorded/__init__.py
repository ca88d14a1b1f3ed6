"""Recorded summaries of tiny runs, and the comparison the end-to-end tests make with them."""

import json
import os

import pytest

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
