"""Numbers written with MNIST digits, as the number reader sees them: made, framed and decoded.

Owns four things about a written number as a row of digits:
- making one from MNIST digits (`compose`): each digit cropped to its ink, scaled by up to ±10 %, slanted
  by up to ±8°, set on a baseline jittered by up to ±2 px (all at MNIST's 28-px scale), with one of five
  spacings; or as people write (`Hand`): heights within the number differing by up to ±20 %, the baseline
  drifting or stepping by up to 15 % of a digit's height, one slant for the whole number up to ±15°;
  and rendered like a person's photo or scan (`photograph`). The reader trains on a mixture of these
  (`MIXTURES`, `random_batch`); the tests and bench/read_numbers.py measure on each kind (`CLASSES`);
- finding a number's marks in an ink map, specks left out (`number_marks`): `read` and the reader's
  training photos alike;
- framing any row of ink as the reader's input (`strip`): the digits scaled to MNIST's 20-px height in a
  strip 32 px high, each group of columns centred vertically, its width a multiple of the reader's column
  step; training frames its rows and `numbers` frames a person's ink with this same function;
- decoding the reader's output (`decode`): per-column scores over blank + ten digits (CTC) -> digits, each
  with the columns it was read from.
Only numpy, scipy and Pillow (and preprocess's ink finder): reading a number needs no torch. Not owned
here: the reader model (models), its training loop (train), reading the number in a person's image and
giving each digit its box (reading).
"""

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from digitrec.errors import ImageError
from digitrec.preprocess import components, dilate, ink_image

SPACINGS = ("separate", "close", "touching", "overlapping", "overlapping hard")
# - separate: 3-8 px between the digits' boxes
# - close: 0-2 px between the boxes
# - touching: each digit slid left until its ink touches the ink already there
# - overlapping: each digit's box overlaps the previous one's by 1-20 % of the new digit's width
# - overlapping hard: by 25-50 % of the narrower of the two digits' widths (people crossing neighbours)
HARD_OVERLAP = (0.25, 0.5)
ROW_HEIGHT = 36  # px at MNIST's scale: a 20 px digit scaled by 1.1, the jitter, and a margin
UNEVEN_HEIGHTS = 0.2  # as people write: a digit's height differs from the number's by up to ± this share...
BASELINE_STEP = 0.15  # ...its baseline from its left neighbour's by up to ± this share of a digit's height...
MAX_SLANT = 15.0  # ...and the whole number leans by up to ± this many degrees
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
INK_LEVEL = 0.25  # on the ink map's 0..1, what counts as ink when finding a number's marks
FAINT_LEVEL = 0.1  # and when telling specks from marks (chosen on photographed strings of validation digits)
SPECK_SIDE = 0.25  # a mark smaller than this share of the number's height both ways is a speck (dust, a point)
MAX_TRAINING_LENGTH = 12  # training strings have 1-8 digits, and one in LONG_SHARE 9 to this many
LONG_SHARE = 0.1
TRAINING_HEIGHTS = (0.9, 1.15)  # a training string's digits are scaled to DIGIT_HEIGHT divided by a share in this range


