"""The Python API and `digitrec predict`, with the bundled default model on real MNIST test digits."""

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec.errors import ImageError, ModelError
from digitrec.person_style import STYLES, encode, render
from digitrec.recognizer import Prediction, Recognizer

from helpers import run


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer.load()


@pytest.fixture(scope="module")
def digits(mnist) -> tuple[np.ndarray, np.ndarray]:
    return (mnist.test.images[:, 0].numpy() * 255).round().astype(np.uint8), mnist.test.labels.numpy()


@pytest.mark.slow
def test_person_style_images_are_read_nearly_as_well_as_mnist(recognizer, digits):
    images, labels = digits
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(labels), 600, replace=False)
    renders = [(f"{i}", render(images[i], STYLES[n % len(STYLES)], rng)) for n, i in enumerate(chosen)]
    results = recognizer.predict_many(renders)
    on_renders = np.mean([r.digit == labels[i] for r, i in zip(results, chosen)])
    on_originals = np.mean(
        [p.digit == labels[i] for p, i in zip(recognizer.predict_arrays(images[chosen] / 255), chosen)]
    )
    assert on_renders >= on_originals - 0.005, (on_renders, on_originals)


@pytest.mark.parametrize("kind", ["path", "bytes", "pil", "array-uint8", "array-float", "array-rgb"])
def test_every_accepted_input_type_gives_the_same_answer(recognizer, digits, tmp_path, kind):
    images, labels = digits
    digit = images[0]
    path = tmp_path / "seven.png"
    Image.fromarray(255 - digit).resize((140, 140)).save(path)
    source = {
        "path": path,
        "bytes": path.read_bytes(),
        "pil": Image.open(path),
        "array-uint8": digit,
        "array-float": digit / 255.0,
        "array-rgb": np.stack([digit] * 3, -1),
    }[kind]
    result = recognizer.predict(source)
    assert isinstance(result, Prediction) and result.digit == labels[0] == 7
    assert abs(sum(result.probabilities) - 1) < 1e-6 and result.confidence == max(result.probabilities)
    assert result.unsure == (result.confidence < recognizer.calibration.unsure_below)
    assert result.preprocessed.shape == (28, 28)


def test_an_ambiguous_blob_is_flagged_unsure(recognizer):
    blob = np.zeros((28, 28), np.uint8)
    blob[8:20, 8:20] = 255  # a filled square is no digit the model knows
    assert recognizer.predict(blob).unsure


def test_batched_prediction_keeps_order_and_reports_bad_images_in_place(recognizer, digits):
    images, labels = digits
    inputs = [("a", images[1]), ("bad", b"not an image"), ("b", images[2]), ("blank", np.zeros((40, 40), np.uint8))]
    results = recognizer.predict_many(inputs)
    assert results[0].digit == labels[1] and results[2].digit == labels[2]
    assert isinstance(results[1], ImageError) and "bad: not an image" in str(results[1])
    assert isinstance(results[3], ImageError) and "no digit found" in str(results[3])


def test_loading_a_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        Recognizer.load(tmp_path / "none.safetensors")


@pytest.fixture
def folder(tmp_path, digits) -> Path:
    images, _ = digits
    root = tmp_path / "scans"
    (root / "nested").mkdir(parents=True)
    for index in range(4):
        Image.fromarray(255 - images[index]).resize((100, 100)).save(
            root / ("nested" if index % 2 else "") / f"d{index}.png"
        )
    return root


def test_predict_table_lists_each_image_with_its_digit(folder, digits):
    result = run("predict", folder)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:3] == ["image", "digit", "confidence"] and len(lines) == 5
    found = {Path(line.split()[0]).name: int(line.split()[1]) for line in lines[1:]}
    assert found == {f"d{i}.png": int(digits[1][i]) for i in range(4)}


