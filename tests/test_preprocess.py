import io
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter

from digitrec import preprocess
from digitrec.errors import ImageError
from digitrec.person_style import encode
from digitrec.preprocess import preprocess as prep


@pytest.fixture(scope="module")
def digits(mnist) -> np.ndarray:
    return (mnist.test.images[:300, 0].numpy() * 255).round().astype(np.uint8)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_mnist_digits_pass_through_nearly_unchanged(digits):
    originals = digits.astype(np.float32) / 255
    processed = np.stack([prep(d) for d in digits])
    per_image = np.abs(processed - originals).reshape(len(digits), -1).mean(1)
    assert np.median(per_image) < 0.002 and per_image.mean() < 0.01


common = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@common
@given(
    index=st.integers(0, 299),
    pad_top=st.integers(0, 60),
    pad_left=st.integers(0, 60),
    pad_bottom=st.integers(0, 60),
    pad_right=st.integers(0, 60),
)
def test_translation_and_padding_do_not_change_the_result(digits, index, pad_top, pad_left, pad_bottom, pad_right):
    shifted = np.pad(digits[index], ((pad_top, pad_bottom), (pad_left, pad_right)))
    assert mean_difference(prep(shifted), prep(digits[index])) < 0.01


@common
@given(index=st.integers(0, 299), factor=st.sampled_from([2, 3, 5, 8, 12]))
def test_scaling_up_does_not_change_the_result_beyond_a_small_tolerance(digits, index, factor):
    big = Image.fromarray(digits[index]).resize((28 * factor, 28 * factor), Image.Resampling.BICUBIC)
    # resampling softens MNIST's edges and may move the rounded centre of mass by a pixel (about 0.1 on
    # its own)
    assert mean_difference(prep(big), prep(digits[index])) < 0.13


@common
@given(
    index=st.integers(0, 299),
    paper=st.integers(180, 255),
    ink=st.integers(0, 80),
    colour=st.sampled_from([(1, 1, 1), (0.2, 0.3, 1.0), (1.0, 0.2, 0.1)]),
)
def test_inversion_and_colours_do_not_change_the_result(digits, index, paper, ink, colour):
    level = digits[index].astype(np.float32) / 255
    grey = paper + (ink - paper) * level  # dark ink on light paper
    rgb = np.clip(np.stack([grey * c + paper * (1 - c) * (1 - level) for c in colour], -1), 0, 255)
    # low-contrast colours lose the faintest anti-aliased pixels to the noise floor, which can shift the box
    assert mean_difference(prep(rgb.astype(np.uint8)), prep(digits[index])) < 0.08


def test_transparent_canvas_export_is_composited(digits):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = digits[0]  # black strokes, alpha = ink
    assert mean_difference(prep(Image.fromarray(rgba, "RGBA")), prep(digits[0])) < 0.01
    rgba[..., :3] = 255  # white strokes on nothing
    assert mean_difference(prep(Image.fromarray(rgba, "RGBA")), prep(digits[0])) < 0.01


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "I;16", "CMYK", "LA", "F"])
def test_every_pillow_mode_is_accepted(digits, mode):
    image = Image.fromarray(digits[3]).convert("RGB") if mode in ("P", "CMYK") else Image.fromarray(digits[3])
    converted = image.convert(mode)
    assert mean_difference(prep(converted), prep(digits[3])) < (0.08 if mode == "1" else 0.02)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_common_format_decodes(digits, fmt):
    encoded = encode(Image.fromarray(255 - digits[5]).resize((112, 112)), fmt)
    assert prep(encoded).shape == (28, 28)
    assert mean_difference(prep(encoded), prep(digits[5])) < 0.06


def test_exif_orientation_is_applied(digits):
    upright = Image.fromarray(255 - digits[7]).resize((84, 84))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": the stored pixels are turned the other way
    stored = upright.rotate(90, expand=True)
    encoded = encode(stored, "JPEG", exif=exif.tobytes(), quality=95)
    assert mean_difference(prep(encoded), prep(upright)) < 0.03


