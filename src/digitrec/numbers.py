"""A picture of a number -> digit segments -> one reading ("2026"), by segmentation by recognition.

    reading = Recognizer.load().read("meter.jpg")
    reading.text, reading.confidence, reading.unsure, reading.digits[0].box

Owns finding the digits of a written number: the ink's connected components at a working resolution,
specks dropped, components too wide for one digit cut along the top-to-bottom paths that cross the
least ink, and the choice, by dynamic programming over the resulting pieces (left to right), of the grouping into digits
that the model scores best: each candidate digit (one piece, or neighbouring pieces together, such as
a 5's detached bar or a 4 drawn in two strokes) costs its -log probability plus priors on its shape.
Each candidate is framed by `preprocess.frame`, the same preparation `predict` gives a lone digit, and
all are scored in one batch. Not owned here: decoding and the ink map (preprocess), the model
(recognizer).
"""

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitrec.errors import ImageError
from digitrec.preprocess import Source, frame, ink_image, load_image
from digitrec.recognizer import Recognizer

MAX_DIGITS = 12  # longer numbers are refused
WORKING_HEIGHT = 128  # px: taller images are shrunk to this first (a digit needs ~20 px; more is slower)
MAX_WORKING_PIXELS = 1_000_000  # and very wide ones until they hold at most this many pixels
INK_LEVEL = 0.25  # on the ink map's 0..1, what counts as ink when finding components
# The sizes below are shares of the number's height: the median height of its taller components.
SPECK_SIDE = 0.25  # a component smaller than this both ways is a speck (dust, a decimal point): ignored
CUT_FROM = 0.9  # a component wider than this may hold several digits: it is cut into pieces
MIN_PIECE = 0.15  # no cut closer than this to a component's edge or to another cut
SIDESTEP_COST = 0.3  # a cut's cost for each step sideways, in ink pixels crossed
CUTS_PER_HEIGHT = 2.0  # cuts per height of a component's width, at most: its cheapest paths through the ink
MAX_GAP = 0.15  # pieces further apart than this are never one digit
MAX_PIECES = 4  # pieces one digit may be made of
MAX_WIDTH = 1.3  # no digit is wider than this
# Priors, in the units of -log probability, added to each candidate digit's cost
# per digit: negative, a small bonus for each digit found, which on validation strings recovered more
# touching digits than it cost in wide single digits split in two
SEGMENT_COST = -0.4
WIDE_FROM, WIDE_COST = 1.1, 2.0  # per unit of width beyond WIDE_FROM
CUT_COST = 0.3  # per cut through ink that the reading uses: a split of a component must earn it
SHORT_FROM, SHORT_COST = 0.6, 8.0  # per unit of height below SHORT_FROM (a bar alone is no digit)
ALTERNATIVES = 3  # the likeliest other digits reported for each digit


@dataclass(frozen=True)
class DigitReading:
    digit: int
    confidence: float  # the probability of `digit`
    alternatives: list[tuple[int, float]]  # the next likeliest digits with their probabilities
    box: tuple[int, int, int, int]  # x, y, width, height in the original image's pixels
    unsure: bool  # confidence < recognizer.UNSURE_BELOW


@dataclass(frozen=True)
class Reading:
    text: str  # the digits left to right, e.g. "2026"
    confidence: float  # the product of the digits' confidences: the chance that every digit is right
    unsure: bool  # whether any digit is unsure
    digits: list[DigitReading]

    def as_dict(self) -> dict:
        return {"text": self.text, "confidence": self.confidence, "unsure": self.unsure, "digits": [
            {"digit": d.digit, "confidence": d.confidence, "unsure": d.unsure, "box": list(d.box),
             "alternatives": [{"digit": a, "confidence": p} for a, p in d.alternatives]} for d in self.digits]}


@dataclass(frozen=True)
class Piece:
    """Part of the ink: one component, or the part of one between two cuts."""
    component: int
    top: int
    left: int
    mask: np.ndarray  # bool, the piece's pixels within its box

    @property
    def bottom(self) -> int:
        return self.top + self.mask.shape[0]

    @property
    def right(self) -> int:
        return self.left + self.mask.shape[1]


