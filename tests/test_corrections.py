"""The corrections store: a real SQLite file in a temporary folder, concurrent writers, and every way the
database can be unusable, each one clear error that changes nothing."""

import io
import multiprocessing
import os
import sqlite3
import subprocess

import numpy as np
import pytest
from PIL import Image

from digitrec import corrections
from digitrec.corrections import MAX_IMAGE_BYTES, NewCorrection, Store
from digitrec.errors import ImageError, NoSuchCorrection, StoreError, StoreFull


def png(side: int = 56, mode: str = "L") -> bytes:
    picture = Image.new(mode, (side, side), "white")
    picture.paste("black", (side // 3, side // 5, side // 2, 4 * side // 5))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def correction(label: int = 7, **changes) -> NewCorrection:
    pixels = np.zeros((28, 28), np.float32)
    pixels[4:24, 12:16] = 1.0
    pixels[5, 5] = 0.5
    return NewCorrection(
        **{"image": png(), "input": pixels, "label": label, "answer": 1, "model": "fast", "source": "cli", **changes}
    )


def test_a_correction_is_kept_with_its_image_input_label_answer_model_source_and_time(tmp_path):
    store = Store(tmp_path / "nested" / "corrections.sqlite3")
    identifier = store.add(correction(box=(3, 4, 50, 60)))
    kept = Store(store.path).get(identifier)  # a new Store: read back from the file
    assert (kept.label, kept.answer, kept.model, kept.source, kept.box) == (7, 1, "fast", "cli", (3, 4, 50, 60))
    assert kept.image == png() and kept.created.endswith("+00:00")
    assert kept.input.shape == (28, 28) and kept.input[10, 13] == 1.0 and abs(kept.input[5, 5] - 0.5) < 1 / 255
    with sqlite3.connect(store.path) as connection:  # WAL, versioned, marked as ours
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == corrections.SCHEMA_VERSION
        assert connection.execute("PRAGMA application_id").fetchone()[0] == corrections.APPLICATION_ID


def test_the_default_path_is_digitrec_db_else_the_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITREC_DB", str(tmp_path / "mine.sqlite3"))
    assert Store().path == tmp_path / "mine.sqlite3"
    monkeypatch.delenv("DIGITREC_DB")
    assert Store().path.name == "corrections.sqlite3" and "digitrec" in str(Store().path.parent)


def test_jpeg_and_oversized_originals_are_stored_as_png_within_the_cap(tmp_path):
    store = Store(tmp_path / "c.sqlite3")
    buffer = io.BytesIO()
    Image.new("L", (900, 700), "white").save(buffer, format="JPEG")
    noisy = io.BytesIO()  # a PNG over the cap: random pixels do not compress
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)).save(
        noisy, format="PNG"
    )
    assert noisy.tell() > MAX_IMAGE_BYTES
    for original in (buffer.getvalue(), noisy.getvalue()):
        kept = store.get(store.add(correction(image=original))).image
        assert kept.startswith(b"\x89PNG") and len(kept) <= MAX_IMAGE_BYTES
        assert max(Image.open(io.BytesIO(kept)).size) <= 400


@pytest.mark.parametrize("label", [-1, 10, 7.0, True, "7"])
def test_a_label_outside_0_to_9_is_refused_and_nothing_is_stored(tmp_path, label):
    store = Store(tmp_path / "c.sqlite3")
    with pytest.raises(ImageError, match="a label is one digit 0-9"):
        store.add(correction(label=label))
    assert store.count() == 0


def test_the_digits_of_a_number_are_stored_all_or_none(tmp_path):
    store = Store(tmp_path / "c.sqlite3")
    with pytest.raises(ImageError):
        store.add_many([correction(label=2), correction(label=11)])
    assert store.count() == 0
    assert store.add_many([correction(label=2), correction(label=0)]) == [1, 2]


