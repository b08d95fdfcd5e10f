"""A picture of a number -> its digits, each with a box and confidences: one reading ("2026").

    reader, recognizer = runtime.load(None, NUMBERS), Recognizer.load()  # the bundled number reader and digit model
    reading = read(reader, recognizer, "meter.jpg")
    reading.text, reading.confidence, reading.unsure, reading.digits[0].box

Owns finding the number in a person's image and turning the number reader's answer into digits with
boxes: the ink map (preprocess) at a working resolution, its marks with specks dropped
(number_strings.number_marks, as the reader's training photos are framed), framed as one strip
(number_strings.strip) and read whole by the number reader, a CNN trained with CTC on strings of
training digits (models.NumberReader), so touching and overlapping digits need no cutting; each digit
it reads is then given the ink around its place in the strip (whole components where one lies mostly
within it) as its box. A digit that is one or more whole components of its own is
also read by the digit model, framed as `predict` frames a lone digit (preprocess.frame, one code
path), and the two readings' probabilities are multiplied (chosen on strings of validation digits:
see the README). The reader's answer is decoded by a prefix beam search that keeps the likeliest
reading of every length (number_strings.decode_lengths); the reading's confidence is the chance that its
number of digits is right (against the likeliest reading of every other length: a digit missed or two
merged) times each digit's, calibrated on validation strings of every kind of writing by the reader's
calibration.json (confidence.py, fitted by bench/calibrate_reader.py), whose threshold sets `unsure`.
Not owned here: decoding images and the ink map (preprocess), marks, strips and CTC decoding (number_strings),
loading the models (runtime, recognizer).
"""

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitrec import number_strings
from digitrec.confidence import UNCALIBRATED, Calibration
from digitrec.errors import ImageError, ModelError
from digitrec.preprocess import Source, frame, ink_image, load_image
from digitrec.recognizer import Recognizer
from digitrec.runtime import Runtime
from digitrec.tasks import NUMBERS

MAX_DIGITS = 12  # longer numbers are refused
MAX_MARKS = 4 * MAX_DIGITS  # separate marks (not specks) beyond this are refused before anything is read
WORKING_HEIGHT = 128  # px: taller images are shrunk to this first (a digit needs ~20 px; more is slower)
MAX_WORKING_PIXELS = 1_000_000  # and very wide ones until they hold at most this many pixels
MAX_STRIP_WIDTH = 3 * number_strings.DIGIT_HEIGHT * MAX_DIGITS  # px: a strip wider than this holds too long a number
WHOLE_SHARE = 0.75  # a component with at least this share of its ink in one digit's place is that digit's, whole
ALTERNATIVES = 3  # the likeliest other digits reported for each digit


@dataclass(frozen=True)
class DigitReading:
    digit: int
    confidence: float  # the probability of `digit`
    alternatives: list[tuple[int, float]]  # the next likeliest digits with their probabilities
    box: tuple[int, int, int, int]  # x, y, width, height in the original image's pixels
    unsure: bool  # when the reading is unsure: alone it would make it unsure, or it is the least sure digit


@dataclass(frozen=True)
class Reading:
    text: str  # the digits left to right, e.g. "2026"
    confidence: float  # the calibrated chance that the whole reading is right, digits and their number
    unsure: bool  # confidence below the reader's calibrated threshold (then at least one digit is marked unsure)
    digits: list[DigitReading]

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "confidence": self.confidence,
            "unsure": self.unsure,
            "digits": [
                {
                    "digit": d.digit,
                    "confidence": d.confidence,
                    "unsure": d.unsure,
                    "box": list(d.box),
                    "alternatives": [{"digit": a, "confidence": p} for a, p in d.alternatives],
                }
                for d in self.digits
            ],
        }


def read(reader: Runtime, recognizer: Recognizer, source: Source, name: str = "image") -> Reading:
    """The number written in `source`, read by `reader` (a number reader: `runtime.load(path, NUMBERS)`)
    with `recognizer` reading again each digit that stands apart; raises `ImageError` when there is none
    or it is too long."""
    if reader.task is not NUMBERS:
        raise ModelError(f"{reader.info.get('weights')}: not a number reader (it reads {reader.task.name})")
    image = load_image(source, name)
    ink = working_ink(image, name)
    marks = number_strings.number_marks(ink, name)
    if marks.count > MAX_MARKS:  # before anything is read: noise must not cost minutes
        raise ImageError(f"{name}: {marks.count} separate marks: too many for a number of at most {MAX_DIGITS} digits")
    labels = marks.labels
    framed = number_strings.strip(marks.ink, marks.height)
    if framed.pixels.shape[1] > MAX_STRIP_WIDTH:
        raise ImageError(f"{name}: the writing is too long for a number of at most {MAX_DIGITS} digits")
    decoding = number_strings.decode_lengths(reader.probabilities(framed.pixels[None, None])[0])
    found = decoding.reads
    if not found:
        raise ImageError(f"{name}: no digits found (the marks read as no digit)")
    if len(found) > MAX_DIGITS:
        raise ImageError(f"{name}: {len(found)} digits found; at most {MAX_DIGITS} are read")
    masks, alone = digit_masks(labels, framed, found)
    probabilities = [one.probabilities for one in found]
    confidences = [one.confidence for one in found]
    if any(alone):  # a digit of its own also goes to the digit model, as predict would read it
        predictions = iter(
            recognizer.predict_arrays(
                [frame(np.where(mask, ink, 0).astype(np.float32)) for mask, whole in zip(masks, alone) if whole]
            )
        )
        for index in np.nonzero(alone)[0]:
            joint = probabilities[index] * np.asarray(next(predictions).probabilities)
            probabilities[index] = joint / joint.sum()
            confidences[index] = float(probabilities[index].max())
    to_original = (image.width / ink.shape[1], image.height / ink.shape[0])
    calibration = reader.calibration
    number_confidence = calibrated_confidence(calibration, uncalibrated_confidence(decoding, confidences))
    unsure = calibration.unsure(number_confidence)
    doubted = doubted_digits(confidences, calibration) if unsure else set()
    digits = [
        digit_reading(p, c, mask, to_original, index in doubted)
        for index, (p, c, mask) in enumerate(zip(probabilities, confidences, masks))
    ]
    return Reading(
        text="".join(str(d.digit) for d in digits), confidence=number_confidence, unsure=unsure, digits=digits
    )


