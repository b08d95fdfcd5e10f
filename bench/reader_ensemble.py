"""Two number readers against their average (the mean of their column probabilities): accuracy per kind
of writing and how many wrong readings the reading's confidence catches when 5 % of the right ones are
flagged, on strings of validation digits of every kind (lengths 1-8; the confidence uncalibrated, as
calibration keeps its order).

    nice python bench/reader_ensemble.py RUN_A RUN_B [--count 150] [--split validation|test]

An idea to measure (issue 21), not a feature: `read` uses one reader.
"""

import argparse

import numpy as np

from digitrec import confidence, data, runtime
from digitrec.errors import ImageError
from digitrec.number_strings import CLASSES
from digitrec.person_style import number_image
from digitrec.reading import read
from digitrec.recognizer import Recognizer
from digitrec.tasks import NUMBERS


class Average:
    """Readers read as one: the mean of their per-column probabilities (a runtime as `reading.read` uses it)."""

    task, calibration = NUMBERS, confidence.UNCALIBRATED

    def __init__(self, members):
        self.members = members
        self.info = {"weights": " + ".join(str(member.info.get("weights")) for member in members)}

    def probabilities(self, strips: np.ndarray) -> np.ndarray:
        return np.mean([member.probabilities(strips) for member in self.members], axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--count", type=int, default=150, help="strings per kind of writing")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    args = parser.parse_args()
    split = getattr(data.load(), args.split)
    images, labels = split.images[:, 0].numpy(), split.labels.numpy()
    made = []
    for kind in CLASSES:
        rng = np.random.default_rng([0, CLASSES.index(kind), 99])
        made += [(kind, *number_image(images, labels, int(rng.integers(1, 9)), kind, rng)) for _ in range(args.count)]
    recognizer = Recognizer.load()
    first, second = (runtime.load(path, NUMBERS) for path in (args.first, args.second))
    print(f"{'reader':<8}{'right':>8}{'wrong caught':>14}  " + "  ".join(kind for kind in CLASSES))
    for name, reader in (
        ("first", Average([first])),
        ("second", Average([second])),
        ("average", Average([first, second])),
    ):
        scores, right, kinds = [], [], []
        for kind, image, truth in made:
            try:
                reading = read(reader, recognizer, image)
                scores.append(reading.confidence)
                right.append(reading.text == truth)
            except ImageError:
                scores.append(0.0)
                right.append(False)
            kinds.append(kind)
        scores, right, kinds = np.array(scores), np.array(right), np.array(kinds)
        threshold = np.sort(scores[right])[int(0.05 * right.sum())]
        print(
            f"{name:<8}{100 * right.mean():>7.1f}%{100 * np.mean(scores[~right] < threshold):>13.1f}%  "
            + "  ".join(f"{100 * right[kinds == kind].mean():>{len(kind)}.1f}" for kind in CLASSES),
            flush=True,
        )


if __name__ == "__main__":
    main()
