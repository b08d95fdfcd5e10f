"""Numbers written with MNIST digits (digitrec.strings.written), rendered as a person's image; used by the
tests and bench/read_numbers.py. A row is rendered by person_style: scaled up, dark ink on light paper,
paper noise, blur, JPEG; a photographed number is already its photo (strings.photograph).
"""

import numpy as np

from digitrec.strings import CLASSES, SPACINGS, compose, written  # noqa: F401  (the tests and the bench take these from here)
from person_style import render

STYLE = "dark-on-light jpeg"


def number_image(images: np.ndarray, labels: np.ndarray, length: int, kind: str,
                 rng: np.random.Generator) -> tuple[bytes, str]:
    """A random `length`-digit string drawn from `images` (N, 28, 28, 0..1) with their `labels`, written as
    `kind` (one of CLASSES) and rendered as a person's image; returns the file's bytes and the true text."""
    chosen = rng.integers(0, len(images), length)
    made = written([images[i] for i in chosen], kind, rng)
    if not isinstance(made, bytes):
        made = render((made * 255).round().astype(np.uint8), STYLE, rng)
    return made, "".join(str(int(labels[i])) for i in chosen)
