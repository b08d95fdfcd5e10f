"""A digit model's readings of MNIST digits as people's images show them, and its calibration fitted on them.

`readings` renders a split's digits in every person style (digitrec.person_style: the plain 28x28 image and
eight renderings, from JPEG photos to ruled and squared paper) and reads them as `digitrec predict`
does (`Recognizer.predict_many`: decoding, finding the ink, framing), keeping each reading's logits
from the model's float copy. `calibrate` fits the model's calibration (confidence.py) on the
validation split's readings and writes it beside the model; bench/calibration.py measures the result
on the test split. Digits whose image holds no ink that preprocess finds are left out (counted).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec import confidence, data
from digitrec.confidence import Calibration
from digitrec.errors import ImageError
from digitrec.files import BUNDLED_MODEL
from digitrec.person_style import STYLES, render
from digitrec.recognizer import Recognizer

PLAIN = "plain 28x28"  # the MNIST image itself, through preprocess
COUNT = 2000  # digits of the split per style (the validation split has 5,000)
SEED = 0  # for the renderings


@dataclass
class Readings:
    logits: np.ndarray  # (N, 10) float32, from the model's float copy
    labels: np.ndarray  # (N,)
    failed: int  # renderings in which no digit was found


def readings(
    recognizer: Recognizer, split: data.Split, count: int = COUNT, styles=(PLAIN, *STYLES), seed: int = SEED
) -> dict[str, Readings]:
    """Per style, the first `count` digits of `split` rendered in it (each style from its own generator
    seeded `seed`, as bench/person_style.py renders them) and read through `predict_many`."""
    digits = (split.images[:count, 0].numpy() * 255).round().astype(np.uint8)
    labels = split.labels[:count].numpy()
    found = {}
    for style in styles:
        rng = np.random.default_rng(seed)
        images = ((str(i), digit if style == PLAIN else render(digit, style, rng)) for i, digit in enumerate(digits))
        predictions = recognizer.predict_many(images)
        read = [i for i, prediction in enumerate(predictions) if not isinstance(prediction, ImageError)]
        views = np.stack([predictions[i].preprocessed for i in read])[:, None]  # (n, 1, 28, 28)
        found[style] = Readings(recognizer.logits(views.astype(np.float32)), labels[read], len(digits) - len(read))
    return found


def pooled(found: dict[str, Readings]) -> tuple[np.ndarray, np.ndarray]:
    """All styles' logits and labels together."""
    return (
        np.concatenate([one.logits for one in found.values()]),
        np.concatenate([one.labels for one in found.values()]),
    )


def calibrate(
    model_path: str | Path | None = None, count: int = COUNT, data_dir: str | Path | None = None, write: bool = True
) -> tuple[Calibration, Path]:
    """Fit the calibration of the digit model at `model_path` (None: the bundled default) on `count`
    validation digits in every style, and write it beside the model (unless not `write`)."""
    recognizer = Recognizer.load(model_path)
    mnist = data.load(data_dir)
    found = readings(recognizer, mnist.validation, count)
    logits, labels = pooled(found)
    record = {
        "fitted_on": f"the first {count:,} validation digits in each of {len(found)} styles: " + ", ".join(found),
        "failed": sum(one.failed for one in found.values()),
    }
    fitted = confidence.fit(logits, labels, record)
    model_path = BUNDLED_MODEL if model_path is None else model_path
    path = confidence.save(fitted, model_path) if write else confidence.calibration_path(model_path)
    return fitted, path
