"""The corrections store: the digits a person told digitrec it misread, kept in one SQLite file.

Each correction holds the original image (as PNG bytes, at most MAX_IMAGE_BYTES), the 28x28 input the
model saw (784 bytes, 0..255), the right label, what the model answered and which model that was, where
it came from (`page`, `cli`, `import`), when, and for a digit of a number its box in the number's image.
The file is the user's data folder's `corrections.sqlite3` (platformdirs), or `--db PATH` /
$DIGITREC_DB. It holds at most MAX_CORRECTIONS.

Safe under concurrent writers (server requests, a CLI at the same time): WAL mode, one short connection
per operation, writes in `BEGIN IMMEDIATE` transactions (so the count checked against the cap is the
count the insert sees), and a busy timeout before "locked" is reported. Schema versioned by
`PRAGMA user_version` and marked by `PRAGMA application_id`. A database that cannot be used (a folder,
locked, read-only, damaged, another program's, or from a newer digitrec) is one `StoreError` and is
never changed, recreated or emptied: nothing stored is lost.

Not owned here: reading images into corrections (teach.py) and learning from them (personal.py).
"""

import contextlib
import io
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import platformdirs

from digitrec.errors import ImageError, NoSuchCorrection, StoreError, StoreFull
from digitrec.preprocess import FIELD_SIDE, WORKING_SIDE, load_image, to_png

DB_VARIABLE = "DIGITREC_DB"
DB_NAME = "corrections.sqlite3"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x64726563  # "drec": marks a digitrec corrections database among SQLite files
MAX_CORRECTIONS = 10_000
MAX_IMAGE_BYTES = 2 * 1024 * 1024  # the web upload limit; larger originals are stored shrunk (see `stored_png`)
SOURCES = ("page", "cli", "import")
BUSY_SECONDS = 5.0  # how long a write waits for another writer before the database is reported locked

SCHEMA = f"""
CREATE TABLE corrections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so an id removed stays removed
    label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
    answer INTEGER CHECK (answer BETWEEN 0 AND 9),  -- what the model read; NULL when not known
    model TEXT,  -- the name of the model that answered
    source TEXT NOT NULL CHECK (source IN {SOURCES}),
    created TEXT NOT NULL,  -- UTC, ISO 8601
    image BLOB NOT NULL CHECK (length(image) <= {MAX_IMAGE_BYTES}),  -- PNG
    input BLOB NOT NULL CHECK (length(input) = {FIELD_SIDE * FIELD_SIDE}),  -- 28x28 uint8, what the model saw
    box TEXT  -- a digit of a number: "x,y,width,height" in the number's image
);
"""


def default_path() -> Path:
    """$DIGITREC_DB, or the user's data folder's corrections.sqlite3 (~/.local/share/digitrec on Linux)."""
    return Path(os.environ.get(DB_VARIABLE) or Path(platformdirs.user_data_dir("digitrec")) / DB_NAME).expanduser()


@dataclass(frozen=True)
class Correction:
    id: int
    label: int
    answer: int | None
    model: str | None
    source: str
    created: str
    image: bytes  # PNG
    input: np.ndarray  # (28, 28) float32 in 0..1
    box: tuple[int, int, int, int] | None = None

    def summary(self) -> dict:
        """Everything but the pictures, as JSON types."""
        return {
            "id": self.id,
            "label": self.label,
            "answer": self.answer,
            "model": self.model,
            "source": self.source,
            "created": self.created,
            "box": list(self.box) if self.box else None,
        }


@dataclass(frozen=True)
class NewCorrection:
    """A correction to store: the original image's bytes (any format `preprocess` reads), the 28x28 input."""

    image: bytes
    input: np.ndarray  # (28, 28) in 0..1
    label: int
    answer: int | None = None
    model: str | None = None
    source: str = "cli"
    box: tuple[int, int, int, int] | None = None


