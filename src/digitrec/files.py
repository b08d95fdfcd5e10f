"""Files: writing so that a reader never sees half of one (a temporary file, then a rename), and where
the package's own bundled models live."""

import os
import tempfile
from pathlib import Path

from digitrec.errors import OutputError

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_MODEL = BUNDLED_DIR / "default"  # weights.safetensors, and the same model as model.onnx
BUNDLED_ONNX = BUNDLED_MODEL / "model.onnx"
BUNDLED_INT8 = BUNDLED_MODEL / "model.int8.onnx"  # its int8 copy, for batched prediction (digitrec.quantize)
BUNDLED_READER = BUNDLED_DIR / "reader"  # the number reader (reading.py), as weights.safetensors and model.onnx
BUNDLED_READER_ONNX = BUNDLED_READER / "model.onnx"

UMASK = os.umask(0)
os.umask(UMASK)


def write_atomic(path: Path, content: bytes | str) -> None:
    """Write `content` to `path` via a temporary file in the same directory and an atomic rename.

    A place that cannot be written (read-only, a full disk) is an `OutputError` naming `path`; the
    previous file, if any, is then untouched.
    """
    data = content.encode() if isinstance(content, str) else content
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as part:
            try:
                part.write(data)
                part.flush()
                os.fsync(part.fileno())
                part.close()
                os.chmod(part.name, 0o666 & ~UMASK)  # temporary files are private; the result should not be
                os.replace(part.name, path)
            finally:
                Path(part.name).unlink(missing_ok=True)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputError(f"{path}: cannot write ({reason})", reason) from None