def test_predict_json_and_csv_carry_probabilities_and_errors(folder, digits, tmp_path):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run("predict", folder, "--json", "--csv", tmp_path / "out.csv", "--top", 3)
    assert result.exit_code == 1  # one image failed
    records = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(records) == 5 and {tuple(sorted(r)) for r in records} == {
        ("confidence", "digit", "error", "path", "probabilities", "unsure")
    }
    broken = next(r for r in records if r["path"].endswith("broken.png"))
    assert broken["digit"] is None and "broken.png" in broken["error"]
    good = [r for r in records if r["error"] is None]
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in good)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert len(rows) == 5 and rows[0].keys() >= {"path", "digit", "confidence", "p0", "p9", "error"}
    assert "1 of 5 images failed" in result.output


def test_predict_reads_stdin_and_saves_the_preprocessed_view(digits, tmp_path):
    png = encode(Image.fromarray(255 - digits[0][0]).resize((90, 90)), "PNG")
    from click.testing import CliRunner

    from digitrec.cli import main

    result = CliRunner().invoke(main, ["predict", "-", "--show-preprocessed", str(tmp_path / "seen")], input=png)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[:2] == ["-", "7"]
    saved = Image.open(tmp_path / "seen" / "stdin.png")
    assert saved.size == (28, 28)


def test_predict_on_bad_files_reports_each_and_exits_non_zero(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    result = run("predict", tmp_path / "empty.png", tmp_path / "missing.png")
    assert result.exit_code == 1
    assert "empty file" in result.output and "cannot read" in result.output and "Traceback" not in result.output


def test_any_failure_in_a_batch_is_that_image_s_error_and_the_rest_are_read(recognizer, digits):
    images, labels = digits
    odd = np.array([["not", "pixels"]], dtype=object)  # numpy itself fails on it, outside the image decoders
    results = recognizer.predict_many([("a", images[1]), ("odd", odd), ("b", images[2])])
    assert results[0].digit == labels[1] and results[2].digit == labels[2]
    assert isinstance(results[1], ImageError) and str(results[1]).startswith("odd: ")


class KillsItsProcess:
    """A source whose unpickling, in a worker process, ends that process at once (as the OOM killer would)."""

    def __reduce__(self):
        import os

        return os._exit, (9,)


def test_a_worker_process_that_dies_fails_only_its_own_images(recognizer, digits):
    images, labels = digits
    inputs = [(str(i), images[i]) for i in range(255)] + [("killer", KillsItsProcess())]  # a full batch: a pool
    results = recognizer.predict_many(inputs, workers=2)
    assert len(results) == 256 and str(results[-1]) == "killer: the process reading it died"
    assert all(isinstance(r, (Prediction, ImageError)) for r in results)
    again = recognizer.predict_many(inputs[:255] + [("seven", images[0])], workers=2)  # in a fresh pool
    assert sum(r.digit == d for r, d in zip(again, labels[:255])) >= 250 and again[-1].digit == 7


def lab_tiff(digit: np.ndarray) -> bytes:
    return encode(Image.fromarray(255 - digit).convert("RGB").convert("LAB"), "TIFF")


def test_one_bad_file_in_a_large_folder_does_not_stop_predict(tmp_path, digits):
    images, labels = digits
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(299):  # over one batch of 256: decoded in worker processes
        Image.fromarray(255 - images[index]).save(folder / f"{index:03}.png")
    (folder / "lab.tif").write_bytes(lab_tiff(images[0]))  # Pillow decodes it but cannot convert it
    result = run("predict", folder, "--csv", tmp_path / "out.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.splitlines()
    errors = [line for line in lines[1:-1] if "  error: " in line]
    assert len(lines[1:-1]) == 300 and len(errors) == 1
    assert re.search(r"lab\.tif +error: ", errors[0]) and "cannot read its LAB pixels" in errors[0]
    assert lines[-1] == "1 of 300 images failed"
    assert len(list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))) == 300


