"""Throughput of `digitrec predict` over a folder of 1,000 PNG files: decode + preprocess + batched inference.

Writes 1,000 MNIST test digits as 280x280 dark-on-light PNGs into a temporary folder, then times the
same path the CLI takes (folder expansion, Recognizer.predict_many) in-process: a warm-up, then the
median of 5 runs. Also times the whole CLI command once, start-up included.

    python bench/predict_throughput.py [--model PATH] [--count 1000]
    python bench/predict_throughput.py --compare-with ../main/src --rounds 3   # old and new code, alternated
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitrec import data
from digitrec.inputs import expand_inputs
from digitrec.recognizer import Recognizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        help="another checkout's src/ folder: run this benchmark on it and on this one, alternately",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternations with --compare-with")
    args = parser.parse_args()
    if args.compare_with:
        compare(args)
        return
    mnist = data.load()
    digits = (mnist.test.images[: args.count, 0].numpy() * 255).astype(np.uint8)
    labels = mnist.test.labels[: args.count].numpy()
    recognizer = Recognizer.load(args.model)
    with tempfile.TemporaryDirectory() as folder:
        for index, digit in enumerate(digits):
            Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR).save(f"{folder}/{index:05d}.png")
        recognizer.predict_many(expand_inputs((folder,))[:50])  # warm-up
        seconds = []
        for _ in range(5):
            started = time.perf_counter()
            results = recognizer.predict_many(expand_inputs((folder,)))
            seconds.append(time.perf_counter() - started)
        accuracy = np.mean([r.digit == label for r, label in zip(results, labels)])
        median = statistics.median(seconds)
        started = time.perf_counter()
        model_flag = ["--model", args.model] if args.model else []
        subprocess.run(
            [sys.executable, "-m", "digitrec", "predict", folder, "--json", *model_flag],
            check=True,
            capture_output=True,
        )
        whole = time.perf_counter() - started
    print(
        f"{args.count} PNGs of 280x280: {args.count / median:.0f} images/s in-process "
        f"(median of 5: {median:.2f} s), accuracy {100 * accuracy:.2f}%"
    )
    print(
        f"whole `digitrec predict FOLDER --json` command, start-up included: {whole:.2f} s "
        f"({args.count / whole:.0f} images/s)"
    )


def compare(args) -> None:
    """This benchmark in a fresh process on each source tree in turn, `rounds` times: images/s in-process."""
    trees = {"other": args.compare_with.resolve(), "this": Path(__file__).resolve().parents[1] / "src"}
    figures: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            command = [sys.executable, __file__, "--count", str(args.count)] + (
                ["--model", args.model] if args.model else []
            )
            output = subprocess.run(
                command, env={**os.environ, "PYTHONPATH": str(tree)}, check=True, capture_output=True, text=True
            ).stdout
            figures[name].append(float(re.search(r"(\d+) images/s in-process", output).group(1)))
            print(f"{name} ({tree}): {figures[name][-1]:.0f} images/s", flush=True)
    for name, tree in trees.items():
        print(f"{name}: median {statistics.median(figures[name]):.0f} images/s over {args.rounds} runs ({tree})")


if __name__ == "__main__":
    main()
