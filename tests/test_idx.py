import gzip

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from digitrec import idx
from digitrec.errors import DataError

shapes = st.lists(st.integers(0, 6), min_size=1, max_size=4).map(tuple)


@given(arrays(np.uint8, shapes))
def test_encode_then_decode_round_trips_any_uint8_array(array):
    decoded = idx.decode(idx.encode(array), "x")
    assert decoded.shape == array.shape
    assert np.array_equal(decoded, array)


def test_header_matches_the_published_mnist_layout():
    raw = idx.encode(np.zeros((2, 28, 28), np.uint8))
    assert raw[:4] == bytes([0, 0, 8, 3])  # magic 2051 for images
    assert int.from_bytes(raw[4:8], "big") == 2 and int.from_bytes(raw[8:12], "big") == 28
    assert len(raw) == 16 + 2 * 784


def test_truncated_data_is_rejected_with_name_and_sizes():
    raw = idx.encode(np.ones((10, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"images\.idx: truncated: shape 10x28x28 needs 7856 bytes, got 7000"):
        idx.decode(raw[:7000], "images.idx")


def test_trailing_bytes_are_rejected():
    with pytest.raises(DataError, match="trailing bytes"):
        idx.decode(idx.encode(np.ones(5, np.uint8)) + b"\0", "labels")


def test_wrong_magic_is_rejected():
    with pytest.raises(DataError, match="not an IDX file"):
        idx.decode(b"\x89PNG\r\n\x1a\n" + bytes(100), "picture.png")


def test_unsupported_value_type_is_rejected():
    raw = bytearray(idx.encode(np.ones(5, np.uint8)))
    raw[2] = 0x0D  # float32
    with pytest.raises(DataError, match="unsupported IDX value type 0x0d"):
        idx.decode(bytes(raw), "floats")


def test_truncated_header_and_tiny_files_are_rejected():
    with pytest.raises(DataError, match="too short"):
        idx.decode(b"\0\0", "tiny")
    with pytest.raises(DataError, match="truncated header"):
        idx.decode(bytes([0, 0, 8, 3, 0, 0]), "header")


def test_truncated_gzip_stream_is_rejected_with_the_file_name(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx.encode(np.arange(200, dtype=np.uint8)))[:-30])
    with pytest.raises(DataError, match=r"labels\.gz: corrupt or truncated gzip"):
        idx.read_bytes(path)
