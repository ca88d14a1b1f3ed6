"""Malformed raw files, generated: each dataset's encoder and predict never crash on them.

Good lines of each format are damaged at random (truncated, a separator added or removed, the
label replaced, bytes that are not UTF-8 inserted, lines emptied) and written as a file. Then:

* the encoder (the one the cache build and ``predict`` share) raises nothing but a
  :class:`pep_jax.errors.UserError`, and every line is either kept (a row of keys) or counted as
  bad with its line number, never silently lost; a line left intact is always kept, an empty
  line, a line with the wrong number of columns or a label outside 0/1 never is;
* ``predict`` refuses a file with a bad line with one ``InputError`` that names a bad line,
  and writes nothing.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from pep_jax import predict
from pep_jax.data import avazu, criteo, movielens, parsing
from pep_jax.errors import InputError, UserError

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

digits = st.integers(0, 10**6).map(lambda v: b'%d' % v)
hexes = st.binary(min_size=4, max_size=4).map(lambda b: b.hex().encode())


def criteo_line(draw) -> bytes:
  label = draw(st.sampled_from([b'0', b'1']))
  ints = draw(st.lists(st.one_of(st.just(b''), digits), min_size=13, max_size=13))
  cats = draw(st.lists(st.one_of(st.just(b''), hexes), min_size=26, max_size=26))
  return b'\t'.join([label, *ints, *cats])


def avazu_line(draw) -> bytes:
  cols = [draw(digits), draw(st.sampled_from([b'0', b'1'])), b'14102100']
  cols += draw(st.lists(st.one_of(st.just(b''), hexes), min_size=21, max_size=21))
  return b','.join(cols)


def movielens_line(draw) -> bytes:
  return b'%d::%d::%d::%d' % (draw(st.integers(1, 4)), draw(st.integers(1, 4)),
                              draw(st.sampled_from([1, 2, 4, 5])),
                              978300000 + draw(st.integers(0, 10**6)))


FORMATS = {  # name: (module, line strategy, separator, label column, columns)
    'criteo': (criteo, criteo_line, b'\t', 0, 40),
    'avazu': (avazu, avazu_line, b',', 1, 24),
    'movielens': (movielens, movielens_line, b'::', 2, 4),
}

DAMAGES = ('none', 'truncate', 'extra_separator', 'drop_separator', 'bad_label', 'not_utf8')


@st.composite
def damaged_file(draw, name):
  """``(lines, damage of each line)``: good lines of ``name``, some of them damaged."""
  _, line, sep, label_col, _ = FORMATS[name]
  lines, damages = [], []
  for _ in range(draw(st.integers(1, 12))):
    good = line(draw)
    damage = draw(st.sampled_from(DAMAGES))
    cols = good.split(sep)
    if damage == 'truncate':
      good = good[:draw(st.integers(0, len(good) - 1))]
    elif damage == 'extra_separator':
      cols.insert(draw(st.integers(0, len(cols))), b'')
      good = sep.join(cols)
    elif damage == 'drop_separator':
      i = draw(st.integers(0, len(cols) - 2))
      good = sep.join(cols[:i] + [cols[i] + cols[i + 1]] + cols[i + 2:])
    elif damage == 'bad_label':
      cols[label_col] = draw(st.sampled_from(
          [b'0', b'6', b'x', b'', b'-1', b'2.5'] if name == 'movielens'  # ratings are 1..5
          else [b'2', b'x', b'', b'-1', b'0.5']))
      good = sep.join(cols)
    elif damage == 'not_utf8':
      cols[-1] = cols[-1] + b'\xff\xfe'
      good = sep.join(cols)
    lines.append(good)
    damages.append(damage)
  return lines, damages


USERS = b'1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::\n4::F::45::7::02460\n'
MOVIES = (b'1::Toy Story (1995)::Animation|Comedy\n2::Heat (1995)::Action\n'
          b'3::No Year Movie::\n4::Caf\xe9 (1995)::Drama\n')


def write(folder, name, lines) -> str:
  os.makedirs(folder, exist_ok=True)
  if name == 'movielens':
    with open(os.path.join(folder, 'users.dat'), 'wb') as f:
      f.write(USERS)
    with open(os.path.join(folder, 'movies.dat'), 'wb') as f:
      f.write(MOVIES)
  path = os.path.join(folder, f'rows_{name}.txt')
  with open(path, 'wb') as f:
    f.write(b'\n'.join(lines) + (b'\n' if lines else b''))
  return path


def encode(name, path, labelled=True) -> tuple[int, int, list[int]]:
  """Rows kept, lines counted bad and the bad line numbers recorded (1-based, the first
  ``parsing.MAX_BAD_EXAMPLES``) of ``path``, by the dataset's encoder."""
  module = FORMATS[name][0]
  bad: list[parsing.BadLines] = []
  meta = {'reader': {'timestamp_min': 978300000}} if name == 'movielens' else None
  kept = sum(len(chunk.labels) for chunk in module.encode(path, bad, {}, labelled=labelled,
                                                          meta=meta))
  lines = sorted(line for report in bad for line, _ in report.examples)
  count = sum(report.count for report in bad)
  return kept, count, lines


@pytest.mark.parametrize('name', sorted(FORMATS))
def test_every_line_is_kept_or_counted(name, tmp_path):
  @SETTINGS
  @given(damaged_file(name))
  def check(case):
    lines, damages = case
    assume(sum(d != 'none' for d in damages) <= parsing.MAX_BAD_EXAMPLES)  # all recorded
    path = write(str(tmp_path / 'f'), name, lines)
    try:
      kept, count, bad_lines = encode(name, path)
    except UserError:
      return  # refused as a whole with a one-line message (e.g. an Avazu line 1 that is neither)
    assert kept + count == len(lines), (kept, count, lines)
    for i, damage in enumerate(damages):
      if not lines[i]:  # an empty line is a bad line too
        assert i + 1 in bad_lines, (i, lines)
        continue
      sep, columns = FORMATS[name][2], FORMATS[name][4]
      if damage == 'none':
        assert i + 1 not in bad_lines, (i, lines[i])
      if len(lines[i].split(sep)) != columns:
        assert i + 1 in bad_lines, (i, lines[i])
      if damage == 'bad_label' and len(lines[i].split(sep)) == columns:
        assert i + 1 in bad_lines, (i, lines[i])

  check()


@pytest.mark.parametrize('name', sorted(FORMATS))
def test_an_empty_file_is_refused_or_empty(name, tmp_path):
  path = write(str(tmp_path), name, [])
  try:
    kept, count, _ = encode(name, path)
  except UserError:
    return
  assert kept == count == 0


@pytest.mark.parametrize('name', sorted(FORMATS))
def test_predict_refuses_a_file_with_a_bad_line_and_writes_nothing(name, tmp_path):
  @SETTINGS
  @given(damaged_file(name))
  def check(case):
    lines, damages = case
    assume(any(d != 'none' and line for d, line in zip(damages, lines)))
    folder = str(tmp_path / 'p')
    path = write(folder, name, lines)
    meta = {'reader': {'timestamp_min': 978300000}} if name == 'movielens' else {}
    try:  # as predict reads it: with or without the label column, as line 1 says
      _, count, bad_lines = encode(name, path, labelled=None)
    except UserError:
      count, bad_lines = 1, []
    if count == 0:
      return  # every damage left a valid line (e.g. a row read as one without its label)
    with pytest.raises(InputError) as error:
      predict.raw_keys(path, name, meta)
    message = str(error.value)
    assert '\n' not in message
    assert not bad_lines or str(bad_lines[0]) in message

  check()
