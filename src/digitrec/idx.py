"""The IDX file format (as used by MNIST) <-> numpy uint8 arrays.

Owns the header and length checks; knows nothing of MNIST's meaning, of torch or of where files live.
An IDX file is: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, one
big-endian uint32 per dimension, then the values in C order.
"""

import gzip
import zlib
from pathlib import Path

import numpy as np

from digitrec.errors import DataError

UBYTE = 0x08
MAX_DIMENSIONS = 4
GZIP_MAGIC = b"\x1f\x8b"


def decode(raw: bytes, name: str) -> np.ndarray:
    """Parse IDX bytes into a uint8 array; `name` is used in error messages."""
    if len(raw) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic number 0x{raw[:4].hex()})")
    if raw[2] != UBYTE:
        raise DataError(f"{name}: unsupported IDX value type 0x{raw[2]:02x} (expected 0x08, unsigned byte)")
    ndim = raw[3]
    if not 1 <= ndim <= MAX_DIMENSIONS:
        raise DataError(f"{name}: IDX header claims {ndim} dimensions (expected 1 to {MAX_DIMENSIONS})")
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise DataError(f"{name}: truncated header: expected {header_bytes} bytes, got {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected_bytes = header_bytes + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected_bytes:
        problem = "truncated" if len(raw) < expected_bytes else "trailing bytes"
        raise DataError(
            f"{name}: {problem}: shape {'x'.join(map(str, shape))} needs {expected_bytes} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape)


def encode(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array (the inverse of `decode`)."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX encoding supports uint8 only, got {array.dtype}")
    if not 1 <= array.ndim <= MAX_DIMENSIONS:
        raise ValueError(f"IDX encoding supports 1 to {MAX_DIMENSIONS} dimensions, got {array.ndim}")
    header = bytes([0, 0, UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()


def read_bytes(path: Path) -> bytes:
    """The uncompressed bytes of an IDX file on disk (see `gunzip`)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None
    return gunzip(raw, path.name)


def gunzip(raw: bytes, name: str) -> bytes:
    """`raw` decompressed when it starts with the gzip magic number, else as it is."""
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{name}: corrupt or truncated gzip stream ({error})") from None