def vary(digit: np.ndarray, rng: np.random.Generator, scale: float = 1.0, slant: float | None = None) -> np.ndarray:
    """One 28x28 digit (0..1) cropped to its ink, scaled by `scale` and ±10 %, and slanted by `slant` and
    ±3° (degrees, positive leaning right), or by ±8° when no slant is given."""
    rows, cols = np.nonzero(digit.any(1))[0], np.nonzero(digit.any(0))[0]
    ink = Image.fromarray(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], mode="F")
    scale *= rng.uniform(0.9, 1.1)
    ink = ink.resize((max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.Resampling.BILINEAR)
    degrees = rng.uniform(-8, 8) if slant is None else slant + rng.uniform(-3, 3)
    shear = math.tan(math.radians(degrees))  # x moves by shear * (height above the middle)
    extra = math.ceil(abs(shear) * ink.height)
    slanted = ink.transform(
        (ink.width + extra, ink.height),
        Image.Transform.AFFINE,
        (1, shear, -extra / 2 - shear * ink.height / 2, 0, 1, 0),
        Image.Resampling.BILINEAR,
    )
    array = np.clip(np.asarray(slanted, dtype=np.float32), 0, 1)
    cols = np.nonzero(array.max(0) > 0.05)[0]
    return array[:, cols[0] : cols[-1] + 1]


@dataclass(frozen=True)
class Hand:
    """How one number is written beyond its spacing. Neat (the default): every digit its own height and
    slant, centred on one line with ±2 px of jitter. `uneven`: heights within the number differing by up
    to ±UNEVEN_HEIGHTS and the baseline moving by up to ±BASELINE_STEP of a digit's height from one digit
    to the next (a drift along the number plus steps); `slant`: the whole number's lean in degrees."""

    uneven: bool = False
    slant: float | None = None


NEAT = Hand()


def compose(digits: list[np.ndarray], spacing: str, rng: np.random.Generator, hand: Hand = NEAT) -> np.ndarray:
    """The digits (28x28, 0..1) set left to right as a row (at least ROW_HEIGHT high, 0..1, white on black)."""
    if hand.uneven:
        pieces = [vary(digit, rng, 1 + rng.uniform(-UNEVEN_HEIGHTS, UNEVEN_HEIGHTS), hand.slant) for digit in digits]
        step, drift = BASELINE_STEP * DIGIT_HEIGHT, rng.uniform(-1, 1)
        moves = np.clip(drift + rng.uniform(-1, 1, len(pieces)), -1, 1) * step
        bottoms = np.cumsum(np.r_[0, moves[1:]])  # each digit's baseline, px below the first one's
        bottoms -= bottoms.min()
    else:
        pieces = [vary(digit, rng, slant=hand.slant) for digit in digits]
        bottoms = np.zeros(len(pieces))
    height = max(ROW_HEIGHT, math.ceil(bottoms.max()) + ROW_HEIGHT)
    row = np.zeros((height, sum(p.shape[1] for p in pieces) + 8 * len(pieces) + 2 * MARGIN), np.float32)
    right, previous_width = MARGIN, 0  # one past the last column of the row's ink so far; the last digit's width
    for index, (piece, bottom) in enumerate(zip(pieces, bottoms)):
        piece_height, width = piece.shape
        if hand.uneven:  # on its baseline: MNIST's boxes are 20 px, so a digit's foot sits 4 px above the middle + 10
            top = round(ROW_HEIGHT / 2 + DIGIT_HEIGHT / 2 + bottom) - piece_height
        else:
            top = (ROW_HEIGHT - piece_height) // 2 + int(rng.integers(-2, 3))
        top = min(max(top, 0), height - piece_height)
        if index == 0:
            left = MARGIN
        elif spacing == "separate":
            left = right + int(rng.integers(3, 9))
        elif spacing == "close":
            left = right + int(rng.integers(0, 3))
        elif spacing == "overlapping":
            left = right - max(1, round(rng.uniform(0.01, 0.2) * width))
        elif spacing == "overlapping hard":
            left = right - max(1, round(rng.uniform(*HARD_OVERLAP) * min(width, previous_width)))
        else:  # touching: slide left from clear of the row until the inks meet (8-connected)
            left = min(right + 1, max(MARGIN, first_contact(row, piece, top)))
        left = max(left, 0)
        window = row[top : top + piece_height, left : left + width]
        np.maximum(window, piece, out=window)
        right, previous_width = max(right, left + width), width
    return row[:, : right + MARGIN]


def first_contact(row: np.ndarray, piece: np.ndarray, top: int) -> int:
    """Where `piece`, set at row `top` and slid leftwards from clear of the row's ink, first touches it
    (8-connected): the largest left edge with a piece pixel next to or on ink; MARGIN when none meets."""
    inked_row, inked_piece = row >= INK, piece >= INK
    any_row, any_piece = inked_row.any(1), inked_piece.any(1)
    rightmost = np.where(any_row, inked_row.shape[1] - 1 - inked_row[:, ::-1].argmax(1), -(10**9))  # per row of `row`
    leftmost = np.where(any_piece, inked_piece.argmax(1), 10**9)  # per row of `piece`
    contact = MARGIN
    for offset in (-1, 0, 1):  # a piece row against the row's ink one row above, level, one below
        rows = np.arange(len(leftmost)) + top + offset
        inside = (rows >= 0) & (rows < len(rightmost))
        if inside.any():
            contact = max(contact, int((rightmost[rows[inside]] + 1 - leftmost[inside]).max()))
    return contact


CLASSES = SPACINGS + ("uneven", "photographed")  # what bench/read_numbers.py and the tests measure, each on its own
ORDINARY_SPACINGS = SPACINGS[:4]


def written(digits: list[np.ndarray], kind: str, rng: np.random.Generator) -> np.ndarray | bytes:
    """The digits written as a number of one of CLASSES: a spacing (neat writing) as a row; "uneven" as a
    row with uneven heights and baseline and one slant, in one of the ordinary spacings; "photographed" as
    a photo's JPEG bytes (`photograph`) of a neat row in one of the ordinary spacings."""
    if kind in SPACINGS:
        return compose(digits, kind, rng)
    spacing = ORDINARY_SPACINGS[int(rng.integers(len(ORDINARY_SPACINGS)))]
    if kind == "uneven":
        return compose(digits, spacing, rng, Hand(uneven=True, slant=float(rng.uniform(-MAX_SLANT, MAX_SLANT))))
    if kind == "photographed":
        return photograph(compose(digits, spacing, rng), rng)
    raise ValueError(f"unknown kind of number {kind!r} (choose from {', '.join(CLASSES)})")


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
            block = np.clip(
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(block), mode="F").resize((width, height), method), np.float32
                ),
                0,
                1,
            )
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