def test_gif_first_frame_is_used(digits):
    frames = [Image.fromarray(255 - digits[i]).resize((56, 56)).convert("P") for i in (0, 1)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert mean_difference(prep(buffer.getvalue()), prep(digits[0])) < 0.03


@pytest.mark.parametrize(
    "image",
    [
        np.full((200, 200), 255, np.uint8),
        np.zeros((50, 80), np.uint8),
        np.random.default_rng(0).normal(200, 3, (100, 100)).clip(0, 255).astype(np.uint8),
    ],
)
def test_blank_or_nearly_blank_images_are_no_digit(image):
    with pytest.raises(ImageError, match="no digit found"):
        prep(image)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "empty file"),
        (b"this is not an image at all", "not an image"),
    ],
)
def test_non_images_are_refused(payload, message):
    with pytest.raises(ImageError, match=message):
        prep(payload, "upload")


def test_truncated_file_is_refused(digits):
    encoded = encode(Image.fromarray(digits[0]).resize((200, 200)), "PNG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        prep(encoded[: len(encoded) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (6000, 6000)), "PNG")  # 36 M pixels in a few kilobytes
    assert len(bomb) < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="decompression bomb"):
            prep(bomb)


def test_absurd_dimensions_are_refused():
    with pytest.raises(ImageError, match="absurd dimensions"):
        prep(encode(Image.new("L", (30_000, 1)), "PNG"))