def stored_png(image: bytes) -> bytes:
    """The original image as the store keeps it: PNG bytes as they are when at most MAX_IMAGE_BYTES; any
    other format, or a larger PNG, re-encoded as PNG at most WORKING_SIDE px on a side (all that
    `preprocess` uses of it anyway)."""
    if image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) <= MAX_IMAGE_BYTES:
        return image
    picture = load_image(image, "image")
    picture.thumbnail((WORKING_SIDE, WORKING_SIDE))
    if picture.mode not in ("1", "L", "LA", "RGB", "RGBA", "P"):
        picture = picture.convert("RGBA")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    if buffer.tell() > MAX_IMAGE_BYTES:  # cannot happen at 400x400 RGBA (640 kB raw), kept as the promise
        raise ImageError(f"the image is over {MAX_IMAGE_BYTES // 1024} KiB even as a 400 px PNG")
    return buffer.getvalue()


def input_bytes(pixels: np.ndarray) -> bytes:
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.shape != (FIELD_SIDE, FIELD_SIDE) or not np.isfinite(pixels).all():
        raise ImageError(f"a correction's input must be a finite {FIELD_SIDE}x{FIELD_SIDE} array, not {pixels.shape}")
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8).tobytes()


def check_label(label: object) -> int:
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label <= 9:
        raise ImageError(f"a label is one digit 0-9, not {label!r}")
    return int(label)


