"""The rows the TFDS builders store (``tfds_builders.good_raw_rows``): every good line of a file,
in order, whatever the file's size against the parser's block."""

from pep_jax.data import criteo, tfds_builders
from test_criteo_reader import random_rows


def test_every_line_of_a_file_of_many_blocks(tmp_path, rng):
  lines = random_rows(rng, 300)
  path = tmp_path / 'train.txt'
  path.write_bytes(b'\n'.join(lines) + b'\n')
  rows = list(tfds_builders.good_raw_rows(criteo, str(path), block_bytes=2048))
  assert len(path.read_bytes()) > 10 * 2048
  assert [number for number, _ in rows] == list(range(1, len(lines) + 1))
  for (_, row), line in zip(rows, lines):
    label, *values = line.split(b'\t')
    assert row['label'] == int(label)
    assert [row[name] for name in criteo.FIELD_NAMES] == values
