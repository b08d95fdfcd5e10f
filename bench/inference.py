"""Batched inference of the bundled model on onnxruntime: what each change buys, and what the int8 copy costs.

Throughput: the 10,000 test images through each variant, in batches, as images/s and as a ratio to the
baseline (the exported float file with its Inside outputs, batches of 256, one thread per core: what
`predict_many` ran before the int8 copy). Variants alternate round by round in one process, so a busy
machine slows them alike; each figure is the median of the rounds. The load average is printed with them.
- float, all outputs: `model.onnx` as exported (logits plus the Inside view's activations)
- float, logits only: the same graph cut down to `logits` (`quantize.logits_only`)
- int8: the bundled `model.int8.onnx` (`digitrec.quantize`), what `predict_many` runs now

Accuracy: float against int8 on the 10,000 test digits, and on person-style renderings (bench/person_style.py's
renderings and preprocessing, the first `--person-style` test digits in each style; 0 skips them).

`--write-bundled` makes `model.int8.onnx` from the bundled `model.onnx`, written only if it is within 0.05
points on the test set and 0.1 points on every person-style set (give `--person-style 10000`).

    python bench/inference.py [--rounds 5] [--person-style 2000] [--write-bundled]
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from digitrec import data, runtime
from digitrec.files import BUNDLED_INT8, BUNDLED_ONNX
from digitrec.person_style import STYLES, render
from digitrec.quantize import CALIBRATION_DIGITS, PERSON_STYLE_POINTS, TEST_POINTS, accuracy, logits_only, quantize_int8
from digitrec.recognizer import Recognizer
from digitrec.tasks import DIGITS


def logits_only_bytes(path: Path) -> bytes:
    import onnx

    model = onnx.load(str(path))
    logits_only(model)
    return model.SerializeToString()


def throughput(images: np.ndarray, rounds: int) -> None:
    variants = [  # name, model, batch size, threads (0: one per core)
        ("float, all outputs (baseline)", str(BUNDLED_ONNX), 256, 0),
        ("float, all outputs", str(BUNDLED_ONNX), 1024, 0),
        ("float, logits only", logits_only_bytes(BUNDLED_ONNX), 256, 0),
        ("int8", str(BUNDLED_INT8), 256, 0),
        ("int8", str(BUNDLED_INT8), 1024, 0),
        ("int8", str(BUNDLED_INT8), 256, 1),
    ]
    runs = []
    for name, model, batch_size, threads in variants:
        logits = runtime.from_source(model, name, DIGITS, threads).forward
        runs.append(
            lambda logits=logits, size=batch_size: [logits(images[i : i + size]) for i in range(0, len(images), size)]
        )
        runs[-1]()  # warm-up
    seconds = [[] for _ in variants]
    for _ in range(rounds):
        for timings, run in zip(seconds, runs):
            started = time.perf_counter()
            run()
            timings.append(time.perf_counter() - started)
    rates = [len(images) / statistics.median(timings) for timings in seconds]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"{len(images):,} test images, median of {rounds} alternated rounds; load average {load} (1, 5, 15 min), "
        f"{os.cpu_count()} cores"
    )
    print(f"{'model':<32}{'batch':>7}{'threads':>9}{'images/s':>11}{'vs baseline':>13}")
    for (name, _, batch_size, threads), rate in zip(variants, rates):
        print(f"{name:<32}{batch_size:>7}{threads or 'all':>9}{rate:>11,.0f}{rate / rates[0]:>12.2f}x")


def person_style_sets(split, count: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each style's renderings of the first `count` digits as the model sees them (bench/person_style.py's
    renderings, in its order), and their labels; an image preprocessing refuses counts as wrong (label -1)."""
    recognizer = Recognizer.load(BUNDLED_ONNX)  # the float model: only the preprocessed arrays are kept
    digits = (split.images[:count, 0].numpy() * 255).round().astype(np.uint8)
    labels = split.labels[:count].numpy()
    rng = np.random.default_rng(0)
    sets = {}
    for style in STYLES:
        results = recognizer.predict_many((str(i), render(d, style, rng)) for i, d in enumerate(digits))
        seen = [getattr(r, "preprocessed", None) for r in results]
        images = np.stack([np.zeros((28, 28), np.float32) if s is None else s for s in seen])[:, None]
        sets[style] = images, np.where([s is None for s in seen], -1, labels)
    return sets


def accuracies(test, person_style: dict) -> None:
    float_logits = runtime.load_onnx(BUNDLED_ONNX, DIGITS).forward
    int8_logits = runtime.load_onnx(BUNDLED_INT8, DIGITS).forward
    sets = {"test (10,000)": (test.images.numpy(), test.labels.numpy()), **person_style}
    print(f"{'accuracy':<32}{'float':>9}{'int8':>9}{'points':>8}")
    for name, (images, labels) in sets.items():
        on_float, on_int8 = accuracy(float_logits, images, labels), accuracy(int8_logits, images, labels)
        print(f"{name:<32}{100 * on_float:>8.2f}%{100 * on_int8:>8.2f}%{100 * (on_int8 - on_float):>+8.2f}")


def write_bundled(mnist, person_style: dict) -> None:
    checks = {"test": (mnist.test.images.numpy(), mnist.test.labels.numpy(), TEST_POINTS)}
    checks |= {style: (images, labels, PERSON_STYLE_POINTS) for style, (images, labels) in person_style.items()}
    report = quantize_int8(BUNDLED_ONNX, BUNDLED_INT8, mnist.train.images[:CALIBRATION_DIGITS].numpy(), checks)
    print(
        f"wrote {BUNDLED_INT8}: "
        + ", ".join(f"{name} {100 * (e['int8'] - e['float']):+.2f}" for name, e in report.items())
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--person-style", type=int, default=2000, help="test digits per style (0: none)")
    parser.add_argument("--write-bundled", action="store_true")
    args = parser.parse_args()
    mnist = data.load()
    person_style = person_style_sets(mnist.test, args.person_style) if args.person_style else {}
    if args.write_bundled:
        write_bundled(mnist, person_style)
    throughput(mnist.test.images.numpy(), args.rounds)
    accuracies(mnist.test, person_style)


if __name__ == "__main__":
    main()