@dataclass(frozen=True)
class Mixture:
    """What a reader's training strings are made of: each kind's share (0..1) of the strings."""

    spacings: tuple[float, ...]  # each spacing's weight, in SPACINGS' order
    uneven: float  # written with uneven heights and baseline (Hand.uneven)
    slanted: float  # leaning as a whole, up to ±MAX_SLANT (otherwise each digit its own ±8°)
    photographed: float  # rendered as a photo (`photograph`) and found again by the ink finder, as `read` does
    thick_pen: float  # drawn with a thicker pen (a 3x3 dilation mixed in at half strength)


# TrainConfig.strings names one. "people": every ordinary spacing as often as before, hard overlaps as
# often as two of them, a third of the strings uneven and a third slanted, a quarter photographed. Checked,
# not yet tuned: the bundled (plain) reader fine-tuned on it for 220 steps on the CPU went, on 200 4-digit
# validation strings of each kind, from 72.5 to 87.5 % on hard overlaps, 89 to 92.5 % uneven, 82 to 84.5 %
# photographed, the neat kinds within 1.5 points (bench/read_numbers.py --split validation)
MIXTURES = {
    "plain": Mixture(spacings=(1, 1, 1, 1, 0), uneven=0, slanted=0, photographed=0, thick_pen=THICK_PEN),
    "people": Mixture(spacings=(1, 1, 1, 1, 2), uneven=0.35, slanted=0.35, photographed=0.25, thick_pen=THICK_PEN),
}


