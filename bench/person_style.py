"""Accuracy on the whole MNIST test set rendered the way people's images look, against the originals.

Each of the 10,000 test digits is rendered in each style of digitrec/person_style.py (scaled up, off-centre,
dark on light or light on dark, paper noise, blur, JPEG, transparent RGBA, thick and thin pens) and
recognized through `Recognizer.predict_many`, as `digitrec predict` reads files (the bundled model on
onnxruntime runs its int8 copy there, and here on the originals too); the table compares each style's
accuracy with the same model on the original 28x28 images, and with the originals passed through the
preprocessing. bench/inference.py compares the int8 copy with the float model on the same renderings.

    python bench/person_style.py [--model PATH] [--count 10000] [--split test|validation]

Choose with `--split validation`; report with the test split.
"""

import argparse
import time

import numpy as np

from digitrec import data
from digitrec.person_style import STYLES, render
from digitrec.recognizer import Recognizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    args = parser.parse_args()
    mnist = data.load()
    split = getattr(mnist, args.split)
    images = split.images[: args.count, 0].numpy()
    labels = split.labels[: args.count].numpy()
    recognizer = Recognizer.load(args.model)
    original = np.mean([p.digit for p in recognizer.predict_arrays(images, recognizer.batch_logits)] == labels)
    digits = (images * 255).round().astype(np.uint8)
    preprocessed = np.mean(
        [r.digit for r in recognizer.predict_many((str(i), d) for i, d in enumerate(digits))] == labels
    )
    print(f"{'input':<24}{'accuracy':>10}{'vs original':>13}{'seconds':>9}")
    print(f"{'original 28x28':<24}{100 * original:>9.2f}%{'':>13}")
    print(f"{'original, preprocessed':<24}{100 * preprocessed:>9.2f}%{100 * (preprocessed - original):>+12.2f}")
    rng = np.random.default_rng(0)
    for style in STYLES:
        started = time.perf_counter()
        results = recognizer.predict_many((str(i), render(d, style, rng)) for i, d in enumerate(digits))
        accuracy = np.mean([getattr(r, "digit", -1) == label for r, label in zip(results, labels)])
        print(
            f"{style:<24}{100 * accuracy:>9.2f}%{100 * (accuracy - original):>+12.2f}{time.perf_counter() - started:>9.1f}"
        )


if __name__ == "__main__":
    main()
