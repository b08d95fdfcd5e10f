"""The CLI driven in-process: outputs a user reads, and one clear line for every kind of bad input."""

import json

import pytest

from digitrec import models

from conftest import BUNDLED_MNIST
from helpers import assert_one_line_error, run


def test_data_command_prints_location_sizes_and_checksums():
    from digitrec import data

    result = run("data", "--data-dir", BUNDLED_MNIST)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"location: {BUNDLED_MNIST}"
    for name, (sha256, _) in data.FILES.items():
        assert f"{name:<28} sha256 {sha256[:16]}… verified" in result.output
    assert next(line for line in lines if line.startswith("test")).split() == [
        "test",
        "10000",
        "980",
        "1135",
        "1032",
        "1010",
        "982",
        "892",
        "958",
        "1028",
        "974",
        "1009",
    ]


def test_train_then_evaluate_json_agree(tmp_path):
    out = tmp_path / "run"
    result = run("train", "--model", "softmax", "--steps", 300, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and (out / "weights.safetensors").is_file()
    evaluated = run("evaluate", out, "--json")
    summary = json.loads(evaluated.output)
    recorded = json.loads((out / "metrics.json").read_text())
    assert summary["test_accuracy"] == pytest.approx(recorded["test_accuracy"], abs=1e-6)
    assert sum(map(sum, summary["confusion_matrix"])) == 10000


def test_evaluate_prints_confusion_matrix_and_per_class_accuracy(softmax_run, mnist):
    from digitrec import models

    result = run("evaluate", softmax_run.run_dir)
    assert result.exit_code == 0
    predicted = models.logits_in_batches(softmax_run.model, mnist.test.images).argmax(1)
    truth = mnist.test.labels
    errors = int((predicted != truth).sum())
    assert f"test accuracy {100 * (10000 - errors) / 10000:.2f}% ({errors} errors in 10000 images)" in result.output
    rows = result.output.split("predicted)\n")[1].splitlines()[1:]
    assert len(rows) == 10
    for digit, row in enumerate(rows):  # digit, ten counts, the digit's accuracy (its recall)
        cells = row.split()
        expected_counts = [int(((truth == digit) & (predicted == other)).sum()) for other in range(10)]
        assert [int(cell) for cell in cells[:11]] == [digit, *expected_counts]
        assert cells[11] == f"{100 * expected_counts[digit] / int((truth == digit).sum()):.2f}%"


def test_unknown_model_is_one_line(tmp_path):
    assert_one_line_error(run("train", "--model", "lenet", "--out", tmp_path), "unknown model 'lenet'")


def test_missing_weights_are_one_line(tmp_path):
    assert_one_line_error(run("evaluate", tmp_path / "nothing"), "no such weights file")


def test_corrupt_weights_are_one_line(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"\x00" * 64)
    assert_one_line_error(run("evaluate", tmp_path), "not a readable safetensors file")


def test_weights_of_another_architecture_are_one_line(tmp_path, softmax_run):
    import torch
    from safetensors.torch import save_file

    save_file(
        {"linear.weight": torch.zeros(10, 784), "linear.bias": torch.zeros(10)},
        tmp_path / "w.safetensors",
        metadata={"config": '{"model": "fast"}'},
    )
    assert_one_line_error(run("evaluate", tmp_path / "w.safetensors"), "do not fit model 'fast'")


def test_bad_data_directory_is_one_line(tmp_path, softmax_run):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((BUNDLED_MNIST / name).read_bytes())
    assert_one_line_error(
        run("evaluate", softmax_run.run_dir, "--data-dir", tmp_path), f"{tmp_path / 't10k-images-idx3-ubyte.gz'}: "
    )  # the folder too: which copy is bad


def test_non_numeric_flag_is_a_usage_error():
    result = run("train", "--steps", "many")
    assert result.exit_code == 2
    assert "Invalid value for '--steps'" in result.output and "Traceback" not in result.output


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "digitrec", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "digitrec" in result.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "nan"], "lr must be a finite number, not nan"),
        (["--lr", "inf"], "lr must be a finite number, not inf"),
        (["--lr", "1e300"], "lr must be in (0, 10], not 1e+300"),
        (["--batch-size", "60000"], "batch_size must be in 1..55,000, not 60000"),
        (["--width", "100000"], "width must be in 1..256, not 100000"),
        (["--seed", str(2**70)], f"seed must be in 0..9,223,372,036,854,775,807, not {2**70}"),
        (["--device", "xpu"], "unknown device 'xpu' (auto, cpu, cuda or cuda:N)"),
        (["--device", "meta"], "unknown device 'meta'"),
    ],
)
def test_out_of_range_training_settings_are_one_line_and_create_nothing(tmp_path, flags, message):
    assert_one_line_error(run("train", *flags, "--out", tmp_path / "run"), message)
    assert not (tmp_path / "run").exists()


