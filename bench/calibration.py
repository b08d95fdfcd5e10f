"""How far a digit model's confidence can be trusted: calibration error, the unsure flag and selective
prediction, on MNIST digits in every person style (digitrec.calibrate.readings: the plain image and the
eight renderings of digitrec.person_style, read as `digitrec predict` reads files).

Per style: accuracy, and the share of wrong and of right readings flagged unsure. All styles together:
the expected calibration error (15 bins) of the raw and of the calibrated confidence, the flag rates
(targets: >= 90 % of wrong readings, <= 5 % of right ones), the error among the most confident
100/99/97/95 % of readings (coverage against error), and the reliability table.

    python bench/calibration.py [--model PATH] [--count 2000] [--split test|validation]

The calibration is fitted on the validation split (`digitrec calibrate`); report with the test split.
"""

import argparse
import time

from digitrec import confidence, data
from digitrec.calibrate import pooled, readings
from digitrec.recognizer import Recognizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--count", type=int, default=2000, help="Digits of the split per style.")
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    args = parser.parse_args()
    recognizer = Recognizer.load(args.model)
    calibration = recognizer.calibration
    started = time.perf_counter()
    found = readings(recognizer, getattr(data.load(), args.split), args.count)
    print(
        f"model {recognizer.info['weights']}; T = {calibration.temperature:g}, unsure below "
        f"{calibration.unsure_below:g}; {args.count:,} {args.split} digits per style ({time.perf_counter() - started:.0f} s)"
    )
    print(f"{'style':<22}{'accuracy':>9}{'wrong flagged':>15}{'right flagged':>15}{'no digit':>10}")
    for style, one in found.items():
        probabilities = calibration.probabilities(one.logits)
        correct = probabilities.argmax(1) == one.labels
        rates = confidence.flag_rates(probabilities.max(1), correct, calibration.unsure_below)
        print(
            f"{style:<22}{100 * correct.mean():>8.2f}%{100 * rates['wrong_flagged']:>14.1f}%"
            f"{100 * rates['right_flagged']:>14.1f}%{one.failed:>10}"
        )
    logits, labels = pooled(found)
    raw, calibrated = confidence.UNCALIBRATED.probabilities(logits), calibration.probabilities(logits)
    correct = calibrated.argmax(1) == labels
    confidences = calibrated.max(1)
    rates = confidence.flag_rates(confidences, correct, calibration.unsure_below)
    print(f"\nall styles: {len(labels):,} readings, accuracy {100 * correct.mean():.2f}%, {rates['wrong']} wrong")
    print(
        f"expected calibration error: raw {100 * confidence.expected_calibration_error(raw.max(1), correct):.2f}%, "
        f"calibrated {100 * confidence.expected_calibration_error(confidences, correct):.2f}%"
    )
    print(
        f"unsure flags {100 * rates['wrong_flagged']:.1f}% of wrong readings, {100 * rates['right_flagged']:.1f}% of right ones"
    )
    print(f"\n{'coverage':>9}{'error':>9}{'confidence at least':>21}")
    for row in confidence.coverage_table(confidences, correct):
        print(f"{100 * row['coverage']:>8.0f}%{100 * row['error']:>8.2f}%{row['confidence_at_least']:>21.6f}")
    print(f"\n{'confidence':>13}{'readings':>10}{'mean conf.':>12}{'accuracy':>10}")
    for row in confidence.reliability(confidences, correct):
        print(
            f"{row['low']:>6.2f}-{row['high']:<6.2f}{row['count']:>10}{100 * row['confidence']:>11.2f}%{100 * row['accuracy']:>9.2f}%"
        )


if __name__ == "__main__":
    main()