def random_row(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, mixture: Mixture = MIXTURES["plain"]
) -> tuple[np.ndarray, np.ndarray, float]:
    """A random training string from `images` (N, 28, 28, 0..1): its row, its digits and their height in
    the row (px; DIGIT_HEIGHT unless photographed: the row then is the ink found in the photo). Lengths
    1-8, and sometimes up to MAX_TRAINING_LENGTH; spacings and hands as `mixture` says."""
    length = int(rng.integers(1, 9)) if rng.random() >= LONG_SHARE else int(rng.integers(9, MAX_TRAINING_LENGTH + 1))
    chosen = rng.integers(0, len(images), length)
    weights = np.asarray(mixture.spacings, np.float64)
    spacing = SPACINGS[int(np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(), side="right"))]
    hand = Hand(
        uneven=bool(rng.random() < mixture.uneven),
        slant=float(rng.uniform(-MAX_SLANT, MAX_SLANT)) if rng.random() < mixture.slanted else None,
    )
    row = compose([images[i] for i in chosen], spacing, rng, hand)
    if rng.random() < mixture.thick_pen:
        row = (row + spread(row, np.maximum)) / 2
    digit_height = float(DIGIT_HEIGHT)
    if rng.random() < mixture.photographed:
        scale = rng.uniform(*TRAINING_PHOTO_SCALE)
        try:
            row, shrunk = found_ink(photograph(row, rng, scale))
            digit_height *= scale * shrunk
        except ImageError:  # a faint pen on dark paper can leave nothing the ink finder calls ink: keep the row
            pass
    return row, labels[chosen].astype(np.int64), digit_height


def spread(row: np.ndarray, pick) -> np.ndarray:
    """Each pixel's 3x3 neighbourhood maximum (`pick` np.maximum: a thicker pen) or minimum (np.minimum: thinner)."""
    return dilate(row, 1) if pick is np.maximum else 1 - dilate(1 - row, 1)


PHOTO_SCALE = (3.0, 10.0)  # a photographed number is written this many times MNIST's scale
TRAINING_PHOTO_SCALE = (3.0, 4.0)  # the working resolution shrinks larger photos to about this anyway: cheaper
PHOTO_WORKING_HEIGHT = 128  # px: as reading.WORKING_HEIGHT, the height a photo's ink is found at
PHOTO_MARGIN = (2, 16)  # px of paper around the row, at MNIST's scale
# the light's fall-off across the photo, at most (a share of the paper's brightness): the ink finder
# (preprocess.ink_map) takes the spread of the paper along the border for noise, so a stronger gradient
# leaves it finding no ink at all (measured on 300 photos: 0.12 none, 0.2 3 %, 0.3 19 %)
LIGHT_FALLOFF = 0.12


def photograph(row: np.ndarray, rng: np.random.Generator, scale: float | None = None) -> bytes:
    """`row` (white on black, 0..1, at MNIST's scale) as a person's photo or scan of it, JPEG bytes: written
    `scale` (default: PHOTO_SCALE) times larger with a thinner or thicker pen, in a dark blue or black ink
    on tinted paper, under light that falls off across the page, blurred, with sensor noise, and saved
    as a JPEG of quality 30-90."""
    pen = rng.uniform(-0.6, 1.0)  # below 0 a thinner pen (an erosion mixed in), above 0 a thicker one
    ink = (1 - abs(pen)) * row + abs(pen) * spread(row, np.maximum if pen > 0 else np.minimum)
    ink = np.pad(ink, [tuple(rng.integers(*PHOTO_MARGIN, size=2)) for _ in range(2)])
    scale = rng.uniform(*PHOTO_SCALE) if scale is None else scale
    height, width = round(ink.shape[0] * scale), round(ink.shape[1] * scale)
    level = Image.fromarray((np.clip(ink, 0, 1) * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    level = np.asarray(level.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.5) * scale)))[..., None] / np.float32(
        255
    )
    paper = rng.uniform(0.7, 0.95) * (1 + rng.uniform(-0.06, 0.06, 3))  # a tone of white, cream, grey or blue
    pen_colour = rng.uniform(0.02, 0.25) + np.array([0, 0, 1]) * rng.uniform(0, 0.25)  # black or dark blue
    angle, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0, LIGHT_FALLOFF)
    longest = max(width, height)  # the light changes by `strength` across the photo's longer side
    ys, xs = (
        np.linspace(-0.5, 0.5, height)[:, None] * height / longest,
        np.linspace(-0.5, 0.5, width)[None, :] * width / longest,
    )
    light = (1 - strength / 2 + strength * (xs * math.cos(angle) + ys * math.sin(angle)))[..., None].astype(np.float32)
    pixels = (paper.astype(np.float32) + (pen_colour - paper).astype(np.float32) * level) * light  # (H, W, 3)
    pixels += rng.standard_normal(pixels.shape, np.float32) * np.float32(rng.uniform(0.005, 0.025))
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(30, 91)))
    return buffer.getvalue()