def test_folder_scans_list_broken_links_and_loops_as_errors(folder):
    (folder / "gone.png").symlink_to(folder / "never-existed.png")
    (folder / "nested" / "back").symlink_to(folder)  # a loop
    result = run("predict", folder, "--json")
    assert result.exit_code == 1
    records = {r["path"]: r for r in map(json.loads, result.output.splitlines()[:-1])}
    assert records[str(folder / "gone.png")]["error"] == f"{folder / 'gone.png'}: a broken link"
    assert "links to a folder already searched" in records[str(folder / "nested" / "back")]["error"]
    assert sum(r["digit"] is not None for r in records.values()) == 4  # each image once, however it is reached
    assert result.output.splitlines()[-1] == "2 of 6 images failed"


def test_preview_names_never_overwrite_each_other(tmp_path, digits):
    images, _ = digits
    (tmp_path / "a").mkdir()
    Image.fromarray(255 - images[0]).save(tmp_path / "a" / "b.png")  # a digit 7
    Image.fromarray(255 - images[1]).save(tmp_path / "a_b.png")  # a 2: the same flat name as a/b.png
    result = run("predict", tmp_path / "a" / "b.png", tmp_path / "a_b.png", "--show-preprocessed", tmp_path / "seen")
    assert result.exit_code == 0, result.output
    saved = sorted(path.name for path in (tmp_path / "seen").iterdir())
    assert len(saved) == 2
    views = [np.asarray(Image.open(tmp_path / "seen" / name)) for name in saved]
    assert not np.array_equal(views[0], views[1])


def test_stdin_over_the_size_limit_is_an_error_row(monkeypatch):
    from click.testing import CliRunner

    from digitrec import preprocess
    from digitrec.cli import main

    monkeypatch.setattr(preprocess, "MAX_FILE_BYTES", 1000)
    result = CliRunner().invoke(main, ["predict", "-"], input=b"\0" * 1001)
    assert result.exit_code == 1 and re.search(r"^- +error: -: refused: larger than 0 MB$", result.output, re.M)


def test_folders_and_files_this_user_cannot_open_are_error_rows(digits, tmp_path):
    import os
    import subprocess
    import sys

    images, _ = digits
    root = tmp_path / "images"
    root.mkdir()
    Image.fromarray(255 - images[0]).save(root / "seven.png")
    locked = root / "locked"
    locked.mkdir()
    Image.fromarray(255 - images[1]).save(locked / "two.png")
    locked.chmod(0)
    # root may open anything: the command then runs without the capabilities that let it, so `locked` is closed
    # to it as to any user (and the checkout, owned by root, stays readable wherever CI cloned it)
    as_plain_user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    try:
        result = subprocess.run(
            [*as_plain_user, sys.executable, "-m", "digitrec", "predict", str(root), str(locked / "two.png"), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        locked.chmod(0o755)
    records = {r["path"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == "2 of 3 images failed", result.stderr
    assert records[str(root / "seven.png")]["digit"] == 7
    assert records[str(locked)]["error"] == f"{locked}: cannot search this folder (Permission denied)"
    assert records[str(locked / "two.png")]["error"] == f"{locked / 'two.png'}: cannot read (Permission denied)"


def test_several_batches_read_in_worker_processes_match_reading_each_image_alone(recognizer, digits, tmp_path):
    """predict_many decodes in worker processes and runs each batch while the next is decoded: the views and
    the digits must be what reading one image at a time gives (through the same int8 copy)."""
    images, labels = digits
    for index in range(300):  # two batches of 256
        Image.fromarray(255 - images[index]).resize((112, 112)).save(tmp_path / f"{index:03}.png")
    paths = sorted(tmp_path.iterdir())
    results = recognizer.predict_many([(str(path), path) for path in paths], workers=2)
    alone = [recognizer.predict(path) for path in paths]
    assert all(np.array_equal(r.preprocessed, a.preprocessed) for r, a in zip(results, alone))
    views = [a.preprocessed for a in alone]
    assert [r.digit for r in results] == [p.digit for p in recognizer.predict_arrays(views, recognizer.batch_logits)]
    assert np.mean([r.digit == label for r, label in zip(results, labels)]) >= 0.99
