"""Number strings for the reader: composing rows of MNIST digits, framing them as strips, CTC decoding."""

import numpy as np
import pytest

from digitrec import number_strings
from digitrec.reading import components


@pytest.fixture(scope="module")
def validation_digits(mnist) -> tuple[np.ndarray, np.ndarray]:
    return mnist.validation.images[:, 0].numpy(), mnist.validation.labels.numpy()


def ink_components(row: np.ndarray) -> int:
    return len(components(row >= number_strings.INK)[1])


@pytest.mark.parametrize("spacing, joined", [("separate", False), ("close", False), ("touching", True)])
def test_touching_digits_meet_and_separate_ones_do_not(validation_digits, spacing, joined):
    images, labels = validation_digits
    ones_and_zeros = [images[np.nonzero(labels == d)[0][0]] for d in (1, 0)]  # whole, single strokes
    row = number_strings.compose(ones_and_zeros, spacing, np.random.default_rng(0))
    assert ink_components(row) == (1 if joined else 2)


def test_a_touching_digit_stops_beside_the_ink_it_meets_even_diagonally():
    row = np.zeros((30, 40), np.float32)
    row[5:16, 10] = 1.0  # a bar in column 10, rows 5-15
    bar = np.ones((11, 3), np.float32)
    assert number_strings.first_contact(row, bar, top=5) == 11  # level with it: its left column right beside column 10
    assert number_strings.first_contact(row, bar, top=16) == 11  # starting one row below its end: touching at a corner
    assert number_strings.first_contact(row, bar, top=17) == number_strings.MARGIN  # never meets it: slides all the way


def test_a_strip_is_32_px_high_with_the_digits_20_px_tall_and_maps_back_to_ink_columns():
    ink = np.zeros((200, 900), np.float32)
    ink[50:150, 300:360] = 1.0  # a 100 px tall bar...
    ink[60:140, 500:540] = 1.0  # ...and a shorter one, 140 px to its right
    framed = number_strings.strip(ink, digit_height=100)
    rows = np.nonzero(framed.pixels.max(1) > 0.5)[0]
    assert framed.pixels.shape[0] == number_strings.STRIP_HEIGHT and framed.pixels.shape[1] % number_strings.COLUMN_STEP == 0
    assert rows[-1] - rows[0] + 1 == number_strings.DIGIT_HEIGHT
    columns = np.nonzero(framed.pixels.max(0) > 0.5)[0]
    step = 100 / number_strings.DIGIT_HEIGHT  # ink px per strip px
    assert framed.to_ink_column(columns[0]) == pytest.approx(300, abs=step)
    assert framed.to_ink_column(columns[-1] + 1) == pytest.approx(540, abs=step)
    gap = np.diff(columns).max() - 1  # 140 ink px would be 28 strip px: narrowed
    assert gap == number_strings.MAX_GAP


def test_digits_written_up_and_down_a_page_are_set_on_one_line():
    ink = np.zeros((300, 400), np.float32)
    ink[0:100, 0:50] = 1.0
    ink[200:300, 300:350] = 1.0  # the second digit two heights lower
    pixels = number_strings.strip(ink, digit_height=100).pixels
    columns = np.nonzero(pixels.max(0) > 0.5)[0]
    first, second = pixels[:, columns[0]], pixels[:, columns[-1]]
    assert np.array_equal(first > 0.5, second > 0.5)  # the same rows


def test_a_five_s_detached_bar_stays_where_it_was_written():
    ink = np.zeros((120, 100), np.float32)
    ink[10:60, 20:30] = 1.0  # the body's stroke...
    ink[0:6, 25:70] = 1.0  # ...and a bar above it, apart but over the same columns
    pixels = number_strings.strip(ink, digit_height=60).pixels
    rows = np.nonzero(pixels.max(1) > 0.5)[0]
    assert rows[-1] - rows[0] + 1 == number_strings.DIGIT_HEIGHT  # framed as one group: bar and body keep their places


def scores(columns: list[int], sure: float = 0.9) -> np.ndarray:
    """(11, T) probabilities with class `c` likeliest in each column."""
    table = np.full((11, len(columns)), (1 - sure) / 10)
    table[columns, np.arange(len(columns))] = sure
    return table


def test_decoding_merges_repeats_drops_blanks_and_keeps_doubled_digits_apart_by_a_blank():
    blank, three, seven = number_strings.BLANK, 3 + 1, 7 + 1
    found = number_strings.decode(scores([blank, three, three, blank, three, seven, seven, blank]))
    assert [one.digit for one in found] == [3, 3, 7]
    assert [(one.first, one.last) for one in found] == [(1, 2), (4, 4), (5, 6)]
    assert found[0].confidence == pytest.approx(0.9)
    assert found[0].probabilities.sum() == pytest.approx(1) and found[0].probabilities.argmax() == 3
    assert number_strings.decode(scores([blank] * 5)) == []


def test_texts_read_each_strip_only_up_to_its_own_width():
    blank, one = number_strings.BLANK, 1 + 1
    batch = np.stack([scores([one, blank, one, blank]), scores([blank, one, blank, one])])
    assert number_strings.texts(batch, np.array([4, 2])) == ["11", "1"]


def test_training_batches_are_the_same_for_the_same_seed_and_hold_their_strings(validation_digits):
    images, labels = validation_digits
    first = number_strings.random_batch(images, labels, 16, np.random.default_rng([5, 0]))
    again = number_strings.random_batch(images, labels, 16, np.random.default_rng([5, 0]))
    assert np.array_equal(first.pixels, again.pixels) and np.array_equal(first.digits, again.digits)
    assert first.pixels.shape[:3] == (16, 1, number_strings.STRIP_HEIGHT) and first.lengths.sum() == len(first.digits)
    assert (first.columns * number_strings.COLUMN_STEP <= first.pixels.shape[3]).all()
    assert all(1 <= len(text) <= number_strings.MAX_TRAINING_LENGTH for text in number_strings.truths(first.digits, first.lengths))
    assert (first.columns >= 2 * first.lengths).all()  # room for every digit and a blank between repeats
