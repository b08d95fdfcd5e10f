import base64
import io
import json
import re
import shutil
import sys

import numpy as np
import torch
from PIL import Image

from digitrec import evaluate, models, report

from helpers import assert_one_line_error, run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_files_are_valid_and_their_numbers_match_the_predictions(softmax_run, mnist, tmp_path):
    logits = models.logits_in_batches(softmax_run.model, mnist.test.images)
    html_path = report.write_report(
        tmp_path,
        {"model": "softmax"},
        softmax_run.metrics,
        softmax_run.log,
        logits,
        mnist.test.images,
        mnist.test.labels,
    )
    page = html_path.read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    embedded = [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert 'src="http' not in page  # self-contained
    figures = {
        name: (tmp_path / name).read_bytes()
        for name in ("curves.png", "confusion.png", "mistakes.png", "least-confident-correct.png")
    }
    assert sorted(embedded) == sorted(figures.values())  # the page shows exactly the figures written beside it
    sizes = {name: picture(png).size for name, png in figures.items()}
    assert sizes["curves.png"][0] > 2.2 * sizes["curves.png"][1]  # two panels side by side
    assert 0.8 < sizes["confusion.png"][0] / sizes["confusion.png"][1] < 1.4  # a square 10 x 10 grid
    assert sizes["mistakes.png"] == sizes["least-confident-correct.png"]  # 3 rows of 8 digits each
    assert 1.6 < sizes["mistakes.png"][0] / sizes["mistakes.png"][1] < 2.8

    predicted = logits.argmax(1).numpy()
    truth = mnist.test.labels.numpy()
    expected_accuracy = (predicted == truth).mean()
    assert f"{100 * expected_accuracy:.2f}%" in page
    precision_of_3 = ((predicted == 3) & (truth == 3)).sum() / (predicted == 3).sum()
    recall_of_3 = ((predicted == 3) & (truth == 3)).sum() / (truth == 3).sum()
    row = re.search(r"<tr><td>3</td><td>([\d.]+)</td><td>([\d.]+)</td><td>([\d.]+)</td>", page)
    assert float(row[1]) == round(precision_of_3, 4) and float(row[2]) == round(recall_of_3, 4)
    recorded = json.loads((tmp_path / "report.json").read_text())
    assert np.array_equal(recorded["confusion_matrix"], evaluate.confusion_matrix(predicted, truth))


def test_mistakes_gallery_holds_real_mistakes_sorted_by_confidence(softmax_run, mnist, tmp_path):
    logits = models.logits_in_batches(softmax_run.model, mnist.test.images)
    report.write_report(tmp_path, {}, {}, [], logits, mnist.test.images, mnist.test.labels)
    recorded = json.loads((tmp_path / "report.json").read_text())
    mistakes = recorded["mistakes"]
    assert len(mistakes) == report.GALLERY_SIZE
    probabilities = torch.softmax(logits, 1)
    for entry in mistakes:
        assert entry["label"] == mnist.test.labels[entry["index"]] != entry["predicted"]
        assert abs(probabilities[entry["index"]].max().item() - entry["confidence"]) < 1e-6
    confidences = [entry["confidence"] for entry in mistakes]
    assert confidences == sorted(confidences, reverse=True)
    all_wrong = probabilities.max(1).values[logits.argmax(1) != mnist.test.labels]
    assert confidences[0] == all_wrong.max().item()
    correct = [entry["confidence"] for entry in recorded["least_confident_correct"]]
    assert correct == sorted(correct) and all(e["label"] == e["predicted"] for e in recorded["least_confident_correct"])


def picture(png: bytes) -> Image.Image:
    """The PNG decoded in full: a truncated or malformed file raises here."""
    assert png.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_a_run_with_a_single_log_record_still_renders():
    one = picture(report.curves_png([{"step": 1, "loss": 2.3, "train_accuracy": 0.1, "validation_accuracy": 0.12}]))
    assert one.width > 2.2 * one.height
    assert len(one.convert("RGB").getcolors(1 << 16)) > 20  # drawn axes, labels and markers, not a blank canvas


def test_a_gallery_has_one_row_of_eight_digits_per_eight_entries(mnist):
    entries = [{"index": i, "label": 1, "predicted": 7, "confidence": 0.9} for i in range(24)]
    three_rows = picture(report.gallery_png(mnist.test.images, entries, "t"))
    one_row = picture(report.gallery_png(mnist.test.images, entries[:8], "t"))
    assert one_row.width == three_rows.width
    assert 2.0 < (three_rows.height / one_row.height) < 3.5


def test_evaluate_report_writes_into_the_chosen_folder(softmax_run, tmp_path):
    result = run("evaluate", softmax_run.run_dir, "--report", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert "report written to" in result.output and (tmp_path / "report" / "report.html").is_file()


def test_train_writes_curves_and_compare_tabulates_runs(tmp_path):
    for seed in (1, 2):
        result = run(
            "train", "--model", "softmax", "--steps", 200, "--seed", seed, "--out", tmp_path / f"s{seed}", "--quiet"
        )
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"s{seed}" / "curves.png").read_bytes().startswith(PNG_MAGIC)
    table = run("compare", tmp_path / "s1", tmp_path / "s2", "--markdown", tmp_path / "runs.md")
    assert table.exit_code == 0
    lines = table.output.strip().splitlines()
    assert lines[0].split()[:3] == ["run", "model", "recipe"] and len(lines) == 3
    metrics = json.loads((tmp_path / "s2" / "metrics.json").read_text())
    assert f"{100 * metrics['test_accuracy']:.2f}%" in lines[2]
    assert (tmp_path / "runs.md").read_text().count("\n") == 4


def test_compare_on_a_folder_that_is_no_run_is_one_line(tmp_path):
    result = run("compare", tmp_path)
    assert result.exit_code == 1 and result.output.startswith("error: ") and "config.json" in result.output


def test_tensorboard_flag_without_tensorboard_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as on a machine without tensorboard
    result = run("train", "--model", "softmax", "--steps", 100, "--out", tmp_path / "r", "--tensorboard", "--quiet")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: --tensorboard needs the tensorboard package: pip install tensorboard"
    )
    assert not (tmp_path / "r").exists()  # refused before the run made its folder


def test_compare_on_a_metrics_file_with_a_word_for_a_number_is_one_line(softmax_run, tmp_path):
    run_dir = tmp_path / "slow"
    shutil.copytree(softmax_run.run_dir, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "train_seconds": "slow"}))
    assert_one_line_error(run("compare", run_dir), 'metrics.json: train_seconds is "slow", not a number')


def test_evaluate_report_of_a_run_whose_log_lacks_losses_draws_what_there_is(softmax_run, tmp_path):
    run_dir = tmp_path / "no-loss"
    shutil.copytree(softmax_run.run_dir, run_dir)
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    (run_dir / "log.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in record.items() if k != "loss"}) + "\n" for record in records)
    )
    result = run("evaluate", run_dir, "--report")
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.html").is_file() and (run_dir / "curves.png").is_file()