def test_unreadable_path_is_refused(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        prep(tmp_path / "missing.png")


def test_bad_array_shapes_are_refused():
    with pytest.raises(ImageError, match="expected an"):
        prep(np.zeros((2, 3, 5, 7)))


def test_hairline_strokes_are_thickened(digits):
    big = Image.fromarray(digits[0]).resize((400, 400), Image.Resampling.BICUBIC)
    hairline = np.asarray(big) > 250  # a pen line only a few pixels wide at 400 px
    result = prep((hairline * 255).astype(np.uint8))
    assert preprocess.stroke_width(result) > 1.5 and (result > 0.5).sum() > 40


def test_thick_strokes_are_kept(digits):
    big = Image.fromarray(digits[0]).resize((280, 280), Image.Resampling.BICUBIC)
    marker = big.filter(ImageFilter.MaxFilter(31))  # strokes 1.5 MNIST pixels wider on each side
    # eroding them back would also wipe out the digit's faint parts, which costs more than thick strokes
    assert preprocess.stroke_width(prep(marker)) > preprocess.stroke_width(prep(digits[0])) + 2


def float_tiff(digit: np.ndarray, odd_value: float) -> bytes:
    """`digit` (white on black) as a 32-bit float TIFF, dark ink on light paper, with one pixel set to `odd_value`."""
    values = 1 - np.asarray(Image.fromarray(digit).resize((112, 112)), dtype=np.float32) / 255
    values[3, 3] = odd_value
    return encode(Image.fromarray(values, "F"), "TIFF")


@pytest.mark.parametrize("odd_value", [np.inf, -np.inf, np.nan])
def test_a_non_finite_pixel_is_dropped_and_the_digit_read(digits, odd_value):
    clean = prep(float_tiff(digits[0], 1.0))
    assert mean_difference(prep(float_tiff(digits[0], odd_value)), clean) < 0.005


def test_an_array_with_non_finite_values_is_read_like_the_clean_one(digits):
    values = digits[0].astype(np.float64) / 255
    values[0, :5] = [np.nan, np.inf, -np.inf, np.nan, np.inf]
    assert mean_difference(prep(values), prep(digits[0])) < 0.005


def test_a_mode_pillow_cannot_convert_is_an_image_error(digits):
    lab = encode(Image.fromarray(255 - digits[0]).convert("RGB").convert("LAB"), "TIFF")
    with pytest.raises(ImageError, match="upload: cannot read its LAB pixels"):
        prep(lab, "upload")


MALFORMED_DDS = (
    b"DDS "
    + (124).to_bytes(4, "little")
    + b"\x07\x10\x08\x00"
    + (28).to_bytes(4, "little") * 2
    + bytes(68)
    + (32).to_bytes(4, "little")
    + (4).to_bytes(4, "little")
    + b"XXXX"
    + bytes(40)
)
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 4 4 moveto 24 24 lineto stroke showpage\n%%EOF\n"


@pytest.mark.parametrize("fmt", ["DDS", "ICNS", "PCX", "TGA", "SGI", "PPM", "EPS bytes", "malformed DDS"])
def test_formats_outside_the_listed_six_are_refused_by_name(digits, fmt):
    if fmt == "EPS bytes":  # Pillow would hand these to Ghostscript
        payload = EPS
    elif fmt == "malformed DDS":  # Pillow raises NotImplementedError on it
        payload = MALFORMED_DDS
    else:
        payload = encode(
            Image.fromarray(255 - digits[0]).convert("RGBA" if fmt in ("DDS", "ICNS") else "RGB").resize((64, 64)), fmt
        )
    with pytest.raises(
        ImageError, match=r"seven.png: not an image in a format digitrec reads \(PNG, JPEG, BMP, GIF, WebP, TIFF\)"
    ):
        prep(payload, "seven.png")


def test_transparent_palette_png_with_white_paper_made_transparent_reads_like_the_opaque_one(digits):
    opaque = Image.fromarray(255 - digits[6]).resize((280, 280), Image.Resampling.BICUBIC).convert("RGB")
    noisy = Image.open(io.BytesIO(encode(opaque, "JPEG", quality=60)))  # paper that is near-white, not all 255
    palette = noisy.quantize(32)
    paper = int(np.bincount(np.asarray(palette).ravel()).argmax())
    transparent = encode(palette, "PNG", transparency=paper)  # the commonest colour, the paper, made transparent
    assert mean_difference(prep(transparent), prep(encode(palette, "PNG"))) < 0.01


def test_pixel_count_is_checked_from_the_header_while_threads_decode_at_once(digits):
    from concurrent.futures import ThreadPoolExecutor

    bomb = encode(Image.new("1", (6000, 6000)), "PNG")
    fine = encode(Image.fromarray(255 - digits[0]).resize((280, 280)), "PNG")

    def attempt(index: int) -> str:
        try:
            prep(bomb if index % 2 else fine)
            return "read"
        except ImageError as error:
            return str(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: a race shows up at once
    try:
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(attempt, range(64)))
    finally:
        sys.setswitchinterval(interval)
    assert outcomes[0::2] == ["read"] * 32
    assert set(outcomes[1::2]) == {"image: refused: 6000x6000 is more than 25,000,000 pixels (a decompression bomb?)"}


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(digits):
    from digitrec.preprocess import load_image

    photo = encode(Image.fromarray(255 - digits[0]).resize((4000, 3000)), "JPEG", quality=90)
    assert load_image(photo, max_side=400).size == (1000, 750)  # 1/4: the smallest scale with both sides >= 400
    assert load_image(photo).size == (4000, 3000)
    assert mean_difference(prep(photo), prep(digits[0])) < 0.06


def test_an_oversized_file_is_refused_without_reading_it_whole(tmp_path):
    big = tmp_path / "big.png"
    with big.open("wb") as file:
        file.truncate(preprocess.MAX_FILE_BYTES + 1)  # sparse: takes no disk space
    with pytest.raises(ImageError, match=f"big.png: refused: larger than {preprocess.MAX_FILE_BYTES // 1_000_000} MB"):
        prep(big)


def test_to_png_round_trips_the_preprocessed_view(digits):
    view = prep(digits[0])
    decoded = np.asarray(Image.open(io.BytesIO(preprocess.to_png(view))), dtype=np.float32) / 255
    assert decoded.shape == (28, 28) and np.abs(decoded - view).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("style", ["ruled paper", "squared paper"])
def test_digits_on_ruled_and_squared_paper_are_read_right_through_predict(mnist, style):
    """Test digits written on a notebook's page and photographed (digitrec.person_style): the printed lines,
    the margin line, the shadow and the specks are paper, not ink (they once read 5-16 %)."""
    from digitrec.person_style import render
    from digitrec.recognizer import Recognizer

    digits = (mnist.test.images[:100, 0].numpy() * 255).round().astype(np.uint8)
    rng = np.random.default_rng(0)
    results = Recognizer.load().predict_many([(str(i), render(d, style, rng)) for i, d in enumerate(digits)], workers=1)
    accuracy = np.mean(
        [getattr(r, "digit", -1) == label for r, label in zip(results, mnist.test.labels[:100].tolist())]
    )
    assert accuracy >= 0.98, accuracy


def test_bright_levels_are_each_cells_percentile():
    rng = np.random.default_rng(0)
    for side in (8, 13, 18):
        cells = rng.random((6, 7, side * side)).astype(np.float32)
        cells[rng.random(cells.shape) < rng.random((6, 7, 1)) * 0.1] = 1.0  # paper at 1.0 in some cells
        expected = np.percentile(cells, preprocess.LIGHT_PERCENTILE, axis=2).astype(np.float32)
        assert np.array_equal(preprocess.bright_levels(cells), expected)
        assert (expected == 1.0).any() and (expected < 1.0).any()  # both kinds of cell were there


def test_components_label_every_pixel_of_the_mask_and_box_each_one():
    rng = np.random.default_rng(0)
    blob = np.zeros((40, 60), bool)
    blob[5:30, 10:12] = blob[28:30, 10:50] = True  # one 8-connected mark (the fast path)
    masks = [np.zeros((40, 60), bool), blob] + [rng.random((40, 60)) < share for share in (0.002, 0.05, 0.5)]
    for mask in masks:
        labels, boxes = preprocess.components(mask)
        assert labels.dtype == np.int32 and np.array_equal(labels >= 0, mask)
        assert len(boxes) == len(np.unique(labels[mask])) and boxes.shape[1:] == (5,)
        for index, box in enumerate(boxes):
            rows, columns = np.nonzero(labels == index)
            assert box.tolist() == [rows.min(), rows.max() + 1, columns.min(), columns.max() + 1, len(rows)]
    assert len(preprocess.components(blob)[1]) == 1


def test_printed_lines_are_taken_away_but_a_tightly_cropped_stroke_is_kept():
    lined = np.full((200, 200), 0.9, np.float32)
    lined[::40] = 0.6  # ruled lines every 40 px
    lined[60:140, 95:103] = 0.1  # a 1
    ink = preprocess.ink_map(lined)
    assert ink[::40, :90].max() == 0 and ink[::40, 110:].max() == 0  # the lines, away from the 1
    assert ink[70:130, 97:101].min() > 0.5  # the 1, dimmer only where a line crossed it
    one = np.full((100, 30), 0.9, np.float32)
    one[:, 12:18] = 0.1  # a 1 cropped from edge to edge: a full-height column of ink, but it is all there is
    assert preprocess.ink_map(one)[:, 13:17].min() > 0.9


def test_columns_a_shade_brighter_are_no_printed_line_but_a_faint_line_is():
    page = np.full((128, 200), 0.1, np.float32)  # ink bright on dark paper, as without_printed_lines sees it
    page[40:90, 60:80] = 0.9  # writing
    shaded = page.copy()
    shaded[:, 5:8] += 0.03  # three columns a shade off the rest of the page (a JPEG's blocks, the light)
    assert preprocess.without_printed_lines(shaded) is shaded
    lined = page.copy()
    lined[:, 150] += 0.06  # a faint printed line
    assert np.allclose(preprocess.without_printed_lines(lined)[:, 150], 0.1)


def test_the_ink_map_of_float64_levels_is_that_of_float32_ones():
    rng = np.random.default_rng(0)
    photo = 0.85 + rng.normal(0, 0.02, (60, 60))  # noisy paper: the median-filtered path
    photo[15:45, 25:32] = 0.1
    assert np.array_equal(preprocess.ink_map(photo), preprocess.ink_map(photo.astype(np.float32)))


def test_a_stroke_fading_out_of_a_dark_one_is_ink_but_paper_texture_as_faint_is_not():
    rng = np.random.default_rng(0)
    photo = (0.85 + rng.normal(0, 0.02, (200, 200))).astype(np.float32)  # noisy paper: floor 7 sigmas above it
    photo[60:140, 20:30] = 0.1  # a dark stroke...
    photo[98:102, 30:130] = 0.85 - np.linspace(0.3, 0.08, 100, dtype=np.float32)  # ...a thin one fading out of it
    photo[40:50, 150:160] = 0.75  # and a blot of paper texture as faint as its faded end, on its own
    ink = preprocess.ink_map(photo)
    faded_end = ink[99:101, 105:125]  # 0.13 to 0.09 darker than the paper: below the floor, above 3 sigmas
    assert (faded_end > 0).mean() > 0.9, faded_end
    assert ink[40:50, 150:160].max() == 0
    assert ink[150:190, 100:190].max() == 0  # the paper
