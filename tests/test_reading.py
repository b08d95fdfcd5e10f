"""Reading whole numbers: strings of real MNIST test digits, blank and bad images, boxes, limits."""

import io
import time

import numpy as np
import pytest
from hypothesis import given
from PIL import Image

from digitrec import confidence, number_strings, runtime
from digitrec.errors import ImageError
from digitrec.files import BUNDLED_READER
from digitrec.number_strings import compose, photograph
from digitrec.person_style import encode, number_image
from digitrec.preprocess import components
from digitrec.reading import (
    MAX_DIGITS,
    Reading,
    calibrated_confidence,
    doubted_digits,
    draw_segments,
    read,
    uncalibrated_confidence,
    uncalibrated_unsure_below,
)
from digitrec.recognizer import UNSURE_BELOW, Recognizer
from digitrec.tasks import NUMBERS

from helpers import DAMAGE, fuzzing, mutate

SCALE = 4  # test pictures: MNIST's 28 px digits drawn 112 px high


@pytest.fixture(scope="module")
def read_number():
    """`reading.read` with the bundled number reader and digit model."""
    reader, recognizer = runtime.load(None, NUMBERS), Recognizer.load()
    return lambda image, name="image": read(reader, recognizer, image, name)


@pytest.fixture(scope="module")
def test_digits(mnist) -> tuple[np.ndarray, np.ndarray]:
    return mnist.test.images[:, 0].numpy(), mnist.test.labels.numpy()


def paper(row: np.ndarray, scale: int = SCALE) -> bytes:
    """A row of white-on-black ink (0..1) as dark ink on white paper, scaled up, as PNG bytes."""
    image = Image.fromarray((255 - row * 255).round().astype(np.uint8))
    return encode(image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC), "PNG")


def first_of(digits: str, images: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """The first test image of each digit in `digits`."""
    return [images[np.nonzero(labels == int(d))[0][0]] for d in digits]


def test_person_style_numbers_of_every_length_are_read(read_number, test_digits):
    rng = np.random.default_rng(13)
    made = [number_image(*test_digits, length, "separate", rng) for length in range(1, 9) for _ in range(3)]
    texts = [read_number(image).text for image, _ in made]
    right = sum(text == truth for text, (_, truth) in zip(texts, made))
    assert right >= 23, [(text, truth) for text, (_, truth) in zip(texts, made) if text != truth]


@pytest.mark.parametrize("spacing", ["touching", "overlapping"])
def test_touching_and_overlapping_digits_are_read_without_cutting_them(read_number, test_digits, spacing):
    rng = np.random.default_rng(21)
    made = [number_image(*test_digits, 4, spacing, rng) for _ in range(20)]
    readings = [read_number(image) for image, _ in made]
    right = sum(reading.text == truth for reading, (_, truth) in zip(readings, made))
    assert right >= 16, [(reading.text, truth) for reading, (_, truth) in zip(readings, made) if reading.text != truth]
    for reading in readings:  # boxes left to right, each overlapping its neighbour at most partly
        lefts = [digit.box[0] for digit in reading.digits]
        assert lefts == sorted(lefts)


def test_a_reading_has_digits_confidences_alternatives_and_a_confidence_for_the_whole(read_number, test_digits):
    rng = np.random.default_rng(0)
    reading = read_number(paper(compose(first_of("2026", *test_digits), "separate", rng)))
    assert reading.text == "2026" and [d.digit for d in reading.digits] == [2, 0, 2, 6]
    assert 0.9 < reading.confidence <= 1 and not reading.unsure
    for digit in reading.digits:
        assert 0.5 < digit.confidence <= 1 and len(digit.alternatives) == 3
        assert all(p <= digit.confidence for _, p in digit.alternatives) and digit.digit not in dict(digit.alternatives)
    assert reading.unsure == any(d.unsure for d in reading.digits)
    assert reading.as_dict()["digits"][0]["box"] == list(reading.digits[0].box)


def test_boxes_are_in_the_original_images_pixels(read_number, test_digits):
    # three digits at known places on a 1600 x 500 page: far larger than the working resolution
    page = np.zeros((500, 1600), np.float32)
    places = [(100, 150), (700, 120), (1300, 260)]  # (left, top) of each 112 px digit
    for digit, (left, top) in zip(first_of("905", *test_digits), places):
        big = np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC))
        page[top : top + 112, left : left + 112] = np.clip(big, 0, 1)
    reading = read_number(paper(page, scale=1))
    assert reading.text == "905"
    for (x, y, w, h), (left, top) in zip((d.box for d in reading.digits), places):
        ink_rows, ink_cols = np.nonzero(page[top : top + 112, left : left + 112] > 0.25)
        truth = (left + ink_cols.min(), top + ink_rows.min(), np.ptp(ink_cols) + 1, np.ptp(ink_rows) + 1)
        assert abs(x - truth[0]) <= 6 and abs(y - truth[1]) <= 6, ((x, y, w, h), truth)
        assert abs(x + w - truth[0] - truth[2]) <= 6 and abs(y + h - truth[1] - truth[3]) <= 6, ((x, y, w, h), truth)


