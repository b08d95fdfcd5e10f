"""Number strings for the reader: composing rows of MNIST digits, framing them as strips, CTC decoding."""

import numpy as np
import pytest

from digitrec import number_strings
from digitrec.preprocess import components, dilate


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
    assert (
        framed.pixels.shape[0] == number_strings.STRIP_HEIGHT
        and framed.pixels.shape[1] % number_strings.COLUMN_STEP == 0
    )
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
    assert all(
        1 <= len(text) <= number_strings.MAX_TRAINING_LENGTH
        for text in number_strings.truths(first.digits, first.lengths)
    )
    assert (first.columns >= 2 * first.lengths).all()  # room for every digit and a blank between repeats


def ink_columns(piece: np.ndarray) -> np.ndarray:
    return np.nonzero(piece.max(0) >= number_strings.INK)[0]


def test_hard_overlaps_cross_a_quarter_to_a_half_of_the_narrower_digit(validation_digits):
    images, labels = validation_digits
    zero, one = (images[np.nonzero(labels == d)[0][0]] for d in (0, 1))
    for seed in range(5):
        row = number_strings.compose([zero, one], "overlapping hard", np.random.default_rng(seed))
        rng = np.random.default_rng(seed)  # compose varies the digits first: the same pieces again
        widths = [number_strings.vary(d, rng).shape[1] for d in (zero, one)]
        overlap = 2 * number_strings.MARGIN + sum(widths) - row.shape[1]
        assert 0.25 * min(widths) - 1 <= overlap <= 0.5 * min(widths) + 1, (overlap, widths)
        assert ink_components(row) == 1  # the 1 crosses into the 0


def test_uneven_writing_moves_the_baseline_and_heights_between_digits(validation_digits):
    images, labels = validation_digits
    ones = [images[i] for i in np.nonzero(labels == 1)[0][:8]]
    feet, heights = [], []
    for seed in range(3):
        row = number_strings.compose(
            ones, "separate", np.random.default_rng(seed), number_strings.Hand(uneven=True, slant=10.0)
        )
        found, boxes = components(row >= number_strings.INK)
        boxes = boxes[np.argsort(boxes[:, 2])]
        feet += list(np.diff(boxes[:, 1]))
        heights += list(boxes[:, 1] - boxes[:, 0])
    step = number_strings.BASELINE_STEP * number_strings.DIGIT_HEIGHT
    assert max(abs(f) for f in feet) <= step + 2 and np.std(feet) > 1  # moving, by at most 15 % of a digit
    assert np.ptp(heights) >= 4  # heights differ within a number


def test_a_photographed_number_is_a_jpeg_whose_ink_the_ink_finder_finds(validation_digits):
    images, labels = validation_digits
    rng = np.random.default_rng(4)
    row = number_strings.compose([images[i] for i in range(4)], "close", rng)
    photo = number_strings.photograph(row, rng, scale=5.0)
    assert photo[:2] == b"\xff\xd8"  # JPEG
    ink, shrunk = number_strings.found_ink(photo)
    assert ink.shape[0] == number_strings.PHOTO_WORKING_HEIGHT and 0 < shrunk < 1
    assert ink_components(ink) >= 2  # the digits, not a blank page


def test_a_training_photo_keeps_a_faint_digits_faint_ink_as_read_does(validation_digits):
    images, _ = validation_digits
    rng = np.random.default_rng(2)
    digits = [images[i] for i in range(4)]
    digits[2] = digits[2] * 0.4  # one digit in a lighter stroke than its neighbours
    ink, _ = number_strings.found_ink(
        number_strings.photograph(number_strings.compose(digits, "separate", rng), rng, 4.0)
    )
    beyond_edge = (ink > 0) & (ink < number_strings.INK_LEVEL) & ~(dilate(ink >= number_strings.INK_LEVEL, 1) > 0)
    assert beyond_edge.sum() >= 20  # its fainter stretches, more than a pixel from the ink at INK_LEVEL


def test_every_kind_of_writing_is_made_and_an_unknown_one_is_refused(validation_digits):
    images, _ = validation_digits
    rng = np.random.default_rng(0)
    for kind in number_strings.CLASSES:
        made = number_strings.written([images[0], images[1]], kind, rng)
        assert isinstance(made, bytes) if kind == "photographed" else made.shape[0] >= number_strings.ROW_HEIGHT
    with pytest.raises(ValueError, match="unknown kind of number 'scribbled'"):
        number_strings.written([images[0]], "scribbled", rng)


def test_the_training_mixtures_are_the_choices_of_the_strings_setting():
    from dataclasses import fields

    from digitrec.config import TrainConfig

    choices = next(f for f in fields(TrainConfig) if f.name == "strings").metadata["choices"]
    assert set(choices) == set(number_strings.MIXTURES)


def test_workers_make_the_same_training_strings_as_the_loop(mnist):
    from digitrec import data

    split = data.Split(mnist.train.images[:500], mnist.train.labels[:500])
    made_here = data.string_batches(split, 4, seed=3, mixture="people")
    made_ahead = data.string_batches(split, 4, seed=3, mixture="people", workers=2)
    for _ in range(3):
        here, ahead = next(made_here), next(made_ahead)
        assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(here, ahead))
    made_ahead.close()


def column_scores(columns: list[dict[int, float]]) -> np.ndarray:
    """(11, T) probabilities from each column's {class: probability}, the rest spread evenly."""
    table = np.zeros((11, len(columns)))
    for t, column in enumerate(columns):
        rest = (1 - sum(column.values())) / (11 - len(column))
        table[:, t] = rest
        for c, p in column.items():
            table[c, t] = p
    return table


def test_the_length_aware_decode_weighs_a_reading_one_digit_shorter():
    blank, three = number_strings.BLANK, 3 + 1
    # a 3, then a column as likely blank as 3, then a 3: "3" (one 3 held) or "33" (two, a blank between)
    table = column_scores([{blank: 0.99}, {three: 0.99}, {three: 0.5, blank: 0.49}, {three: 0.99}, {blank: 0.99}])
    decoded = number_strings.decode_lengths(table)
    assert [one.digit for one in number_strings.decode(table)] == [3]  # best path: one 3, held, and sure of it
    assert number_strings.decode(table)[0].confidence > 0.95
    assert set(decoded.by_length) >= {1, 2} and decoded.by_length[2][0] == "33"
    assert decoded.by_length[1][1] + decoded.by_length[2][1] == pytest.approx(0.99**4, rel=0.02)
    assert 0.45 < decoded.length_share < 0.6  # nearly a coin toss between one digit and two
    clear = number_strings.decode_lengths(column_scores([{blank: 0.99}, {three: 0.99}, {three: 0.99}, {blank: 0.99}]))
    assert clear.text == "3" and clear.length_share > 0.97


def test_the_aligned_reading_spans_the_columns_each_digit_was_read_from():
    blank, three, seven = number_strings.BLANK, 3 + 1, 7 + 1
    found = number_strings.decode_lengths(scores([blank, three, three, blank, three, seven, seven, blank])).reads
    assert [(one.digit, one.first, one.last) for one in found] == [(3, 1, 2), (3, 4, 4), (7, 5, 6)]
    assert found[0].confidence == pytest.approx(0.9)
