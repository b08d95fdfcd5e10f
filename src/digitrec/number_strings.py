"""Numbers written with MNIST digits, as the number reader sees them: made, framed and decoded.

Owns three things about a written number as a row of digits:
- making one from MNIST digits (`compose`): each digit cropped to its ink, scaled by up to ±10 %, slanted
  by up to ±8°, set on a baseline jittered by up to ±2 px (all at MNIST's 28-px scale), with one of four
  spacings; the reader trains on these (`batch`), and the tests and bench/read_numbers.py measure on them;
- framing any row of ink as the reader's input (`strip`): the digits scaled to MNIST's 20-px height in a
  strip 32 px high, each group of columns centred vertically, its width a multiple of the reader's column
  step; training frames its rows and `numbers` frames a person's ink with this same function;
- decoding the reader's output (`decode`): per-column scores over blank + ten digits (CTC) -> digits, each
  with the columns it was read from.
Only numpy and Pillow (and preprocess's dilation): reading a number needs no torch. Not owned here: the reader model (models), its
training loop (train), finding the number in a person's image (numbers).
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from digitrec.preprocess import dilate

SPACINGS = ("separate", "close", "touching", "overlapping")
# - separate: 3-8 px between the digits' boxes
# - close: 0-2 px between the boxes
# - touching: each digit slid left until its ink touches the ink already there
# - overlapping: each digit's box overlaps the previous one's by 1-20 % of the new digit's width
ROW_HEIGHT = 36  # px at MNIST's scale: a 20 px digit scaled by 1.1, the jitter, and a margin
MARGIN = 4  # px of paper around a composed row
INK = 0.3  # a pixel at or above this (on 0..1) is ink, for the touching test

STRIP_HEIGHT = 32  # px: the reader's input height
DIGIT_HEIGHT = 20  # px: a digit's height in the strip, MNIST's box
STRIP_MARGIN = 4  # px of blank either side of the ink
COLUMN_STEP = 2  # px of strip per column of the reader's output (its one horizontal 2x2 pool)
GROUP_INK = 0.2  # a column holding ink at least this dark (0..1) is inked, for grouping columns
GROUP_GAP = 0.1  # a gap of fewer empty columns than this share of a digit's height does not split a group
MAX_GAP = 16  # px: a wider gap between groups is narrowed to this in the strip (about 0.8 of a digit's height)
BLANK = 0  # the reader's class for "no new digit here"; digit d is class d + 1
THICK_PEN = 0.25  # share of training strings drawn with a thicker pen (a 3x3 dilation mixed in at half strength)
MAX_TRAINING_LENGTH = 12  # training strings have 1-8 digits, and one in LONG_SHARE 9 to this many
LONG_SHARE = 0.1
TRAINING_HEIGHTS = (0.9, 1.15)  # a training string's digits are scaled to DIGIT_HEIGHT divided by a share in this range


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
            left = min(right + 1, max(MARGIN, first_contact(row, piece, top)))
        window = row[top : top + height, left : left + width]
        np.maximum(window, piece, out=window)
        right = max(right, left + width)
    return row[:, : right + MARGIN]


def first_contact(row: np.ndarray, piece: np.ndarray, top: int) -> int:
    """Where `piece`, set at row `top` and slid leftwards from clear of the row's ink, first touches it
    (8-connected): the largest left edge with a piece pixel next to or on ink; MARGIN when none meets."""
    inked_row, inked_piece = row >= INK, piece >= INK
    any_row, any_piece = inked_row.any(1), inked_piece.any(1)
    rightmost = np.where(any_row, inked_row.shape[1] - 1 - inked_row[:, ::-1].argmax(1), -10**9)  # per row of `row`
    leftmost = np.where(any_piece, inked_piece.argmax(1), 10**9)  # per row of `piece`
    contact = MARGIN
    for offset in (-1, 0, 1):  # a piece row against the row's ink one row above, level, one below
        rows = np.arange(len(leftmost)) + top + offset
        inside = (rows >= 0) & (rows < len(rightmost))
        if inside.any():
            contact = max(contact, int((rightmost[rows[inside]] + 1 - leftmost[inside]).max()))
    return contact


@dataclass(frozen=True)
class Strip:
    """A row of ink framed for the reader, and how its columns map back onto the ink it came from."""
    pixels: np.ndarray  # (STRIP_HEIGHT, W) float32, 0..1, W a multiple of COLUMN_STEP
    strip_columns: np.ndarray  # where each group of ink starts and ends in the strip...
    ink_columns: np.ndarray  # ...and in the ink: the two are mapped linearly between these points

    def to_ink_column(self, strip_column: float) -> float:
        return float(np.interp(strip_column, self.strip_columns, self.ink_columns))


def strip(ink: np.ndarray, digit_height: float) -> Strip:
    """`ink` (white on black, 0..1, specks already removed) with its digits `digit_height` px tall, as
    the reader's input, STRIP_HEIGHT rows high. The ink is taken in groups of columns (runs of inked
    columns less than GROUP_GAP of a digit's height apart: one digit, digits that touch or nearly do, a 5
    and its detached bar); each group is cropped to its rows, scaled so a digit is DIGIT_HEIGHT px tall
    (less if the group is too tall for the strip, as touching digits on a slope may be) and centred
    vertically, so digits written on a slope or scattered up and down read as on one line; wide gaps
    between groups are narrowed to MAX_GAP."""
    scale = DIGIT_HEIGHT / digit_height
    inked = np.nonzero(ink.max(0) >= GROUP_INK)[0]
    if not len(inked):
        inked = np.nonzero(ink.max(0) > 0)[0]
    breaks = np.nonzero(np.diff(inked) > max(1.0, GROUP_GAP * digit_height))[0]
    starts, stops = inked[np.r_[0, breaks + 1]], inked[np.r_[breaks, len(inked) - 1]] + 1
    starts = np.maximum(starts - 1, np.r_[0, stops[:-1]])  # one column of faint edge either side
    stops = np.minimum(stops + 1, np.r_[starts[1:], ink.shape[1]])
    placed, strip_columns, ink_columns = [], [], []
    x = STRIP_MARGIN
    for index, (left, right) in enumerate(zip(starts, stops)):
        block = ink[:, left:right]
        rows = np.nonzero(block.max(1) > 0)[0]
        block = block[rows[0] : rows[-1] + 1]
        group_scale = min(scale, (STRIP_HEIGHT - 2) / block.shape[0])
        height, width = max(1, round(block.shape[0] * group_scale)), max(1, round(block.shape[1] * group_scale))
        if (height, width) != block.shape:
            # Lanczos when shrinking (anti-aliased, as MNIST's digits are), bilinear when enlarging (no ringing)
            method = Image.Resampling.LANCZOS if group_scale < 1 else Image.Resampling.BILINEAR
            block = np.clip(np.asarray(Image.fromarray(np.ascontiguousarray(block), mode="F").resize((width, height), method),
                                       np.float32), 0, 1)
        if index:
            x += min(round((left - stops[index - 1]) * scale), MAX_GAP)
        placed.append((x, (STRIP_HEIGHT - height) // 2, block))
        strip_columns += [x, x + width]
        ink_columns += [left, right]
        x += width
    width = x + STRIP_MARGIN
    pixels = np.zeros((STRIP_HEIGHT, width + (-width) % COLUMN_STEP), np.float32)
    for left, top, block in placed:
        pixels[top : top + block.shape[0], left : left + block.shape[1]] = block
    return Strip(pixels, np.array(strip_columns, np.float64), np.array(ink_columns, np.float64))


def row_strip(row: np.ndarray, digit_height: float = DIGIT_HEIGHT) -> np.ndarray:
    """A composed row as the reader's input, its digits taken to be `digit_height` px tall (MNIST's are 20
    before `vary` scales them; training varies it, since a person's digits are measured less exactly)."""
    return strip(row, digit_height).pixels


