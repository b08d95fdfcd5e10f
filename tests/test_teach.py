"""`digitrec teach` end to end on real MNIST digits the bundled default misreads: add -> list -> export ->
add back -> learn -> predict with the personal model; the personal recipe; killing learn halfway."""

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digitrec import checkpoint, models, personal, rundir, train
from digitrec.corrections import NewCorrection, Store
from digitrec.errors import ConfigError
from digitrec.recognizer import Recognizer

from helpers import run

LEARN_STEPS = 60  # enough for a handful of corrections; the recipe's 300 are measured in bench/teach.py
SOURCE = Path(__file__).resolve().parents[1] / "src"


def as_png(pixels: np.ndarray) -> bytes:
    """A 28x28 MNIST digit (0..1, white on black) as a person's image: dark ink on white, 112 px."""
    buffer = io.BytesIO()
    Image.fromarray(255 - (pixels * 255).astype(np.uint8)).resize((112, 112), Image.Resampling.BICUBIC).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def misread(mnist, tmp_path_factory) -> list[tuple[Path, int, int]]:
    """Six MNIST test digits the bundled default reads wrong as PNG files: (path, true label, its answer)."""
    model = checkpoint.load(None).model
    answers = models.logits_in_batches(model, mnist.test.images).argmax(1)
    folder = tmp_path_factory.mktemp("misread")
    recognizer = Recognizer.load()
    found = []
    for index in torch.nonzero(answers != mnist.test.labels).flatten().tolist():
        path = folder / f"test-{index}.png"
        path.write_bytes(as_png(mnist.test.images[index, 0].numpy()))
        answer, label = recognizer.predict(path).digit, int(mnist.test.labels[index])
        if answer != label:  # still misread as a person's image (preprocess frames it again)
            found.append((path, label, answer))
    assert len(found) >= 6
    return found[:6]


def test_the_personal_recipe_is_refused_by_train_and_needs_a_model_with_one():
    with pytest.raises(
        ConfigError, match="recipe 'personal' teaches a trained model your corrections: digitrec teach learn"
    ):
        train.resolve_config("fast", "personal")
    with pytest.raises(ConfigError, match="model 'cnn' has no personal recipe"):
        personal.personal_config({"model": "cnn"})
    with pytest.raises(ConfigError, match="model 'reader' reads whole numbers; a personal model starts from a digit"):
        personal.personal_config({"model": "reader"})
    config = personal.personal_config({"model": "fast", "width": 32, "pool_first": True})
    assert (config.recipe, config.width, config.pool_first, config.steps) == ("personal", 32, True, 300)


def test_held_out_share_keeps_two_corrections_of_each_digit_to_learn_from():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 5)
    mask = personal.held_out(labels)
    assert mask[:10].sum() == 2 and mask[10:13].sum() == 0 and mask[13:].sum() == 1
    assert (personal.held_out(labels) == mask).all()  # the same share every time


@pytest.mark.slow
def test_add_list_export_add_back_learn_and_the_personal_model_reads_them_right(misread, tmp_path):
    first, second = tmp_path / "first.sqlite3", tmp_path / "second.sqlite3"
    for path, label, answer in misread:
        result = run("teach", "add", path, "--label", label, "--db", first)
        assert result.exit_code == 0, result.output
        assert f"is {label} (the model read {answer})" in result.output

    listed = run("teach", "list", "--json", "--db", first)
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(row["label"], row["answer"], row["source"]) for row in rows] == [
        (label, answer, "cli") for _, label, answer in misread
    ]

    exported = run("teach", "export", tmp_path / "exported", "--db", first)
    assert exported.exit_code == 0 and f"wrote {len(misread)} image(s)" in exported.output
    assert sorted(p.parent.name for p in (tmp_path / "exported").rglob("*.png")) == sorted(
        str(label) for _, label, _ in misread
    )

    added_back = run("teach", "add", tmp_path / "exported", "--db", second)
    assert added_back.exit_code == 0, added_back.output
    again = Store(second).all()
    assert sorted((c.label, c.answer, c.source) for c in again) == sorted(
        (label, answer, "import") for _, label, answer in misread
    )
    originals = Store(first).all()
    for back in again:  # each read back into the same input as it was first
        assert min(np.abs(back.input - c.input).max() for c in originals if c.label == back.label) <= 2 / 255

    out = tmp_path / "personal"
    learned = run("teach", "learn", "--db", second, "--out", out, "--steps", LEARN_STEPS, "--quiet")
    assert learned.exit_code == 0, learned.output
    assert "held-out corrections: none (too few to hold any out" in learned.output
    assert f"learned {len(misread)} correction(s)" in learned.output
    before, after = re.search(
        r"MNIST test set \(10,000 images\): ([\d.]+)% before, ([\d.]+)% after", learned.output
    ).groups()
    assert float(before) == 99.71 and float(after) >= 99.0
    assert rundir.status(out) == rundir.FINISHED
    config, metrics = rundir.read_record(out)
    assert (config["model"], config["recipe"], config["steps"]) == ("fast", "personal", LEARN_STEPS)
    assert metrics["test_accuracy"] >= 0.99  # a few steps on six corrections forget next to nothing

    predicted = run("predict", *(path for path, _, _ in misread), "--model", out, "--json")
    assert predicted.exit_code == 0, predicted.output
    assert [json.loads(line)["digit"] for line in predicted.stdout.splitlines()] == [label for _, label, _ in misread]
    assert "calibration" not in predicted.output  # learn wrote the personal model's calibration: no warning


