"""Figures and the self-contained HTML report of a run: the only module that imports matplotlib.

Draws what `evaluate` computes — training curves from `log.jsonl`, the confusion matrix, galleries of
the most confident mistakes and the least confident correct answers, per-class precision/recall/F1 —
and ties them to the run's config and metrics in one HTML file with every image embedded.
"""

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from digitrec import evaluate  # noqa: E402
from digitrec.files import write_atomic  # noqa: E402
from digitrec.rundir import CURVES_FILE, REPORT_HTML_FILE, REPORT_JSON_FILE  # noqa: E402

GALLERY_SIZE = 24


def figure_png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def curves_png(log: list[dict]) -> bytes:
    """Loss, and training-batch / validation accuracy, against step (a record without a value is a gap)."""
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 3.6))
    losses = [record for record in log if record.get("loss") is not None]
    loss_axes.plot(
        [record["step"] for record in losses],
        [record["loss"] for record in losses],
        marker="." if len(losses) < 3 else None,
    )
    loss_axes.set(xlabel="step", ylabel="training loss", title="loss", yscale="log")
    batches = [record for record in log if record.get("train_accuracy") is not None]
    accuracy_axes.plot(
        [record["step"] for record in batches],
        [100 * record["train_accuracy"] for record in batches],
        label="training batch",
        alpha=0.6,
        marker="." if len(batches) < 3 else None,
    )
    validated = [record for record in log if record.get("validation_accuracy") is not None]
    accuracy_axes.plot(
        [record["step"] for record in validated],
        [100 * record["validation_accuracy"] for record in validated],
        marker="o",
        label="validation",
    )
    accuracy_axes.set(xlabel="step", ylabel="accuracy (%)", title="accuracy")
    accuracy_axes.legend(loc="lower right")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
    return figure_png(figure)


def confusion_png(confusion: np.ndarray) -> bytes:
    figure, axes = plt.subplots(figsize=(6, 5.4))
    shown = np.log1p(confusion)  # the diagonal is ~100x the errors: a log scale keeps the errors visible
    axes.imshow(shown, cmap="Blues")
    for true in range(10):
        for predicted in range(10):
            count = confusion[true, predicted]
            if count:
                colour = "white" if shown[true, predicted] > shown.max() / 2 else "black"
                axes.text(predicted, true, str(count), ha="center", va="center", fontsize=8, color=colour)
    axes.set(
        xticks=range(10),
        yticks=range(10),
        xlabel="predicted digit",
        ylabel="true digit",
        title="confusion matrix (test set)",
    )
    return figure_png(figure)


def gallery_png(images: torch.Tensor, entries: list[dict], title: str) -> bytes:
    columns = 8
    rows = max(1, -(-len(entries) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.45), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, entry in zip(grid.flat, entries):
        axes.imshow(images[entry["index"], 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axes.set_title(f"{entry['label']}→{entry['predicted']} {100 * entry['confidence']:.0f}%", fontsize=8)
    figure.suptitle(title)
    return figure_png(figure)


def embedded(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(
    out_dir: Path,
    config: dict,
    metrics: dict,
    log: list[dict],
    logits: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> Path:
    """Write the figures, `report.json` and `report.html` into `out_dir`; returns the HTML path."""
    results = evaluate.test_results(logits, labels)
    probabilities = torch.softmax(logits, 1)
    mistakes = evaluate.ranked_answers(probabilities, labels, GALLERY_SIZE, correct=False)
    doubtful = evaluate.ranked_answers(probabilities, labels, GALLERY_SIZE, correct=True)
    figures = {
        "confusion.png": confusion_png(np.array(results["confusion_matrix"])),
        "mistakes.png": gallery_png(images, mistakes, "most confident mistakes (true→predicted, confidence)"),
        "least-confident-correct.png": gallery_png(images, doubtful, "least confident correct answers"),
    }
    if log:
        figures[CURVES_FILE] = curves_png(log)
    for name, png in figures.items():
        write_atomic(out_dir / name, png)
    per_class = results["per_class"]
    write_atomic(
        out_dir / REPORT_JSON_FILE,
        json.dumps({**results, "mistakes": mistakes, "least_confident_correct": doubtful}, indent=2),
    )
    class_rows = [
        [
            digit,
            f"{per_class['precision'][digit]:.4f}",
            f"{per_class['recall'][digit]:.4f}",
            f"{per_class['f1'][digit]:.4f}",
            int(np.sum(results["confusion_matrix"][digit])),
        ]
        for digit in range(10)
    ]
    sections = [
        f"<h1>digitrec report: {html.escape(str(config.get('model')))} ({html.escape(str(config.get('recipe')))})</h1>",
        f"<p class=headline>test accuracy <b>{100 * results['test_accuracy']:.2f}%</b> "
        f"({results['errors']} errors in {results['images']} test images)</p>",
        "<h2>Training curves</h2>"
        + (embedded(figures[CURVES_FILE], "training curves") if log else "<p>no training log</p>"),
        "<h2>Confusion matrix</h2>" + embedded(figures["confusion.png"], "confusion matrix"),
        "<h2>Per-class precision, recall and F1</h2>"
        + table(["digit", "precision", "recall", "F1", "test images"], class_rows),
        "<h2>Most confident mistakes</h2>" + embedded(figures["mistakes.png"], "most confident mistakes"),
        "<h2>Least confident correct answers</h2>"
        + embedded(figures["least-confident-correct.png"], "least confident correct"),
        "<h2>Metrics</h2>" + table(["metric", "value"], [[k, v] for k, v in metrics.items()]),
        "<h2>Config</h2>" + table(["field", "value"], [[k, v] for k, v in config.items()]),
    ]
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>digitrec report</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "img{max-width:100%}.headline{font-size:1.3em}</style></head><body>" + "\n".join(sections) + "</body></html>\n"
    )
    write_atomic(out_dir / REPORT_HTML_FILE, page)
    return out_dir / REPORT_HTML_FILE