def test_a_speck_or_decimal_point_is_ignored(read_number, test_digits):
    rng = np.random.default_rng(1)
    row = compose(first_of("3141", *test_digits), "separate", rng)
    clean = read_number(paper(row)).text
    dotted = row.copy()
    gap = np.nonzero(row[:, 20:].max(0) == 0)[0][0] + 20  # the first empty column after the first digit
    dotted[29:32, gap : gap + 3] = 1.0  # a full stop on the baseline
    dotted[2:4, -6:-4] = 1.0  # and a fleck of dust
    assert clean == "3141" and read_number(paper(dotted)).text == "3141"


def test_a_digit_standing_apart_from_a_long_run_of_touching_ones_is_read_not_dropped_as_a_speck(
    read_number, test_digits
):
    """A speck is small against a digit's height. Judged against the longest side of the largest mark,
    a run of six touching digits (99 px long) made the 0 after it (20 px) a speck: "662928", 98.6 % sure."""
    run = compose(first_of("662928", *test_digits), "touching", np.random.default_rng(0))
    zero = first_of("0", *test_digits)[0]
    zero = zero[:, zero.any(0)]
    top = (run.shape[0] - zero.shape[0]) // 2
    row = np.concatenate([run, np.zeros((run.shape[0], 10)), np.pad(zero, ((top, run.shape[0] - 28 - top), (0, 4)))], 1)
    _, boxes = components(row > 0.25)
    assert len(boxes) == 2 and boxes[0, 3] - boxes[0, 2] > 4 * (boxes[1, 1] - boxes[1, 0])  # one run, one apart
    assert read_number(paper(row)).text == "6629280"


def test_a_blank_image_is_no_digits_not_a_guess(read_number):
    blank = encode(Image.new("L", (840, 280), 255), "PNG")
    with pytest.raises(ImageError, match="no digit"):
        read_number(blank, "blank.png")


def test_more_digits_than_the_limit_is_a_clear_error_not_a_hang(read_number, test_digits):
    images, labels = test_digits
    rng = np.random.default_rng(2)
    too_long = paper(compose([images[i] for i in range(MAX_DIGITS + 1)], "separate", rng), scale=2)
    with pytest.raises(ImageError, match=f"{MAX_DIGITS + 1} digits found; at most {MAX_DIGITS}"):
        read_number(too_long, "long.png")
    started = time.perf_counter()
    with pytest.raises(ImageError, match=f"at most {MAX_DIGITS}"):
        read_number(paper(compose([images[i] for i in range(200)], "separate", rng), scale=1), "very-long.png")
    assert time.perf_counter() - started < 10


def test_a_20000_by_100_image_is_read_within_the_pixel_limit(read_number, test_digits):
    page = np.zeros((100, 20_000), np.float32)
    for index, digit in enumerate(first_of("1987", *test_digits)):
        big = np.asarray(Image.fromarray(digit).resize((90, 90), Image.Resampling.BICUBIC))
        page[5:95, 9_000 + 100 * index : 9_090 + 100 * index] = np.clip(big, 0, 1)
    reading = read_number(paper(page, scale=1), "wide.png")
    assert reading.text == "1987"
    assert 8_990 <= reading.digits[0].box[0] <= 9_090 and 9_290 <= reading.digits[3].box[0] <= 9_390