def uncalibrated_confidence(decoding: number_strings.Decoding, confidences: list[float]) -> float:
    """How likely the reading is right before calibration: the chance that it has the right number of
    digits (the likeliest reading's share of the likeliest readings of every length: a digit missed, or
    two read as one, shows as a close reading of another length) times the chance that each digit is right."""
    return decoding.length_share * math.prod(confidences)


def calibrated_confidence(calibration: Calibration, confidence: float) -> float:
    """An uncalibrated number confidence as `calibration` makes it mean what it says."""
    return float(calibration.probabilities(sure_and_not(confidence))[0, 0])


def sure_and_not(confidence: float) -> np.ndarray:
    """A confidence as the two logits (right, wrong) that confidence.Calibration divides by T and shifts by
    its bias: the calibrated confidence is sigmoid(logit(confidence) / T + bias), Platt scaling."""
    confidence = min(max(confidence, 1e-12), 1 - 1e-12)
    return np.array([[math.log(confidence), math.log(1 - confidence)]])


def doubted_digits(confidences: list[float], calibration: Calibration) -> set[int]:
    """The digits to mark when a reading is unsure: each one that alone would make the number unsure (less
    sure than `uncalibrated_unsure_below`), or else the least sure one (the doubt lies in the number of
    digits, or is spread over all of them)."""
    below = uncalibrated_unsure_below(calibration)
    doubted = {index for index, c in enumerate(confidences) if c < below}
    return doubted or {int(np.argmin(confidences))}


def uncalibrated_unsure_below(calibration: Calibration) -> float:
    """The uncalibrated confidence that `calibration` turns into its threshold: calibrating divides the
    log-odds of `sure_and_not` by T and adds the bias, so the threshold's log-odds less the bias, times T,
    undo it."""
    threshold = calibration.unsure_below
    if threshold <= 0 or threshold >= 1:
        return float(threshold >= 1)
    log_odds = (math.log(threshold) - math.log1p(-threshold) - calibration.bias) * calibration.temperature
    return float(UNCALIBRATED.probabilities(np.array([[log_odds, 0.0]]))[0, 0])


def working_ink(image: Image.Image, name: str) -> np.ndarray:
    """The image's ink map, shrunk to at most WORKING_HEIGHT high and MAX_WORKING_PIXELS in all."""
    scale = min(1.0, WORKING_HEIGHT / image.height, math.sqrt(MAX_WORKING_PIXELS / (image.width * image.height)))
    return ink_image(image, name, (max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def digit_masks(
    labels: np.ndarray, framed: number_strings.Strip, found: list[number_strings.Read]
) -> tuple[list[np.ndarray], list[bool]]:
    """Each digit's ink (a mask over the working ink) and whether it is whole components of its own.

    Digit i's place is the ink columns between the midpoints of its and its neighbours' columns in the
    strip; a component lies in one place (WHOLE_SHARE of its ink) or is cut along the places' edges."""
    centres = [(one.first + one.last + 1) / 2 * number_strings.COLUMN_STEP for one in found]
    edges = np.array([framed.to_ink_column((a + b) / 2) for a, b in zip(centres, centres[1:])])
    columns = np.broadcast_to(np.arange(labels.shape[1]), labels.shape)
    place = np.searchsorted(edges, columns)  # each pixel's digit, by its column alone
    masks = [np.zeros(labels.shape, bool) for _ in found]
    alone = [True] * len(found)
    for component in np.unique(labels[labels >= 0]):
        pixels = labels == component
        shares = np.bincount(place[pixels], minlength=len(found)) / pixels.sum()
        if shares.max() >= WHOLE_SHARE:
            masks[int(shares.argmax())] |= pixels
        else:
            for index in np.nonzero(shares)[0]:
                masks[index] |= pixels & (place == index)
                alone[index] = False
    for index, mask in enumerate(masks):
        if not mask.any():  # read where no ink lies in its place: box it by its place, never by the digit model
            low = edges[index - 1] if index else 0
            high = edges[index] if index < len(edges) else labels.shape[1]
            mask[labels.shape[0] // 2, int(np.clip(low, 0, labels.shape[1] - 1)) : max(int(high), int(low) + 1)] = True
            alone[index] = False
    return masks, alone


def digit_reading(
    probabilities: np.ndarray, confidence: float, mask: np.ndarray, to_original: tuple[float, float], unsure: bool
) -> DigitReading:
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    x_scale, y_scale = to_original
    x, y = math.floor(cols[0] * x_scale), math.floor(rows[0] * y_scale)
    box = (x, y, math.ceil((cols[-1] + 1) * x_scale) - x, math.ceil((rows[-1] + 1) * y_scale) - y)
    order = np.argsort(probabilities)[::-1]
    return DigitReading(
        digit=int(order[0]),
        confidence=confidence,
        box=box,
        unsure=unsure,
        alternatives=[(int(d), float(probabilities[d])) for d in order[1 : ALTERNATIVES + 1]],
    )


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
        draw.text(
            (x + width / 2, below), f"{digit.digit} {100 * digit.confidence:.0f}%", fill=colour, font=font, anchor="mt"
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
