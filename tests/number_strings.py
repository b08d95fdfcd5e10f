"""Numbers written with MNIST digits, rendered as a person's image; used by tests and bench/read_numbers.py.

Each digit of a string is a random MNIST image of that digit, cropped to its ink, scaled by up to ±10 %,
slanted by up to ±8° and set on a baseline jittered by up to ±2 px (all at MNIST's 28-px scale). The
digits are set left to right with one of four spacings, then the row is rendered by person_style
(scaled up, dark ink on light paper, paper noise, blur, JPEG):

- separate: 3-8 px between the digits' boxes
- close: 0-2 px between the boxes
- touching: each digit slid left until its ink touches the ink already there
- overlapping: each digit's box overlaps the previous one's by 1-20 % of the new digit's width
"""

import math

import numpy as np
from PIL import Image

from person_style import render

SPACINGS = ("separate", "close", "touching", "overlapping")
STYLE = "dark-on-light jpeg"
ROW_HEIGHT = 36  # px at MNIST's scale: a 20 px digit scaled by 1.1, the jitter, and a margin
MARGIN = 4  # px of paper around the row
INK = 0.3  # a pixel at or above this (on 0..1) is ink, for the touching test


def vary(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 28x28 digit (0..1) cropped to its ink, scaled by ±10 % and slanted by ±8°."""
    rows, cols = np.nonzero(digit.any(1))[0], np.nonzero(digit.any(0))[0]
    ink = Image.fromarray(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], mode="F")
    scale = rng.uniform(0.9, 1.1)
    ink = ink.resize((max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.Resampling.BILINEAR)
    shear = math.tan(math.radians(rng.uniform(-8, 8)))  # x moves by shear * (height above the middle)
    extra = math.ceil(abs(shear) * ink.height)
    slanted = ink.transform((ink.width + extra, ink.height), Image.Transform.AFFINE,
                            (1, shear, -extra / 2 - shear * ink.height / 2, 0, 1, 0), Image.Resampling.BILINEAR)
    array = np.clip(np.asarray(slanted, dtype=np.float32), 0, 1)
    cols = np.nonzero(array.max(0) > 0.05)[0]
    return array[:, cols[0] : cols[-1] + 1]


def compose(digits: list[np.ndarray], spacing: str, rng: np.random.Generator) -> np.ndarray:
    """The digits (28x28, 0..1) set left to right as a row (ROW_HEIGHT high, 0..1, white on black)."""
    pieces = [vary(digit, rng) for digit in digits]
    row = np.zeros((ROW_HEIGHT, sum(p.shape[1] for p in pieces) + 8 * len(pieces) + 2 * MARGIN), np.float32)
    right = MARGIN  # one past the last column of the row's ink so far
    for index, piece in enumerate(pieces):
        height, width = piece.shape
        top = (ROW_HEIGHT - height) // 2 + int(rng.integers(-2, 3))
        top = min(max(top, 0), ROW_HEIGHT - height)
        if index == 0:
            left = MARGIN
        elif spacing == "separate":
            left = right + int(rng.integers(3, 9))
        elif spacing == "close":
            left = right + int(rng.integers(0, 3))
        elif spacing == "overlapping":
            left = right - max(1, round(rng.uniform(0.01, 0.2) * width))
        else:  # touching: slide left from clear of the row until the inks meet (8-connected)
            left = right + 1
            while left > MARGIN and not touches(row, piece, top, left):
                left -= 1
        window = row[top : top + height, left : left + width]
        np.maximum(window, piece, out=window)
        right = max(right, left + width)
    return row[:, : right + MARGIN]


def touches(row: np.ndarray, piece: np.ndarray, top: int, left: int) -> bool:
    """Whether `piece` set at (top, left) has ink on or next to the row's ink."""
    height, width = piece.shape
    inked = np.pad(piece >= INK, 1)
    grown = inked.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown |= np.roll(np.roll(inked, dy, 0), dx, 1)  # the padding keeps the rolls from wrapping ink
    region = np.pad(row >= INK, 1)[top : top + height + 2, left : left + width + 2]
    return bool((grown & region).any())


def number_image(images: np.ndarray, labels: np.ndarray, length: int, spacing: str,
                 rng: np.random.Generator) -> tuple[bytes, str]:
    """A random `length`-digit string drawn from `images` (N, 28, 28, 0..1) with their `labels`, rendered
    as a person's JPEG; returns the file's bytes and the true text."""
    chosen = rng.integers(0, len(images), length)
    row = compose([images[i] for i in chosen], spacing, rng)
    return render((row * 255).round().astype(np.uint8), STYLE, rng), "".join(str(int(labels[i])) for i in chosen)