def test_remove_takes_ids_all_or_none_and_ids_are_never_reused(tmp_path):
    store = Store(tmp_path / "c.sqlite3")
    first, second = store.add(correction()), store.add(correction(label=3))
    with pytest.raises(NoSuchCorrection, match="no correction with id 99 .*; nothing removed"):
        store.remove([first, 99])
    assert store.count() == 2
    store.remove([second])
    assert [c.id for c in store.all()] == [first]
    assert store.add(correction()) == second + 1


def test_the_10001st_correction_is_refused_and_the_10000_are_kept(tmp_path, monkeypatch):
    store = Store(tmp_path / "c.sqlite3")
    store.add_many([correction(label=i % 10) for i in range(corrections.MAX_CORRECTIONS)])
    with pytest.raises(StoreFull, match="holds 10,000 corrections, and at most 10,000 are kept; remove some first"):
        store.add(correction())
    assert store.count() == corrections.MAX_CORRECTIONS
    images, labels, _ = store.training_set()
    assert images.shape == (10_000, 28, 28) and labels[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def add_from_process(path: str, label: int, count: int) -> None:
    store = Store(path)
    for _ in range(count):
        store.add(correction(label=label))


def test_two_writers_at_once_lose_nothing(tmp_path):
    path = tmp_path / "c.sqlite3"
    Store(path).count()  # created first, as a server does before its requests come
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=add_from_process, args=(str(path), label, 40)) for label in (3, 8)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    kept = Store(path).all()
    assert len(kept) == 80 and len({c.id for c in kept}) == 80
    assert sorted(c.label for c in kept) == [3] * 40 + [8] * 40


def test_a_folder_as_the_database_is_one_clear_error(tmp_path):
    with pytest.raises(StoreError, match="is a folder, not a corrections database; give --db a file path"):
        Store(tmp_path).count()


def test_a_damaged_database_is_one_clear_error_and_left_as_it_was(tmp_path):
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"not a database at all, but a person's notes" * 100)
    with pytest.raises(StoreError, match="is damaged .*it was left as it is"):
        Store(path).add(correction())
    assert path.read_bytes() == b"not a database at all, but a person's notes" * 100


def test_another_programs_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
        connection.execute("INSERT INTO notes VALUES ('keep me')")
    with pytest.raises(StoreError, match="not a digitrec corrections database"):
        Store(path).all()
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT text FROM notes").fetchall() == [("keep me",)]


def test_a_database_from_a_newer_digitrec_is_refused_with_its_rows_kept(tmp_path):
    path = tmp_path / "c.sqlite3"
    Store(path).add(correction())
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 2")
    with pytest.raises(StoreError, match=r"written by a newer digitrec \(schema 2; this one reads up to 1\)"):
        Store(path).add(correction())
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM corrections").fetchone()[0] == 1


def test_a_locked_database_is_one_clear_error_and_the_rows_survive(tmp_path):
    path = tmp_path / "c.sqlite3"
    Store(path).add(correction())
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match=r"locked by another program \(waited 0.2 s\)"):
            Store(path, busy_seconds=0.2).add(correction())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert Store(path).count() == 1


def make_read_only(path, read_only: bool) -> None:
    """chmod for a user; for root, who writes whatever the mode says, the immutable attribute (chattr)."""
    if os.geteuid() != 0:
        path.chmod(0o444 if read_only else 0o644)
        return
    done = subprocess.run(
        ["chattr", "+i" if read_only else "-i", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"running as root without chattr: {done.stderr.strip()}")


def test_a_read_only_database_can_be_listed_but_a_write_is_one_clear_error(tmp_path):
    path = tmp_path / "c.sqlite3"
    Store(path).add(correction())
    make_read_only(path, True)
    try:
        assert len(Store(path).all()) == 1
        with pytest.raises(
            StoreError, match="the corrections database is read-only; make it writable or give another --db"
        ):
            Store(path).add(correction())
        with pytest.raises(StoreError, match="read-only"):
            Store(path).remove([1])
    finally:
        make_read_only(path, False)
    assert Store(path).count() == 1