def random_row(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, pens: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A random training string from `images` (N, 28, 28, 0..1): its row and its digits. Lengths 1-8, and
    sometimes up to MAX_TRAINING_LENGTH; every spacing equally often; with `pens`, some thicker strokes."""
    length = int(rng.integers(1, 9)) if rng.random() >= LONG_SHARE else int(rng.integers(9, MAX_TRAINING_LENGTH + 1))
    chosen = rng.integers(0, len(images), length)
    row = compose([images[i] for i in chosen], SPACINGS[int(rng.integers(len(SPACINGS)))], rng)
    if pens and rng.random() < THICK_PEN:
        row = (row + dilate(row, 1)) / 2
    return row, labels[chosen].astype(np.int64)


@dataclass(frozen=True)
class Batch:
    """Strings ready for the reader: strips padded to one width, and their digits for the CTC loss."""
    pixels: np.ndarray  # (B, 1, STRIP_HEIGHT, W) float32
    columns: np.ndarray  # (B,) int64: each strip's own width in output columns (the rest is padding)
    digits: np.ndarray  # (sum of lengths,) int64: every string's digits, one after another
    lengths: np.ndarray  # (B,) int64


def batch(strips: list[np.ndarray], digits: list[np.ndarray]) -> Batch:
    pixels = np.zeros((len(strips), 1, STRIP_HEIGHT, max(s.shape[1] for s in strips)), np.float32)
    for index, one in enumerate(strips):
        pixels[index, 0, :, : one.shape[1]] = one
    return Batch(pixels, np.array([s.shape[1] // COLUMN_STEP for s in strips], np.int64),
                 np.concatenate(digits), np.array([len(d) for d in digits], np.int64))


def random_batch(images: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator,
                 training: bool = True) -> Batch:
    """`count` random strings (`random_row`) as a batch; for training, with some thicker pens and the
    digits' scale varied (TRAINING_HEIGHTS)."""
    rows = [random_row(images, labels, rng, pens=training) for _ in range(count)]
    heights = [DIGIT_HEIGHT * rng.uniform(*TRAINING_HEIGHTS) if training else DIGIT_HEIGHT for _ in rows]
    return batch([row_strip(row, height) for (row, _), height in zip(rows, heights)], [digits for _, digits in rows])


def fixed_set(images: np.ndarray, labels: np.ndarray, count: int, seed: int = 0) -> Batch:
    """The same `count` strings on every call (with ordinary pens): what a split's string accuracy is measured on."""
    return random_batch(images, labels, count, np.random.default_rng([seed, count]), training=False)


@dataclass(frozen=True)
class Read:
    """One digit the reader found: its class scores where it is surest, and the output columns it spans."""
    digit: int
    probabilities: np.ndarray  # (10,) the ten digits' share at its surest column, blank left out
    confidence: float  # the probability of `digit` there (blank included: a faint digit is less sure)
    first: int  # its first and last output column
    last: int


def decode(probabilities: np.ndarray) -> list[Read]:
    """Best-path CTC decoding of one strip's (11, T) per-column probabilities: the likeliest class in each
    column, repeats merged, blanks dropped."""
    best = probabilities.argmax(0)
    found: list[Read] = []
    start = 0
    for column in range(1, len(best) + 1):
        if column < len(best) and best[column] == best[start]:
            continue
        if best[start] != BLANK:
            run = probabilities[:, start:column]
            surest = start + int(run[best[start]].argmax())
            scores = probabilities[1:, surest]
            found.append(Read(int(best[start]) - 1, scores / scores.sum(), float(probabilities[best[start], surest]),
                              start, column - 1))
        start = column
    return found


def texts(probabilities: np.ndarray, columns: np.ndarray) -> list[str]:
    """The strings read from a batch's (B, 11, T) probabilities, each strip's own columns only."""
    return ["".join(str(read.digit) for read in decode(p[:, :n])) for p, n in zip(probabilities, columns)]


def truths(digits: np.ndarray, lengths: np.ndarray) -> list[str]:
    """The strings of a batch's digits (one string after another) and lengths."""
    ends = np.cumsum(lengths)
    return ["".join(map(str, digits[end - length : end])) for end, length in zip(ends, lengths)]
