"""Avazu train CSV: header handling, bad lines and vocabularies against a pure-Python reading."""

import json
import os

import pytest

from conftest import check_against_reference, make_config
from pep_jax.data import avazu, real

HEADER = (b'id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,'
          b'app_category,device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,'
          b'C16,C17,C18,C19,C20,C21')


def random_rows(rng, n):
  values = [b'1fbe01fe', b'f3845767', b'28905ebd', b'14102100', b'1005', b'0', b'',
            b'\xe9t\xe9', b'a_long_value_over_8_bytes']
  rows = []
  for i in range(n):
    cols = [str(10**18 + i).encode(), b'1' if rng.random() < 0.2 else b'0']
    cols += [values[int(rng.integers(0, len(values)))] for _ in range(22)]
    rows.append(b','.join(cols))
  return rows


def reference(lines, first_line):
  tokens, labels, bad = [], [], []
  for number, line in enumerate(lines, start=first_line):
    cols = line.split(b',')
    if len(cols) != 24 or cols[1] not in (b'0', b'1'):
      bad.append(number)
      continue
    labels.append(int(cols[1]))
    tokens.append(tuple(cols[2:]))
  return tokens, labels, bad


def messy_lines(rng):
  rows = random_rows(rng, 300)
  lines = rows[:50] + [b'1,0,2'] + rows[50:120]
  lines.append(rows[120].replace(b',0,', b',x,', 1).replace(b',1,', b',x,', 1))  # bad click
  lines += rows[121:] + [rows[0][:30]]  # truncated last line
  return lines


@pytest.mark.parametrize('with_header', [True, False])
def test_avazu_matches_reference(tmp_path, rng, with_header):
  lines = messy_lines(rng)
  text = b'\r\n'.join(([HEADER] if with_header else []) + lines)  # CRLF line ends
  (tmp_path / 'train').write_bytes(text)
  folder = real.prepare(make_config('avazu', tmp_path, min_count=4, max_bad_fraction=0.02))
  tokens, labels, bad = reference([l for l in lines], 2 if with_header else 1)
  meta = json.load(open(os.path.join(folder, 'meta.json')))
  assert meta['num_bad_lines'] == 3
  assert meta['bad_lines'][0]['first_bad_lines'] == bad
  assert meta['reader']['header_missing'] == (not with_header)
  assert meta['field_names'] == list(avazu.FIELD_NAMES) and len(meta['field_dims']) == 22
  check_against_reference(folder, tokens, labels, min_count=4)


def test_wrong_header_is_an_error(tmp_path, rng):
  (tmp_path / 'train').write_bytes(b'a,b,c\n' + b'\n'.join(random_rows(rng, 10)))
  with pytest.raises(ValueError, match=r'train: line 1 is neither the Avazu header'):
    real.prepare(make_config('avazu', tmp_path))


def test_header_only_file(tmp_path):
  (tmp_path / 'train').write_bytes(HEADER + b'\n')
  with pytest.raises(ValueError, match=r'train: the file has no lines'):
    real.prepare(make_config('avazu', tmp_path))