def read(recognizer: Recognizer, source: Source, name: str = "image") -> Reading:
    """The number written in `source`; raises `ImageError` when there is none or it is too long."""
    image = load_image(source, name)
    ink = working_ink(image, name)
    labels, boxes = components(ink >= INK_LEVEL)
    if not len(boxes):
        raise ImageError(f"{name}: no digits found (the image is blank or nearly blank)")
    height = number_height(boxes)
    kept = keep(boxes, height)
    if len(kept) > MAX_PIECES * MAX_DIGITS:  # before any is cut or read: noise must not cost minutes
        raise ImageError(f"{name}: {len(kept)} separate marks: too many for a number of at most {MAX_DIGITS} digits")
    pieces = [piece for index in kept for piece in cut(labels, boxes, index, height)]
    chosen, predictions = segment(recognizer, ink, pieces, height)
    if len(chosen) > MAX_DIGITS:
        raise ImageError(f"{name}: {len(chosen)} digits found; at most {MAX_DIGITS} are read")
    to_original = (image.width / ink.shape[1], image.height / ink.shape[0])
    digits = [digit_reading(prediction, pieces[start:stop], to_original)
              for (start, stop), prediction in zip(chosen, predictions)]
    return Reading(text="".join(str(d.digit) for d in digits), confidence=math.prod(d.confidence for d in digits),
                   unsure=any(d.unsure for d in digits), digits=digits)