def test_segments_are_drawn_on_the_original_image(read_number, test_digits):
    rng = np.random.default_rng(3)
    image = paper(compose(first_of("42", *test_digits), "separate", rng))
    reading = read_number(image)
    drawn = Image.open(io.BytesIO(draw_segments(image, reading))).convert("RGB")
    assert drawn.size == Image.open(io.BytesIO(image)).size
    x, y, w, h = reading.digits[0].box
    colours = {drawn.getpixel((x + w // 2, y)), drawn.getpixel((x, y + h // 2))}
    assert colours <= {(37, 99, 235), (217, 72, 15)}  # the box's edge, blue (or orange when unsure)


@fuzzing
@given(**DAMAGE)
def test_damaged_images_give_a_reading_or_an_image_error(read_number, valid_images, index, mutations):  # noqa: F811
    try:
        reading = read_number(mutate(valid_images[index], mutations), "fuzzed")
    except ImageError as error:
        assert str(error).startswith("fuzzed: ")
        return
    assert isinstance(reading, Reading) and reading.text.isdigit() and 1 <= len(reading.text) <= MAX_DIGITS
    assert 0 <= reading.confidence <= 1 and all(d.box[2] > 0 and d.box[3] > 0 for d in reading.digits)


@pytest.mark.parametrize("kind, at_least", [("overlapping hard", 8), ("uneven", 9), ("photographed", 8)])
def test_numbers_written_as_people_write_them_are_read_or_flagged(read_number, test_digits, kind, at_least):
    rng = np.random.default_rng(31)
    made = [number_image(*test_digits, 4, kind, rng) for _ in range(10)]
    readings = [read_number(image) for image, _ in made]
    right = [reading.text == truth for reading, (_, truth) in zip(readings, made)]
    assert sum(right) >= at_least, [(reading.text, truth) for reading, (_, truth) in zip(readings, made)]
    missed = [
        (r.text, truth, r.confidence) for r, (_, truth), ok in zip(readings, made, right) if not ok and not r.unsure
    ]
    assert len(missed) <= 1, missed  # wrong and sure of it: at most one in ten


def test_a_digit_written_fainter_than_its_neighbours_is_read_not_dropped_as_specks(read_number, test_digits):
    images, labels = test_digits
    rng = np.random.default_rng(5)
    truths, texts = [], []
    for _ in range(20):  # photographed numbers with one digit in a pen 0.4 as dark as the others'
        chosen = rng.integers(0, len(images), 4)
        faint = int(rng.integers(4))
        row = compose([images[c] * (0.4 if i == faint else 1.0) for i, c in enumerate(chosen)], "separate", rng)
        truths.append("".join(str(labels[c]) for c in chosen))
        texts.append(read_number(photograph(row, rng)).text)
    right = sum(t == r for t, r in zip(texts, truths))
    assert right >= 10, list(zip(texts, truths))  # 12 measured; 5 before faint marks and strokes were kept


def test_a_faint_smudge_beside_a_number_is_no_digit(read_number, test_digits):
    row = compose(first_of("7210", *test_digits), "separate", np.random.default_rng(0))
    smudged = np.pad(row, ((0, 0), (0, 30)))
    smudged[4:24, -26:-6] = 0.2  # a grey patch as tall as the digits, fainter than any ink of theirs
    assert read_number(paper(smudged)).text == read_number(paper(row)).text == "7210"


def test_a_confident_reading_that_may_have_dropped_a_digit_is_unsure():
    blank, three = number_strings.BLANK, 3 + 1
    # a 3, then a column as likely blank as 3, then a 3: one 3 held over three columns, or two 3s
    table = np.full((11, 5), 0.001)
    for column, (c, p) in enumerate([(blank, 0.99), (three, 0.99), (three, 0.5), (three, 0.99), (blank, 0.99)]):
        table[c, column] = p
    table[blank, 2] = 0.49
    decoding = number_strings.decode_lengths(table / table.sum(0))
    confidences = [one.confidence for one in decoding.reads]
    assert decoding.text == "3" and min(confidences) >= UNSURE_BELOW  # each digit sure: the old rule said sure
    calibration = runtime.load(None, NUMBERS).calibration  # the bundled reader's
    number = calibrated_confidence(calibration, uncalibrated_confidence(decoding, confidences))
    assert calibration.unsure(number)


def test_the_bundled_readers_calibration_is_the_recorded_one():
    calibration = confidence.load(BUNDLED_READER)
    assert calibration.calibrated
    assert (calibration.temperature, calibration.bias, calibration.unsure_below) == (1.28661, 0.30155, 0.786764)
    measured = calibration.record["validation"]
    assert measured["readings"] == 14_000 and measured["right_flagged"] <= confidence.FLAG_RIGHT_AT_MOST
    assert measured["ece"] < min(0.01, measured["ece_uncalibrated"])


@pytest.mark.parametrize(
    "temperature, unsure_below, bias", [(1.0, 0.8, 0.0), (1.7, 0.7, 0.49), (0.4, 0.99, -2.0), (3.0, 0.2, 1.0)]
)
def test_a_digit_is_marked_when_alone_it_would_make_the_number_unsure(temperature, unsure_below, bias):
    calibration = confidence.Calibration(temperature, unsure_below, calibrated=True, bias=bias)
    level = uncalibrated_unsure_below(calibration)
    calibrated = calibrated_confidence(calibration, level)
    assert calibrated == pytest.approx(unsure_below, abs=1e-9)  # the threshold, on the uncalibrated scale
    assert calibration.unsure(calibrated_confidence(calibration, level * 0.999))
    assert doubted_digits([0.999, level * 0.99, 0.999], calibration) == {1}
    assert doubted_digits([0.999, min(1.0, level * 1.001), 0.9995], calibration) == {1}  # none alone: the least sure


def test_the_threshold_inverted_at_its_extremes_is_no_overflow():
    for temperature in (0.05, 1.0, 20.0, 1e6):
        for threshold, expected in ((0.0, 0.0), (1.0, 1.0), (1e-300, None), (1 - 1e-16, None)):
            for bias in (-confidence.MAX_BIAS, 0.0, confidence.MAX_BIAS):
                calibration = confidence.Calibration(temperature, threshold, calibrated=True, bias=bias)
                level = uncalibrated_unsure_below(calibration)
                assert 0 <= level <= 1 and (expected is None or level == expected)