class Store:
    """The corrections database at `path` (default: `default_path()`); created, with its folder, when missing."""

    def __init__(self, path: str | Path | None = None, busy_seconds: float = BUSY_SECONDS):
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.busy_seconds = busy_seconds
        self.ready = False

    # ---- opening

    @contextlib.contextmanager
    def connect(self, write: bool) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction (IMMEDIATE for writes: the write lock first), committed on success;
        any SQLite failure becomes a StoreError naming the file and what to do."""
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a corrections database; give --db a file path")
        if not self.path.exists():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(f"{self.path}: cannot create its folder ({error.strerror})") from None
        connection = None
        try:
            connection = sqlite3.connect(self.path, timeout=self.busy_seconds, isolation_level=None)
            if not self.ready:
                self.prepare(connection)
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield connection
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection is not None and connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            raise StoreError(self.explain(error)) from None
        except BaseException:
            if connection is not None and connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            raise
        finally:
            if connection is not None:
                connection.close()

    def explain(self, error: sqlite3.Error) -> str:
        text = str(error)
        if "locked" in text or "busy" in text:
            return (
                f"{self.path}: the corrections database is locked by another program (waited "
                f"{self.busy_seconds:g} s); try again when it is done"
            )
        if "readonly" in text or "read-only" in text:
            return f"{self.path}: the corrections database is read-only; make it writable or give another --db"
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return (
                f"{self.path}: the corrections database is damaged ({text}); it was left as it is: move it "
                f"aside (or repair it with sqlite3's .recover) and give another --db"
            )
        if "unable to open" in text:
            return f"{self.path}: cannot open the corrections database ({text}); check the folder's permissions"
        return f"{self.path}: the corrections database failed: {text}"

    def prepare(self, connection: sqlite3.Connection) -> None:
        """Check the schema (creating it in a new, empty database) and switch to WAL mode."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            application = connection.execute("PRAGMA application_id").fetchone()[0]
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and application == 0 and not tables:
                connection.execute(SCHEMA)
                connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif application != APPLICATION_ID:
                raise StoreError(
                    f"{self.path}: not a digitrec corrections database (another program's SQLite file); "
                    f"give another --db"
                )
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: written by a newer digitrec (schema {version}; this one reads up to "
                    f"{SCHEMA_VERSION}); upgrade digitrec or give another --db"
                )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            connection.execute("PRAGMA journal_mode = WAL")
        self.ready = True

    # ---- reading

    def count(self) -> int:
        with self.connect(write=False) as connection:
            return connection.execute("SELECT count(*) FROM corrections").fetchone()[0]

    def all(self) -> list[Correction]:
        """Every correction, oldest first."""
        with self.connect(write=False) as connection:
            rows = connection.execute(f"SELECT {COLUMNS} FROM corrections ORDER BY id").fetchall()
        return [from_row(row) for row in rows]

    def get(self, correction_id: int) -> Correction:
        with self.connect(write=False) as connection:
            row = connection.execute(f"SELECT {COLUMNS} FROM corrections WHERE id = ?", (correction_id,)).fetchone()
        if row is None:
            raise NoSuchCorrection(f"no correction with id {correction_id} in {self.path}")
        return from_row(row)

    def training_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every correction's input (N, 28, 28) float32, label (N,) int64 and id (N,) int64, oldest first."""
        with self.connect(write=False) as connection:
            rows = connection.execute("SELECT input, label, id FROM corrections ORDER BY id").fetchall()
        inputs = np.frombuffer(b"".join(row[0] for row in rows), np.uint8).reshape(-1, FIELD_SIDE, FIELD_SIDE)
        return (
            inputs.astype(np.float32) / 255,
            np.array([row[1] for row in rows], np.int64),
            np.array([row[2] for row in rows], np.int64),
        )

    # ---- writing

    def add(self, correction: NewCorrection) -> int:
        return self.add_many([correction])[0]

    def add_many(self, corrections: Sequence[NewCorrection]) -> list[int]:
        """Store `corrections` all together or none of them (the digits of one number); their new ids."""
        rows = [row_of(correction) for correction in corrections]  # checked before the database is touched
        with self.connect(write=True) as connection:
            held = connection.execute("SELECT count(*) FROM corrections").fetchone()[0]
            if held + len(rows) > MAX_CORRECTIONS:
                raise StoreFull(
                    f"{self.path}: the corrections database holds {held:,} corrections, and at most "
                    f"{MAX_CORRECTIONS:,} are kept; remove some first (digitrec teach remove ID...)"
                )
            return [
                connection.execute(
                    "INSERT INTO corrections (label, answer, model, source, created, image, input, box) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                ).lastrowid
                for row in rows
            ]

    def remove(self, ids: Sequence[int]) -> None:
        """Remove the corrections `ids`, all or none: an id the database does not hold removes nothing."""
        with self.connect(write=True) as connection:
            found = {
                row[0]
                for row in connection.execute(
                    f"SELECT id FROM corrections WHERE id IN ({','.join('?' * len(ids))})", list(ids)
                )
            }
            missing = [str(i) for i in ids if i not in found]
            if missing:
                raise NoSuchCorrection(f"no correction with id {', '.join(missing)} in {self.path}; nothing removed")
            connection.executemany("DELETE FROM corrections WHERE id = ?", [(i,) for i in ids])


COLUMNS = "id, label, answer, model, source, created, image, input, box"


def row_of(correction: NewCorrection) -> tuple:
    if correction.source not in SOURCES:
        raise ImageError(f"a correction's source is one of {', '.join(SOURCES)}, not {correction.source!r}")
    answer = None if correction.answer is None else check_label(correction.answer)
    box = ",".join(str(int(v)) for v in correction.box) if correction.box is not None else None
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        check_label(correction.label),
        answer,
        correction.model,
        correction.source,
        created,
        stored_png(correction.image),
        input_bytes(correction.input),
        box,
    )


def from_row(row: tuple) -> Correction:
    identifier, label, answer, model, source, created, image, pixels, box = row
    inputs = np.frombuffer(pixels, np.uint8).reshape(FIELD_SIDE, FIELD_SIDE).astype(np.float32) / 255
    return Correction(
        identifier,
        label,
        answer,
        model,
        source,
        created,
        bytes(image),
        inputs,
        tuple(int(v) for v in box.split(",")) if box else None,
    )


def input_png(correction: Correction) -> bytes:
    """The 28x28 input the model saw, as PNG (the page's thumbnails)."""
    return to_png(correction.input)