def test_train_help_lists_every_setting_with_its_range_and_default():
    from dataclasses import fields

    from digitrec.config import TrainConfig

    result = run("train", "--help")
    assert result.exit_code == 0
    help_text = " ".join(result.output.split())  # undo click's line wrapping
    for field in fields(TrainConfig):
        assert f"--{field.name.replace('_', '-')}" in help_text, field.name
    assert "--lr FLOAT Learning rate (the peak under warmup_cosine), per step of one batch. Range (0, 10]." in help_text
    assert "--precision [auto|fp32|bf16]" in help_text and "--dry-run" in help_text
    assert "Architecture: softmax, cnn, fast, reader. [default: fast]" in help_text
    assert "fast: quick, full" in help_text


# the reader's dry run makes and measures 1,000 strings of digits twice: about 20 s
@pytest.mark.parametrize(
    "model",
    [pytest.param(name, marks=pytest.mark.slow) if name == "reader" else name for name in sorted(models.REGISTRY)],
)
def test_dry_run_trains_a_few_logged_steps_of_each_model_and_writes_nothing(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("train", "--model", model, "--dry-run", "--quiet", "--data-dir", BUNDLED_MNIST)
    assert result.exit_code == 0, result.output
    steps = [int(line.split()[0]) for line in result.output.splitlines() if line.split() and line.split()[0].isdigit()]
    assert steps == [1, 2, 3]
    measured = "on 500 images" if models.spec(model).task == "digits" else "of 1,000 made from test digits"
    assert "(dry run)" in result.output and "dry run done: 3 steps" in result.output and measured in result.output
    assert list(tmp_path.iterdir()) == []


def test_dry_run_refuses_flags_that_would_write(tmp_path):
    result = run("train", "--dry-run", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "--dry-run writes nothing; drop --out" in result.output
    assert not (tmp_path / "run").exists()


def test_every_setting_is_a_flag_that_reaches_the_recorded_config(tmp_path):
    out = tmp_path / "run"
    result = run(
        "train",
        "--model",
        "softmax",
        "--steps",
        20,
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--schedule",
        "warmup_cosine",
        "--warmup-fraction",
        "0.5",
        "--weight-decay",
        "0.001",
        "--label-smoothing",
        "0.05",
        "--log-every",
        10,
        "--eval-every",
        20,
        "--no-channels-last",
        "--precision",
        "fp32",
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["optimizer"], config["lr"], config["schedule"], config["warmup_fraction"]) == (
        "adam",
        0.01,
        "warmup_cosine",
        0.5,
    )
    assert (config["weight_decay"], config["label_smoothing"], config["log_every"]) == (0.001, 0.05, 10)
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [10, 20]


def test_read_prints_each_number_writes_csv_and_segments_and_fails_on_a_bad_file(mnist, tmp_path):
    import numpy as np
    from PIL import Image

    from digitrec.number_strings import compose

    images, labels = mnist.test.images[:, 0].numpy(), mnist.test.labels.numpy()
    row = compose([images[np.nonzero(labels == d)[0][0]] for d in (4, 7)], "separate", np.random.default_rng(0))
    picture = Image.fromarray((255 - row * 255).round().astype(np.uint8)).resize((row.shape[1] * 4, row.shape[0] * 4))
    picture.save(tmp_path / "47.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = run(
        "read",
        tmp_path / "47.png",
        tmp_path / "broken.png",
        "--json",
        "--csv",
        tmp_path / "out.csv",
        "--show-segments",
        tmp_path / "segments",
    )
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["text"] == "47" and len(rows[0]["digits"]) == 2 and rows[0]["error"] is None
    assert rows[1]["text"] is None and rows[1]["error"].startswith(str(tmp_path / "broken.png"))
    assert "1 of 2 images failed" in result.stderr
    csv_lines = (tmp_path / "out.csv").read_text().splitlines()
    assert csv_lines[0].startswith("path,text,confidence") and ",47," in csv_lines[1] and "broken.png" in csv_lines[2]
    segments = list((tmp_path / "segments").iterdir())
    assert len(segments) == 1 and Image.open(segments[0]).size == picture.size
    table = run("read", tmp_path / "47.png")
    assert table.exit_code == 0 and table.output.splitlines()[1].split()[1] == "47"
    (tmp_path / "afile").write_text("")
    under_a_file = run("read", tmp_path / "47.png", "--show-segments", tmp_path / "afile" / "sub")
    assert_one_line_error(under_a_file, f"{tmp_path / 'afile' / 'sub'}: cannot create the folder for --show-segments")