def working_ink(image: Image.Image, name: str) -> np.ndarray:
    """The image's ink map, shrunk to at most WORKING_HEIGHT high and MAX_WORKING_PIXELS in all."""
    scale = min(1.0, WORKING_HEIGHT / image.height, math.sqrt(MAX_WORKING_PIXELS / (image.width * image.height)))
    return ink_image(image, name, (max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def segment(recognizer: Recognizer, ink: np.ndarray, pieces: list[Piece], height: float) -> tuple[list, list]:
    """The grouping of `pieces` into digits of least total cost: the chosen (start, stop) spans of pieces
    and the model's prediction for each. Every candidate is scored in one batch."""
    spans = [(i, j) for i in range(len(pieces)) for j in range(i + 1, min(i + MAX_PIECES, len(pieces)) + 1)
             if joinable(pieces[i:j], height)]
    predictions = dict(zip(spans, recognizer.predict_arrays([frame(segment_ink(ink, pieces[i:j])) for i, j in spans])))
    costs = {}
    for start, stop in spans:
        ends_in_a_cut = stop < len(pieces) and pieces[stop - 1].component == pieces[stop].component
        costs[start, stop] = (-math.log(max(predictions[start, stop].confidence, 1e-12))
                              + prior(pieces[start:stop], height) + (CUT_COST if ends_in_a_cut else 0.0))
    chosen = best_path(len(pieces), costs)
    return chosen, [predictions[span] for span in chosen]


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of `mask`: a label image (-1 off the mask) and each one's box as rows of
    (top, bottom, left, right, area), bottom and right exclusive. Works on runs of pixels within rows,
    joined by label propagation, so it stays in numpy however many pixels there are."""
    height, width = mask.shape
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    run_rows, run_starts = np.nonzero(edges == 1)
    run_ends = np.nonzero(edges == -1)[1]  # exclusive; the same row-major order as the starts
    if not len(run_rows):
        return np.full(mask.shape, -1, np.int32), np.zeros((0, 5), np.int64)
    # runs in consecutive rows touch when their column ranges overlap or meet diagonally
    stride = width + 2
    keys_start, keys_end = run_rows * stride + run_starts, run_rows * stride + run_ends
    below = (run_rows + 1) * stride
    first = np.searchsorted(keys_end, below + run_starts - 1, side="right")  # first run below ending after our start - 1
    last = np.searchsorted(keys_start, below + run_ends + 1, side="left")  # one past the last starting before our end + 1
    counts = np.maximum(last - first, 0)
    upper = np.repeat(np.arange(len(run_rows)), counts)
    lower = np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    root = np.arange(len(run_rows))
    while True:  # hook each touching pair onto the smaller root, then flatten: O(log n) rounds
        low = np.minimum(root[upper], root[lower])
        np.minimum.at(root, root[upper], low)
        np.minimum.at(root, root[lower], low)
        while not np.array_equal(flat := root[root], root):
            root = flat
        if np.array_equal(root[upper], root[lower]):
            break
    _, component = np.unique(root, return_inverse=True)
    count = component.max() + 1
    lengths = run_ends - run_starts
    boxes = np.stack([
        np.full(count, height), np.zeros(count, np.int64), np.full(count, width), np.zeros(count, np.int64),
        np.bincount(component, lengths, count).astype(np.int64)], axis=1)
    np.minimum.at(boxes[:, 0], component, run_rows)
    np.maximum.at(boxes[:, 1], component, run_rows + 1)
    np.minimum.at(boxes[:, 2], component, run_starts)
    np.maximum.at(boxes[:, 3], component, run_ends)
    labels = np.full(height * width, -1, np.int32)
    pixels = np.flatnonzero(mask)  # row-major, so they fall into the runs in order
    labels[pixels] = component[np.searchsorted(run_rows * width + run_starts, pixels, side="right") - 1]
    return labels.reshape(mask.shape), boxes


def number_height(boxes: np.ndarray) -> float:
    """The height of a digit here: the median height of the components at least half as tall as the tallest."""
    heights = boxes[:, 1] - boxes[:, 0]
    return float(np.median(heights[heights >= heights.max() / 2]))


def keep(boxes: np.ndarray, height: float) -> list[int]:
    """The components that are not specks, left to right."""
    sides = np.stack([boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]], axis=1)
    kept = np.nonzero(sides.max(1) >= SPECK_SIDE * height)[0]
    return sorted(kept.tolist(), key=lambda i: boxes[i, 2] + boxes[i, 3])


def cut(labels: np.ndarray, boxes: np.ndarray, index: int, height: float) -> list[Piece]:
    """Component `index` as pieces: whole, or, when wider than one digit may be, cut along the top-to-bottom
    paths that cross the least ink (touching digits meet where the ink is thinnest, often on a slant)."""
    top, bottom, left, right, _ = boxes[index]
    own = labels[top:bottom, left:right] == index
    width = right - left
    if width <= CUT_FROM * height:
        return [Piece(index, top, left, own)]
    margin = max(1, round(MIN_PIECE * height))
    seams: list[np.ndarray] = []
    for path in cheapest_paths(own):
        if len(seams) >= CUTS_PER_HEIGHT * width / height:
            break
        middle = path.mean()
        if margin <= middle <= width - margin and all(abs(middle - other.mean()) >= margin for other in seams):
            seams.append(path)
    seams.sort(key=np.mean)
    bounds = np.maximum.accumulate(np.stack([np.zeros(len(own), int), *seams, np.full(len(own), width)]), axis=0)
    columns = np.arange(width)
    pieces = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        part = own & (columns >= start[:, None]) & (columns < stop[:, None])
        rows, cols = np.nonzero(part.any(1))[0], np.nonzero(part.any(0))[0]
        if len(rows):
            pieces.append(Piece(index, top + rows[0], left + cols[0], part[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]))
    return pieces


def cheapest_paths(own: np.ndarray) -> Iterator[np.ndarray]:
    """Top-to-bottom paths through `own` (moving at most one column per row), cheapest first, one ending
    in each column where the cost is a local minimum: each as the column it takes in every row. Cost: ink pixels crossed, plus a little
    for each sideways step."""
    rows, width = own.shape
    came_from = np.zeros((rows, width), np.int64)
    columns = np.arange(width)
    above = np.full(width + 2, np.inf)  # the costs so far, with a wall either side
    above[1:-1] = own[0]
    for row in range(1, rows):
        options = np.stack([above[:-2] + SIDESTEP_COST, above[1:-1], above[2:] + SIDESTEP_COST])
        choice = options.argmin(0)  # 0: from the column to the left, 1: straight above, 2: from the right
        came_from[row] = columns + choice - 1
        above[1:-1] = options[choice, columns] + own[row]
    total = above[1:-1]
    ends = np.nonzero((total <= above[:-2]) & (total <= above[2:]))[0]  # only paths to a local minimum compete
    for end in ends[np.argsort(total[ends], kind="stable")]:
        path = np.empty(rows, np.int64)
        path[-1] = end
        for row in range(rows - 1, 0, -1):
            path[row - 1] = came_from[row, path[row]]
        yield path


def joinable(pieces: list[Piece], height: float) -> bool:
    """Whether these neighbouring pieces may be one digit: not too wide, no wide gap between them."""
    if len({p.component for p in pieces}) == 1:
        return True  # even when too wide: a component may always be read whole, and the path must pass it
    if max(p.right for p in pieces) - min(p.left for p in pieces) > MAX_WIDTH * height:
        return False
    reach = pieces[0].right
    for piece in pieces[1:]:
        if piece.left - reach > MAX_GAP * height:
            return False
        reach = max(reach, piece.right)
    return True


def prior(pieces: list[Piece], height: float) -> float:
    """The shape cost of reading these pieces as one digit."""
    width = (max(p.right for p in pieces) - min(p.left for p in pieces)) / height
    tall = (max(p.bottom for p in pieces) - min(p.top for p in pieces)) / height
    return SEGMENT_COST + WIDE_COST * max(0.0, width - WIDE_FROM) + SHORT_COST * max(0.0, SHORT_FROM - tall)


def segment_ink(ink: np.ndarray, pieces: list[Piece]) -> np.ndarray:
    """The ink of these pieces alone, cropped to their box."""
    top, bottom = min(p.top for p in pieces), max(p.bottom for p in pieces)
    left, right = min(p.left for p in pieces), max(p.right for p in pieces)
    own = np.zeros((bottom - top, right - left), bool)
    for p in pieces:
        own[p.top - top : p.bottom - top, p.left - left : p.right - left] |= p.mask
    return np.where(own, ink[top:bottom, left:right], 0).astype(np.float32)


def best_path(count: int, costs: dict[tuple[int, int], float]) -> list[tuple[int, int]]:
    """The spans covering pieces 0..count-1 in order with the least total cost (dynamic programming)."""
    best = [0.0] + [math.inf] * count
    back = [0] * (count + 1)
    for (start, stop), cost in sorted(costs.items(), key=lambda item: item[0][1]):
        if best[start] + cost < best[stop]:
            best[stop], back[stop] = best[start] + cost, start
    spans, stop = [], count
    while stop:
        spans.append((back[stop], stop))
        stop = back[stop]
    return spans[::-1]


def digit_reading(prediction, pieces: list[Piece], to_original: tuple[float, float]) -> DigitReading:
    x_scale, y_scale = to_original
    left, top = min(p.left for p in pieces), min(p.top for p in pieces)
    right, bottom = max(p.right for p in pieces), max(p.bottom for p in pieces)
    x, y = math.floor(left * x_scale), math.floor(top * y_scale)
    box = (x, y, math.ceil(right * x_scale) - x, math.ceil(bottom * y_scale) - y)
    return DigitReading(digit=prediction.digit, confidence=prediction.confidence,
                        alternatives=prediction.top(ALTERNATIVES + 1)[1:], box=box, unsure=prediction.unsure)


SURE_COLOUR, UNSURE_COLOUR = (37, 99, 235), (217, 72, 15)  # blue, and orange for an unsure digit


def draw_segments(source: Source, reading: Reading, name: str = "image") -> bytes:
    """`source` as a PNG with each digit's box drawn on it and its reading and confidence under it."""
    image = load_image(source, name).convert("RGB")
    draw = ImageDraw.Draw(image)
    heights = sorted(digit.box[3] for digit in reading.digits) or [image.height]
    line = max(2, round(heights[len(heights) // 2] / 40))
    font = ImageFont.load_default(size=max(10, round(heights[len(heights) // 2] / 4)))
    for index, digit in enumerate(reading.digits):
        x, y, width, height = digit.box
        colour = UNSURE_COLOUR if digit.unsure else SURE_COLOUR
        draw.rectangle([x, y, x + width - 1, y + height - 1], outline=colour, width=line)
        below = y + height + line + (index % 2) * font.size  # neighbours' labels on alternate lines
        draw.text((x + width / 2, below), f"{digit.digit} {100 * digit.confidence:.0f}%", fill=colour, font=font, anchor="mt")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