def found_ink(photo: bytes) -> tuple[np.ndarray, float]:
    """The number's ink that `read` finds in a photographed row: at most PHOTO_WORKING_HEIGHT high, its
    marks' ink only (`number_marks`; white on black, 0..1); and the factor by which the photo was shrunk."""
    image = Image.open(io.BytesIO(photo))
    ink = ink_image(image, "photo", (image.width, PHOTO_WORKING_HEIGHT))
    return number_marks(ink, "photo").ink, ink.shape[0] / image.height


@dataclass(frozen=True)
class Marks:
    """A number's marks in an ink map: its components of ink at INK_LEVEL that are not specks."""

    labels: np.ndarray  # (H, W) int: each pixel's mark, -1 where there is none
    count: int
    height: float  # px: a digit's height here (`number_height`)
    ink: np.ndarray  # (H, W) float32: the marks' ink with their fainter stretches and a pixel of faint edge


def number_marks(ink: np.ndarray, name: str) -> Marks:
    """The marks of the number in `ink` (an ink map, 0..1); raises `ImageError` when it holds no ink."""
    labels, boxes = components(ink >= INK_LEVEL)
    if not len(boxes):
        raise ImageError(f"{name}: no digits found (the image is blank or nearly blank)")
    height = number_height(boxes)
    marks = marks_not_specks(ink, height)
    kept = np.unique(labels[marks & (labels >= 0)])
    labels = np.where(np.isin(labels, kept), labels, -1)
    # the kept marks' faint ink (a thin stroke's fainter stretches) and a pixel of faint edge around each stroke
    near_kept = marks | (dilate((labels >= 0).astype(np.float32), 1) > 0)
    return Marks(labels, len(kept), height, np.where(near_kept, ink, 0).astype(np.float32))


def number_height(boxes: np.ndarray) -> float:
    """The height of a digit here: the median height of the components at least half as tall as the tallest."""
    heights = boxes[:, 1] - boxes[:, 0]
    return float(np.median(heights[heights >= heights.max() / 2]))


