"""Numbers written with MNIST digits (digitrec.strings.compose), rendered as a person's image; used by the
tests and bench/read_numbers.py. The row is rendered by person_style: scaled up, dark ink on light
paper, paper noise, blur, JPEG.
"""

import numpy as np

from digitrec.strings import SPACINGS, compose  # noqa: F401  (the tests and the bench take both from here)
from person_style import render

STYLE = "dark-on-light jpeg"


def number_image(images: np.ndarray, labels: np.ndarray, length: int, spacing: str,
                 rng: np.random.Generator) -> tuple[bytes, str]:
    """A random `length`-digit string drawn from `images` (N, 28, 28, 0..1) with their `labels`, rendered
    as a person's JPEG; returns the file's bytes and the true text."""
    chosen = rng.integers(0, len(images), length)
    row = compose([images[i] for i in chosen], spacing, rng)
    return render((row * 255).round().astype(np.uint8), STYLE, rng), "".join(str(int(labels[i])) for i in chosen)