def test_learn_without_corrections_and_add_without_label_or_digit_are_one_clear_error(tmp_path, misread):
    result = run("teach", "learn", "--db", tmp_path / "empty.sqlite3")
    assert result.exit_code == 1 and "holds no corrections to learn from" in result.output
    result = run("teach", "add", misread[0][0], "--db", tmp_path / "c.sqlite3")
    assert (
        result.exit_code == 2
        and "give --label D for images, or a folder whose subfolders 0..9 hold images" in result.output
    )
    blank = tmp_path / "blank.png"
    Image.new("L", (60, 60), "white").save(blank)
    result = run("teach", "add", blank, misread[0][0], "--label", misread[0][1], "--db", tmp_path / "c.sqlite3")
    assert (
        result.exit_code == 1
        and "blank.png: no digit found" in result.output
        and "1 correction(s) added" in result.output
    )
    assert run("teach", "add", blank, "--label", 10, "--db", tmp_path / "c.sqlite3").exit_code == 2
    result = run("teach", "remove", 1, 2, "--db", tmp_path / "c.sqlite3")
    assert (
        result.exit_code == 1
        and "no correction with id 2" in result.output
        and Store(tmp_path / "c.sqlite3").count() == 1
    )
    result = run("teach", "list", "--db", tmp_path)
    assert result.exit_code == 1 and "is a folder, not a corrections database" in result.output


def weights_digest(run_dir: Path) -> str:
    return hashlib.sha256((run_dir / rundir.WEIGHTS_FILE).read_bytes()).hexdigest()


@pytest.mark.slow
def test_killing_learn_halfway_keeps_the_previous_personal_model_and_every_correction(misread, tmp_path):
    database, out = tmp_path / "c.sqlite3", tmp_path / "personal"
    for path, label, _ in misread:
        assert run("teach", "add", path, "--label", label, "--db", database).exit_code == 0
    assert run("teach", "learn", "--db", database, "--out", out, "--steps", 10, "--quiet").exit_code == 0
    previous = weights_digest(out)

    environment = {**os.environ, "PYTHONPATH": str(SOURCE), "OMP_NUM_THREADS": "1"}
    for ending in (signal.SIGKILL, signal.SIGINT):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "digitrec",
                "teach",
                "learn",
                "--db",
                str(database),
                "--out",
                str(out),
                "--steps",
                "5000",
                "--no-holdout",
                "--quiet",
            ],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log, started = rundir.replacement_dir(out) / rundir.LOG_FILE, time.time()
        deadline = time.monotonic() + 240

        def logged(log=log, started=started) -> bool:  # halfway: this child took steps (the killed one left a log)
            try:
                return log.stat().st_mtime > started and log.read_text().count("\n") >= 1
            except OSError:
                return False

        while not logged():
            assert child.poll() is None and time.monotonic() < deadline, child.stdout.read()
            time.sleep(0.2)
        child.send_signal(ending)
        output = child.communicate(timeout=120)[0]
        if ending == signal.SIGINT:
            assert (
                child.returncode == 130
                and "nothing saved" in output
                and "still holds the previous personal model" in output
            )
        assert weights_digest(out) == previous and rundir.status(out) == rundir.FINISHED
        assert Store(database).count() == len(misread)

    # a learn that completes replaces the model (12 steps, not 10: a repeat of the first learn is bit-exact)
    again = run("teach", "learn", "--db", database, "--out", out, "--steps", 12, "--quiet")
    assert again.exit_code == 0, again.output
    assert weights_digest(out) != previous and not rundir.replacement_dir(out).exists()


@pytest.mark.slow
def test_learn_measures_on_a_held_out_share_learned_without_it(mnist, tmp_path):
    store = Store(tmp_path / "c.sqlite3")
    labels = mnist.test.labels.numpy()
    chosen = [int(i) for digit in (4, 9) for i in np.flatnonzero(labels == digit)[:5]]  # five 4s and five 9s
    store.add_many(
        [
            NewCorrection(
                as_png(mnist.test.images[i, 0].numpy()),
                mnist.test.images[i, 0].numpy(),
                int(labels[i]),
                source="import",
            )
            for i in chosen
        ]
    )
    lines = []
    learned = personal.learn(store, out=tmp_path / "personal", print_line=lines.append, steps=10)
    assert learned.held_out == 2 and lines[0] == "measuring: learning 8 corrections, 2 held out"
    assert (
        learned.held_out_before == 1.0 and 0 <= learned.held_out_after <= 1
    )  # MNIST's own 4s and 9s: read right before
    assert learned.corrections == 10 and learned.test_before == 0.9971 and learned.test_after > 0.99
    assert rundir.status(tmp_path / "personal") == rundir.FINISHED