def marks_not_specks(ink: np.ndarray, height: float) -> np.ndarray:
    """Where the ink (down to FAINT_LEVEL) forms marks that are not specks: a digit written in a thinner or
    fainter stroke than its neighbours breaks into speck-sized pieces at INK_LEVEL, but is one mark here.
    A mark is judged by the extent of its ink at INK_LEVEL, so a faint smudge with none is no digit."""
    labels, boxes = components(ink >= FAINT_LEVEL)
    strong = np.where(ink >= INK_LEVEL, labels + 1, 0)
    sides = np.array(
        [
            0 if found is None else max(s.stop - s.start for s in found)
            for found in ndimage.find_objects(strong, len(boxes))
        ]
    )
    return np.isin(labels, np.nonzero(sides >= SPECK_SIDE * height)[0])


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
    return Batch(
        pixels,
        np.array([s.shape[1] // COLUMN_STEP for s in strips], np.int64),
        np.concatenate(digits),
        np.array([len(d) for d in digits], np.int64),
    )


def random_batch(
    images: np.ndarray,
    labels: np.ndarray,
    count: int,
    rng: np.random.Generator,
    training: bool = True,
    mixture: Mixture = MIXTURES["plain"],
) -> Batch:
    """`count` random strings (`random_row`) as a batch; for training, made as `mixture` says and with
    the digits' scale varied (TRAINING_HEIGHTS); otherwise neat, ordinary pens, the four ordinary spacings."""
    if not training:
        mixture = Mixture(spacings=(1, 1, 1, 1, 0), uneven=0, slanted=0, photographed=0, thick_pen=0)
    rows = [random_row(images, labels, rng, mixture) for _ in range(count)]
    strips = [
        row_strip(row, height * rng.uniform(*TRAINING_HEIGHTS) if training else height) for row, _, height in rows
    ]
    return batch(strips, [digits for _, digits, _ in rows])


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
            found.append(
                Read(
                    int(best[start]) - 1,
                    scores / scores.sum(),
                    float(probabilities[best[start], surest]),
                    start,
                    column - 1,
                )
            )
        start = column
    return found


def texts(probabilities: np.ndarray, columns: np.ndarray) -> list[str]:
    """The strings read from a batch's (B, 11, T) probabilities, each strip's own columns only."""
    return ["".join(str(read.digit) for read in decode(p[:, :n])) for p, n in zip(probabilities, columns)]


def truths(digits: np.ndarray, lengths: np.ndarray) -> list[str]:
    """The strings of a batch's digits (one string after another) and lengths."""
    ends = np.cumsum(lengths)
    return ["".join(map(str, digits[end - length : end])) for end, length in zip(ends, lengths)]


BEAM = 8  # prefixes kept per column by `decode_lengths`, besides the best of each length
BEAM_FLOOR = 1e-3  # a class below this probability in a column is not tried there
BEAM_NEGLIGIBLE = 1e-6  # a length whose best prefix is below this share of the best prefix's is let go


@dataclass(frozen=True)
class Decoding:
    """A strip's likeliest reading, found by prefix beam search, and the likeliest reading of each other
    length: what a reading's confidence weighs when a digit may be missing or two merged into one."""

    reads: list[Read]  # the likeliest reading, digit by digit, placed on the columns of its likeliest alignment
    probability: float  # its probability (summed over all its alignments, CTC's)
    by_length: dict[int, tuple[str, float]]  # length -> the likeliest reading of that length and its probability

    @property
    def text(self) -> str:
        return "".join(str(read.digit) for read in self.reads)

    @property
    def length_share(self) -> float:
        """The likeliest reading's share of the likeliest readings of every length: how sure the reader is
        of the number of digits."""
        return self.probability / sum(p for _, p in self.by_length.values())


def decode_lengths(probabilities: np.ndarray, beam: int = BEAM) -> Decoding:
    """Prefix beam search over one strip's (11, T) per-column probabilities (Hannun et al. 2014), keeping
    at each column the `beam` likeliest prefixes and also the likeliest prefix of every length, so that at
    the end each length's best reading is known. Probabilities are rescaled each column (the scale kept
    as a logarithm), so long strips do not underflow."""
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (1.0, 0.0)}  # prefix -> (ending in blank, not)
    log_scale = 0.0
    tried_classes = [np.nonzero(column[1:] >= BEAM_FLOOR)[0] + 1 for column in probabilities.T]
    for column, tried in zip(probabilities.T.tolist(), tried_classes):
        blank = column[BLANK]
        if not len(tried):  # only the blank is likely here (most columns): every prefix now ends in a blank
            beams = {prefix: ((a + b) * blank, 0.0) for prefix, (a, b) in beams.items()}
            continue
        tried = tried.tolist()
        grown: dict[tuple[int, ...], list[float]] = {}
        for prefix, (ends_blank, ends_digit) in beams.items():
            total = ends_blank + ends_digit
            entry = grown.setdefault(prefix, [0.0, 0.0])
            entry[0] += total * blank
            for c in tried:
                p = column[c]
                if prefix and prefix[-1] == c:
                    entry[1] += ends_digit * p  # the same digit continued
                    longer = grown.setdefault(prefix + (c,), [0.0, 0.0])
                    longer[1] += ends_blank * p  # a doubled digit needs a blank between
                else:
                    longer = grown.setdefault(prefix + (c,), [0.0, 0.0])
                    longer[1] += total * p
        ranked = sorted(grown.items(), key=lambda item: -(item[1][0] + item[1][1]))
        scale = sum(ranked[0][1]) or 1.0
        kept, lengths = dict(ranked[:beam]), set()
        for prefix, masses in ranked:  # and the best of each length not already kept, unless negligible
            if sum(masses) < BEAM_NEGLIGIBLE * scale:
                break
            if len(prefix) not in lengths:
                lengths.add(len(prefix))
                kept.setdefault(prefix, masses)
        beams = {prefix: (a / scale, b / scale) for prefix, (a, b) in kept.items()}
        log_scale += math.log(scale)
    by_length: dict[int, tuple[str, float]] = {}
    for prefix, (a, b) in beams.items():
        probability = (a + b) * math.exp(log_scale)
        if probability > by_length.get(len(prefix), ("", -1.0))[1]:
            by_length[len(prefix)] = ("".join(str(c - 1) for c in prefix), probability)
    text, probability = max(by_length.values(), key=lambda item: item[1])
    reads = decode(probabilities)  # the best path: almost always the same digits, placed on its own columns
    if "".join(str(read.digit) for read in reads) != text:
        reads = align(probabilities, [int(d) for d in text])
    return Decoding(reads, probability, by_length)


def align(probabilities: np.ndarray, digits: list[int]) -> list[Read]:
    """`digits` placed on one strip's (11, T) columns by their likeliest CTC alignment (Viterbi): each
    digit with the columns it spans and its scores where it is surest, as `decode` gives them."""
    if not digits:
        return []
    labels = [BLANK]
    for digit in digits:
        labels += [digit + 1, BLANK]  # blank, d1, blank, d2, ..., blank
    labels = np.array(labels)
    states, columns = len(labels), probabilities.shape[1]
    log_p = np.log(np.maximum(probabilities[labels], 1e-30))  # (S, T)
    skip = np.zeros(states, bool)  # a state may be reached from two back: a digit after a different digit
    skip[3::2] = labels[3::2] != labels[1:-2:2]
    score = np.full(states, -np.inf)
    score[:2] = log_p[:2, 0]
    back = np.zeros((columns, states), np.int64)
    index = np.arange(states)
    choices = np.full((3, states), -np.inf)  # from the same state, the one before, two before
    for t in range(1, columns):
        choices[0] = score
        choices[1, 1:] = score[:-1]
        choices[2, 2:] = np.where(skip[2:], score[:-2], -np.inf)
        best = choices.argmax(0)
        back[t] = index - best
        score = choices[best, index] + log_p[:, t]
    state = states - 1 if states == 1 or score[-1] >= score[-2] else states - 2
    path = [state]
    for t in range(columns - 1, 0, -1):
        state = back[t, state]
        path.append(state)
    path = np.array(path[::-1])  # the state of each column
    found = []
    for position, digit in enumerate(digits):
        spanned = np.nonzero(path == 2 * position + 1)[0]
        if not len(spanned):  # too few columns for every digit: CTC cannot place it; take its likeliest column
            spanned = np.array([int(probabilities[digit + 1].argmax())])
        surest = int(spanned[probabilities[digit + 1, spanned].argmax()])
        scores = probabilities[1:, surest]
        found.append(
            Read(
                digit, scores / scores.sum(), float(probabilities[digit + 1, surest]), int(spanned[0]), int(spanned[-1])
            )
        )
    return found
