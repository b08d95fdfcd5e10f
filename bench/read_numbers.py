"""Reading whole numbers: accuracy per kind of writing and length, and numbers/s, on strings of MNIST digits.

Each string is made of random digits of the chosen split, written as one kind of number
(number_strings.CLASSES: separate, close, touching, overlapping, overlapping hard, uneven, photographed)
and rendered as a person's image by digitrec/person_style.py; the set is the same on every run (seeded).
For each kind and length: whole-string accuracy, per-digit accuracy (position
by position, where the reading has the right length), mean edit distance; for single digits also
`predict` on the same images. Then numbers/s end to end (JPEG bytes -> text) for 4-digit strings, in
one process and in one worker process per core.

    nice python bench/read_numbers.py [--model PATH] [--reader PATH] [--count 200] [--lengths 1,2,...,12]
                                      [--classes separate,...] [--split test|validation]

Choose with `--split validation`; report with the test split (never tuned on).
"""

import argparse
import multiprocessing
import os
import statistics
import time

import numpy as np

from digitrec import data, runtime
from digitrec.errors import ImageError
from digitrec.number_strings import CLASSES
from digitrec.person_style import number_image
from digitrec.reading import read
from digitrec.recognizer import Recognizer
from digitrec.tasks import NUMBERS

recognizer: Recognizer | None = None  # each speed worker's own
reader = None  # and its number reader


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def read_text(image: bytes) -> str:
    try:
        return read(reader, recognizer, image).text
    except ImageError:
        return ""


def start_worker(model, reader_path):
    global recognizer, reader
    recognizer, reader = Recognizer.load(model, threads=1), runtime.load(reader_path, NUMBERS, threads=1)


def numbers_per_second(images: list[bytes], model, reader, workers: int, repeats: int = 3) -> float:
    """Median over `repeats` of reading all `images` in `workers` processes (1: this process)."""
    rates = []
    if workers == 1:
        start_worker(model, reader)
        read_text(images[0])  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            for image in images:
                read_text(image)
            rates.append(len(images) / (time.perf_counter() - started))
        return statistics.median(rates)
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, initializer=start_worker, initargs=(model, reader)) as pool:
        pool.map(read_text, images[: 4 * workers], chunksize=1)  # warm-up: every worker loaded
        for _ in range(repeats):
            started = time.perf_counter()
            pool.map(read_text, images, chunksize=8)
            rates.append(len(images) / (time.perf_counter() - started))
    return statistics.median(rates)


def main():
    global recognizer, reader
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--reader", default=None)
    parser.add_argument("--count", type=int, default=200, help="strings per kind and length")
    parser.add_argument("--lengths", default=",".join(map(str, range(1, 13))))
    parser.add_argument(
        "--classes", default=",".join(CLASSES), help="kinds of writing (strings.CLASSES), comma-separated"
    )
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-speed", action="store_true", help="skip the numbers/s measurement")
    args = parser.parse_args()
    split = getattr(data.load(), args.split)
    images, labels = split.images[:, 0].numpy(), split.labels.numpy()
    recognizer, reader = Recognizer.load(args.model), runtime.load(args.reader, NUMBERS)
    lengths = [int(n) for n in args.lengths.split(",")]
    kinds = args.classes.split(",")
    unknown = sorted(set(kinds) - set(CLASSES))
    if unknown:
        parser.error(f"unknown kinds {', '.join(unknown)} (choose from {', '.join(CLASSES)})")
    print(
        f"{'kind':<18}{'length':>6}{'strings':>8}{'whole':>9}{'per digit':>11}{'edit dist':>10}{'predict':>9}{'s':>7}"
    )
    speed_set = []
    for kind in kinds:
        for length in lengths:
            rng = np.random.default_rng([args.seed, CLASSES.index(kind), length])
            made = [number_image(images, labels, length, kind, rng) for _ in range(args.count)]
            if length == 4:
                speed_set += [image for image, _ in made]
            started = time.perf_counter()
            texts = [read_text(image) for image, _ in made]
            seconds = time.perf_counter() - started
            truths = [truth for _, truth in made]
            whole = np.mean([t == r for t, r in zip(texts, truths)])
            digits = np.mean(
                [a == b for t, r in zip(texts, truths) for a, b in zip(t, r) if len(t) == len(r)]
                + [False] * sum(len(r) for t, r in zip(texts, truths) if len(t) != len(r))
            )
            distance = np.mean([edit_distance(t, r) for t, r in zip(texts, truths)])
            predicted = ""
            if length == 1:
                results = recognizer.predict_many([(str(i), image) for i, (image, _) in enumerate(made)], workers=1)
                predicted = (
                    f"{100 * np.mean([str(getattr(p, 'digit', '')) == r for p, r in zip(results, truths)]):.2f}%"
                )
            print(
                f"{kind:<18}{length:>6}{len(made):>8}{100 * whole:>8.2f}%{100 * digits:>10.2f}%{distance:>10.3f}"
                f"{predicted:>9}{seconds:>7.1f}",
                flush=True,
            )
    if speed_set and not args.no_speed:
        cores = os.cpu_count() or 1
        print(f"\n4-digit strings, JPEG bytes -> text ({len(speed_set)} strings, all kinds, median of 3):")
        print(f"  1 process:            {numbers_per_second(speed_set, args.model, args.reader, 1):7.1f} numbers/s")
        print(
            f"  {cores} worker processes:  {numbers_per_second(speed_set, args.model, args.reader, cores):7.1f} numbers/s"
        )


if __name__ == "__main__":
    main()
