"""Calibrate the number reader's confidence on validation strings, and measure its honest doubt on test strings.

A reading's confidence (reading.py) starts as the chance that the number of digits is right (the
likeliest reading against the likeliest reading of every other length) times each digit's chance; Platt
scaling (confidence.fit_platt: a temperature T and a shift of the log-odds) makes it mean what it says
(one T alone left the calibration error of validation strings at 1.4-1.6 %, Platt at 0.7-1.2 %, each
fitted on 11,200-14,000 strings and measured on 4,200-7,000 others), and the `unsure` threshold is the
highest that flags at most confidence.FLAG_RIGHT_CHOSEN of the right readings (choose_unsure_below).
Both are fitted on strings of validation digits of every kind of writing (number_strings.CLASSES), lengths
1-8, rendered as bench/read_numbers.py renders them, and written beside the reader (calibration.json).

    nice python bench/calibrate_reader.py [--reader PATH] [--count 2000] [--save]      # fit on validation
    nice python bench/calibrate_reader.py [--reader PATH] --split test [--count 2000]  # measure with the saved one

Measuring prints, for all kinds together and for each: accuracy, the share of wrong readings flagged
unsure and of right ones, the expected calibration error, and error at 100/99/97/95 % coverage. The
calibration error of a finite sample is never 0: were every confidence exactly right, 1,400 strings
would still show 1.3 % on average and 14,000 strings 0.4 % (the noise floor the report prints, drawn from
the calibrated confidences themselves).
"""

import argparse
import time

import numpy as np

from digitrec import confidence, data, runtime
from digitrec.errors import ImageError
from digitrec.files import BUNDLED_READER
from digitrec.number_strings import CLASSES
from digitrec.person_style import number_image
from digitrec.reading import calibrated_confidence, read
from digitrec.recognizer import Recognizer
from digitrec.runtime import Runtime
from digitrec.tasks import NUMBERS

LENGTHS = (1, 8)  # each string's length is drawn from this range, both ends included


def readings(
    reader: Runtime, recognizer: Recognizer, images: np.ndarray, labels: np.ndarray, count: int, seed: int
) -> list[dict]:
    """`count` strings of each kind read with the reader's confidence left uncalibrated: kind, truth, text, confidence."""
    made = []
    for kind in CLASSES:
        rng = np.random.default_rng([seed, CLASSES.index(kind), 99])
        for _ in range(count):
            image, truth = number_image(images, labels, int(rng.integers(LENGTHS[0], LENGTHS[1] + 1)), kind, rng)
            try:
                reading = read(reader, recognizer, image)
                text, score = reading.text, reading.confidence
            except ImageError:
                text, score = "", 0.0
            made.append({"kind": kind, "truth": truth, "text": text, "confidence": score})
    return made


def report(calibration: confidence.Calibration, made: list[dict]) -> None:
    raw = np.array([one["confidence"] for one in made])
    calibrated = np.array([calibrated_confidence(calibration, q) for q in raw])
    right = np.array([one["text"] == one["truth"] for one in made])
    kinds = np.array([one["kind"] for one in made])
    print(f"T = {calibration.temperature:g}, bias {calibration.bias:g}, unsure below {calibration.unsure_below:g}")
    print(
        f"{'kind':<18}{'strings':>8}{'right':>8}{'wrong flagged':>15}{'right flagged':>15}{'ECE':>7}"
        f"{'floor':>7}{'raw ECE':>9}  error at 100/99/97/95 % coverage"
    )
    for kind in ("all", *CLASSES):
        chosen = np.ones(len(made), bool) if kind == "all" else kinds == kind
        rates = confidence.flag_rates(calibrated[chosen], right[chosen], calibration.unsure_below)
        table = confidence.coverage_table(calibrated[chosen], right[chosen])
        print(
            f"{kind:<18}{chosen.sum():>8}{100 * right[chosen].mean():>7.2f}%{100 * rates['wrong_flagged']:>14.1f}%"
            f"{100 * rates['right_flagged']:>14.1f}%{100 * confidence.expected_calibration_error(calibrated[chosen], right[chosen]):>6.2f}%"
            f"{100 * noise_floor(calibrated[chosen]):>6.2f}%"
            f"{100 * confidence.expected_calibration_error(raw[chosen], right[chosen]):>8.2f}%  "
            + " / ".join(f"{100 * row['error']:.2f}" for row in table)
        )


def noise_floor(confidences: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The mean calibration error of `confidences` were each exactly right: outcomes drawn from them."""
    rng = np.random.default_rng(seed)
    return float(
        np.mean(
            [
                confidence.expected_calibration_error(confidences, rng.random(len(confidences)) < confidences)
                for _ in range(draws)
            ]
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--reader", default=None, help="run folder or weights (default: the bundled reader)")
    parser.add_argument("--count", type=int, default=2000, help="strings per kind of writing")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", action="store_true", help="write the fitted calibration beside the reader")
    args = parser.parse_args()
    split = getattr(data.load(), args.split)
    recognizer, reader = Recognizer.load(args.model), runtime.load(args.reader, NUMBERS)
    saved = confidence.load(args.reader or BUNDLED_READER) if args.split == "test" else None
    reader.calibration = confidence.UNCALIBRATED  # read the raw confidence
    started = time.perf_counter()
    made = readings(reader, recognizer, split.images[:, 0].numpy(), split.labels.numpy(), args.count, args.seed)
    print(f"{len(made)} {args.split} strings read in {time.perf_counter() - started:.0f} s")
    if args.split == "test":
        report(saved, made)
        return
    raw = np.array([one["confidence"] for one in made])
    right = np.array([one["text"] == one["truth"] for one in made])
    temperature, bias = confidence.fit_platt(raw, right)
    fitted = confidence.Calibration(temperature, bias=bias)
    calibrated = np.array([calibrated_confidence(fitted, q) for q in raw])
    unsure_below = round(confidence.choose_unsure_below(calibrated, right), 6)
    record = {
        "fitted_on": f"{len(made)} validation strings: {args.count} of each kind ({', '.join(CLASSES)}), "
        f"lengths {LENGTHS[0]}-{LENGTHS[1]} (bench/calibrate_reader.py)",
        "validation": {
            "readings": len(made),
            "accuracy": float(right.mean()),
            "ece_uncalibrated": confidence.expected_calibration_error(raw, right),
            "ece": confidence.expected_calibration_error(calibrated, right),
            **confidence.flag_rates(calibrated, right, unsure_below),
        },
    }
    calibration = confidence.Calibration(temperature, unsure_below, True, record, bias)
    report(calibration, made)
    if args.save:
        print("written:", confidence.save(calibration, args.reader or BUNDLED_READER))


if __name__ == "__main__":
    main()
