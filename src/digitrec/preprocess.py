"""A person's image -> the 28x28 MNIST-style array the models expect; shared by CLI, Python API and web.

MNIST digits are white ink on black, their bounding box scaled (keeping the aspect ratio, with
anti-aliasing) so its longest side is 20 px, then pasted into 28x28 with the centre of mass at the
centre. `preprocess` does the same to any image: decode (six common formats, any mode, EXIF orientation,
transparency composited away), decide the polarity from the image itself, suppress paper texture and
noise, thicken hairline strokes, crop, scale and centre. On an MNIST digit it is nearly the identity.
Also the one PNG encoder of that 28x28 view (`to_png`), and the allocator setting for a process that
preprocesses image after image (`keep_freed_memory`). Only numpy, Pillow and scipy.ndimage: no torch here.
"""

import ctypes
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from scipy import ndimage

from digitrec.errors import ImageError

MAX_PIXELS = 25_000_000  # larger images are refused as possible decompression bombs
MAX_SIDE = 20_000  # absurd dimensions (e.g. 1 x 1,000,000) are refused too
MAX_FILE_BYTES = 4 * MAX_PIXELS  # 100 MB read from a file at most: any allowed image fits, even uncompressed RGBA
# The formats the README promises, by their Pillow plugins' names (a camera's JPEG with a second picture, MPO,
# opens as JPEG); no other plugin is tried, so no bytes start Ghostscript (EPS) or a rarely used decoder.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
WORKING_SIDE = 400  # larger images are first shrunk to this: plenty for a 20 px digit, and fast
BOX_SIDE = 20  # MNIST's digit box
FIELD_SIDE = 28
CENTRE = 14.0  # where MNIST's centres of mass sit (row and column means over the test set: 13.99, 14.01)
MIN_CONTRAST = 0.1  # ink that differs from the paper by less than this (on 0..1) is no digit
# Stroke widths (px at MNIST's scale, twice the inked area over its outline): MNIST's test digits have a
# median of 2.6, none below 2.0 (a one-pixel line measures 2). Hairlines below MIN are made TARGET wide;
# TARGET sits a little above the median because it measured best on thin-pen renderings. Thick strokes
# are left alone: eroding them wipes out the faint parts of a digit and cost accuracy on thick-pen
# renderings with every model measured (bench/person_style.py --split validation).
MIN_STROKE, TARGET_STROKE = 1.5, 3.0
NOISY_PAPER = 0.01  # paper whose robust standard deviation exceeds this (on 0..1) is median-filtered
NOISE_SIGMAS = 7.0  # paper texture up to this many robust standard deviations above the paper is removed...
# ...except where it joins a mark that reaches above that: ink counts from this many there (a digit's thin or
# faint strokes beside dark ones), unless printed lines were taken away (it would join their remnants to the
# writing). Chosen on photographed strings of validation digits (bench/read_numbers.py --split validation).
JOINED_SIGMAS = 3.0
# Paper, not ink (see `ink_map`); chosen on renderings of validation digits (digitrec.person_style, bench/person_style.py):
AMBIGUOUS_BORDER = 0.2  # a border whose median is within this of mid-grey does not say which is paper
LIGHT_CELLS, MIN_CELL = 16, 8  # the paper's light is measured in cells of 1/16 of the longer side, at least 8 px
MIN_BARE_CELLS = 8  # fewer cells of bare paper than this say nothing of its light: all cells are judged
LIGHT_PERCENTILE = 97  # a cell's paper: its bright level (ink and printed lines cover far less than this of most cells)
UNEVEN_LIGHT = 0.06  # paper whose light varies by less than this share (10th to 90th percentile of the cells) is left
INK_CELL = 0.5  # a cell darker than this share of the brightest cell near it is covered by ink, not in shadow
LINE_SHARE = 0.9  # a row or column bright over at least this share of its length holds a printed line
# ...bright by at least this much above the paper (on 0..1): in photos of plain paper a few columns stand 0.02-0.03
# above the rest (JPEG, the light), the faintest lines person_style draws 0.06 (0.04 chosen on validation photos)
LINE_EXCESS = 0.04
LINE_THICKNESS = 0.04  # ...and no thicker than this share of its length
SPECK_SHARE = 0.25  # a separate mark smaller both ways than this share of the tallest one's height is a speck
FAINT_SHARE = 0.35  # ink fainter than this (the brightest is 1) is no ink unless it edges a stroke...
STRONG_INK, NEAR_STROKE = 0.5, 0.01  # ...within this share of the longer side (at least 2 px) of ink this bright

ORIENTATION = 0x0112  # the EXIF tag
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
KEEP_FREED_BELOW = 4 << 20  # bytes: freed blocks up to this size stay in the process for reuse
TRIM_ABOVE = 32 << 20  # bytes: free memory at the heap's top beyond this goes back to the kernel
MB = 1_000_000

Source = str | Path | bytes | Image.Image | np.ndarray


def load_image(source: Source, name: str = "image", max_side: int | None = None) -> Image.Image:
    """Decode `source` (path, bytes, PIL image or array) into an upright PIL image, refusing bombs.

    With `max_side`, a JPEG is decoded at the smallest of 1/2, 1/4, 1/8 scale that keeps both sides at
    least that long (far less memory and time for a photo that will be shrunk anyway)."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return array_image(source, name)
    if isinstance(source, (str, Path)):
        name = str(source)
        source = read_file(Path(source), name)
    if not source:
        raise ImageError(f"{name}: empty file")
    try:
        image = Image.open(io.BytesIO(source), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in a format digitrec reads (PNG, JPEG, BMP, GIF, WebP, TIFF)") from None
    except Exception as error:  # noqa: BLE001  (Pillow's plugins raise many types on malformed headers)
        raise ImageError(f"{name}: corrupt image ({error})") from None
    # checked here from the header, before anything is decoded (Pillow's own check only warns, and a
    # warning cannot be turned into an error safely while other threads decode)
    if max(image.size) > MAX_SIDE or min(image.size) < 1:
        raise ImageError(f"{name}: absurd dimensions {image.width}x{image.height}")
    if image.width * image.height > MAX_PIXELS:
        raise ImageError(
            f"{name}: refused: {image.width}x{image.height} is more than {MAX_PIXELS:,} pixels (a decompression bomb?)"
        )
    try:
        image.seek(0)  # the first frame of an animation
        if max_side is not None:
            image.draft(None, (max_side, max_side))
        image.load()
        if image.getexif().get(ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        return image
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: refused: more than {MAX_PIXELS:,} pixels (a decompression bomb?)") from None
    except Exception as error:  # noqa: BLE001  (decoders raise OSError, ValueError, NotImplementedError, ...)
        raise ImageError(f"{name}: corrupt or truncated image ({error})") from None


def read_file(path: Path, name: str) -> bytes:
    """The bytes of `path`, refusing to read more than MAX_FILE_BYTES."""
    try:
        with path.open("rb") as file:
            content = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ImageError(f"{name}: cannot read ({error.strerror or error})") from None
    if len(content) > MAX_FILE_BYTES:
        raise ImageError(f"{name}: refused: larger than {MAX_FILE_BYTES // MB} MB")
    return content


def array_image(array: np.ndarray, name: str) -> Image.Image:
    """An (H, W), (H, W, 3) or (H, W, 4) array as an image; floats are taken as 0..1."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)) or array.size == 0:
        raise ImageError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8:
        array = np.clip(finite(array.astype(np.float64)) * (255 if array.dtype.kind == "f" else 1), 0, 255)
    return Image.fromarray(array.astype(np.uint8))


def finite(values: np.ndarray) -> np.ndarray:
    """`values` with NaN and infinite pixels set to the median of the others: in a digit's image, the paper."""
    usable = np.isfinite(values)
    if usable.all():
        return values
    if not usable.any():
        raise ImageError("no digit found (no pixel holds a finite value)")
    return np.where(usable, values, np.median(values[usable]))


def grey_levels(image: Image.Image) -> np.ndarray:
    """Luminance in 0..1 as float32; transparent parts are composited onto a background that contrasts
    with what is drawn (a canvas export is often dark or coloured strokes on nothing at all)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = finite(np.asarray(image.convert("F") if image.mode != "F" else image, dtype=np.float64))
        low, high = float(values.min()), float(values.max())
        return ((values - low) / (high - low) if high > low else np.zeros_like(values)).astype(np.float32)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha and image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] == 255:
        has_alpha = False  # an opaque canvas export: its alpha says nothing
    if not has_alpha:
        return unit(image if image.mode == "L" else image.convert("L"))
    rgba = unit(image.convert("RGBA"))
    alpha = rgba[:, :, 3]
    luminance = 0.299 * rgba[:, :, 0] + 0.587 * rgba[:, :, 1] + 0.114 * rgba[:, :, 2]  # ITU-R 601, as Pillow's "L"
    drawn, hidden = alpha > 0.5, alpha == 0
    hidden_colour = float(np.median(luminance[hidden])) if hidden.any() else None
    if hidden_colour is not None and drawn.any() and np.percentile(np.abs(luminance[drawn] - hidden_colour), 99) > 0.5:
        background = hidden_colour  # the paper made transparent kept its colour, and the drawing contrasts with it
    else:
        ink_is_dark = not drawn.any() or luminance[drawn].mean() < 0.5
        background = 1.0 if ink_is_dark else 0.0
    return (alpha * luminance + (1 - alpha) * background).astype(np.float32)


def unit(image: Image.Image) -> np.ndarray:
    """An 8-bit image's values as float32 in 0..1. (Asking np.asarray for float32 straight from Pillow
    converts pixel by pixel, 15 times slower than taking the bytes and converting them in numpy.)"""
    return np.asarray(image) / np.float32(255)


def ink_map(grey: np.ndarray) -> np.ndarray:
    """White ink on black, 0..1, with the paper at exactly 0: the one finder of ink, for `predict`, the pad,
    `explain` and `read` alike. Paper is everything that is not the writing: its tone and texture, uneven
    light and shadows (`even_light`), a notebook's printed lines (`without_printed_lines`), faint noise
    (the floor below) and specks of dust (`without_specks`). `grey`: (H, W) levels in 0..1, any float type."""
    grey = np.asarray(grey, dtype=np.float32)  # Pillow's "F" images (the median filter) read float32 bytes
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    light_evened = False
    paper = float(np.median(border))
    if abs(paper - 0.5) < AMBIGUOUS_BORDER:  # a border half in shadow: the paper is what most of the image is
        paper = float(np.median(grey))
    if paper > 0.5:  # dark ink on light paper: even its light, then invert
        evened = even_light(grey)
        light_evened, grey = evened is not grey, 1 - evened
    cleaned = without_printed_lines(grey)
    lines_taken = cleaned is not grey
    corrected = light_evened or lines_taken  # either may leave faint traces behind
    grey = cleaned
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    paper = float(np.median(border))
    noise = 1.4826 * float(np.median(np.abs(border - paper)))  # robust standard deviation of the paper
    if noise > NOISY_PAPER:  # speckled paper: a median filter (never on clean images, which it would erode)
        smooth = np.asarray(Image.fromarray(grey, mode="F").filter(ImageFilter.MedianFilter(3)), dtype=np.float32)
    else:
        smooth = grey
    peak = float(smooth.max())
    floor = paper + max(NOISE_SIGMAS * noise, 0.02 * (peak - paper))
    if peak - paper < MIN_CONTRAST or peak <= floor:
        raise ImageError("no digit found (the image is blank or nearly blank)")
    low = floor if lines_taken else paper + max(JOINED_SIGMAS * noise, 0.02 * (peak - paper))
    return without_specks(marks_above(smooth, floor, low, peak), corrected)


def marks_above(grey: np.ndarray, floor: float, low: float, peak: float) -> np.ndarray:
    """`grey` (ink bright) as ink from `low` (0) to `peak` (1), kept only in the marks (8-connected above
    `low`) that reach above `floor`: a hysteresis threshold, as edge detectors use; one threshold when
    `low` is `floor`."""
    if low >= floor:
        return np.clip((grey - floor) / (peak - floor), 0, 1).astype(np.float32, copy=False)
    labels, count = ndimage.label(grey > low, structure=np.ones((3, 3), bool))
    reaching = np.zeros(count + 1, bool)  # by label; 0, the background, is never above `floor`
    reaching[labels[grey > floor]] = True
    return np.where(reaching[labels], np.clip((grey - low) / (peak - low), 0, 1), 0).astype(np.float32)


def even_light(grey: np.ndarray) -> np.ndarray:
    """Light paper (dark ink) with its light made even: a photo's gradient or a shadow across the page
    divided away, so the paper is 1 everywhere and the ink keeps its contrast with it. The paper's light
    is its bright level (LIGHT_PERCENTILE) in each cell of a coarse grid (a cell the ink covers takes its
    neighbours' level: `paper_light`), interpolated; paper already even within
    UNEVEN_LIGHT is left exactly as it is."""
    height, width = grey.shape
    cell = max(MIN_CELL, -(-max(height, width) // LIGHT_CELLS))
    rows, cols = -(-height // cell), -(-width // cell)
    padded = np.pad(grey, ((0, rows * cell - height), (0, cols * cell - width)), mode="edge")
    cells = padded.reshape(rows, cell, cols, cell).transpose(0, 2, 1, 3).reshape(rows, cols, cell * cell)
    bright = bright_levels(cells)
    light = paper_light(bright)
    # whether the light is even, judged on the cells of bare paper (lit or in shadow: their mean is close to
    # their bright level): a cell mostly under a thick stroke, whose bright level is the stroke's soft edge,
    # would make clean paper look uneven
    bare = cells.mean(axis=2) >= (1 - UNEVEN_LIGHT) * bright
    darker, brighter = np.percentile(light[bare] if bare.sum() >= MIN_BARE_CELLS else light, [10, 90])
    if darker >= (1 - UNEVEN_LIGHT) * brighter or float(light.min()) <= 0:
        return grey
    field = Image.fromarray(light, mode="F").resize((cols * cell, rows * cell), Image.Resampling.BILINEAR)
    return np.clip(grey / np.asarray(field, dtype=np.float32)[:height, :width], 0, 1)


def bright_levels(cells: np.ndarray) -> np.ndarray:
    """Each cell's LIGHT_PERCENTILE (rows, cols, pixels) -> (rows, cols) float32. A cell where enough pixels
    share the image's brightest value has that value for its percentile (both ranks it lies between hold
    it): only the other cells, those ink covers, are partitioned (the same values, a fraction of the work)."""
    brightest = cells.max()
    ranks_above = cells.shape[2] - math.floor(LIGHT_PERCENTILE / 100 * (cells.shape[2] - 1))
    covered = np.count_nonzero(cells == brightest, axis=2) < ranks_above
    bright = np.full(cells.shape[:2], brightest, np.float32)
    bright[covered] = np.percentile(cells[covered], LIGHT_PERCENTILE, axis=1)
    return bright


def paper_light(light: np.ndarray) -> np.ndarray:
    """A grid of cells' bright levels with the cells that ink covers (darker than INK_CELL of the brightest
    cell within two) given their paper neighbours' mean level, working inwards from the paper."""
    ink = light < INK_CELL * dilate(light, 2)
    light = light.copy()
    while ink.any() and not ink.all():
        paper = np.pad(~ink, 1).astype(np.float32)
        levels = np.pad(np.where(ink, 0, light), 1)
        shifts = [(dy, dx) for dy in (0, 1, 2) for dx in (0, 1, 2) if (dy, dx) != (1, 1)]
        total = sum(levels[dy : dy + ink.shape[0], dx : dx + ink.shape[1]] for dy, dx in shifts)
        count = sum(paper[dy : dy + ink.shape[0], dx : dx + ink.shape[1]] for dy, dx in shifts)
        filled = ink & (count > 0)
        light[filled] = total[filled] / count[filled]
        ink &= ~filled
    return light


def without_printed_lines(grey: np.ndarray) -> np.ndarray:
    """`grey` (ink bright on dark paper) without a notebook's printed lines: ruled, squared, a margin line.

    A printed line crosses the whole picture, so it is bright over at least LINE_SHARE of its row (or
    column), which writing never is; its level there (the row's low percentile) above the paper's is
    subtracted from the row, leaving the writing where it crosses. A band of such rows thicker than
    LINE_THICKNESS of its length is a stroke of a tightly cropped digit (a 1 from edge to edge), not a
    line, and is kept; so is everything when taking the lines away would leave no ink at all."""
    lines = np.zeros_like(grey)
    near_darkest = grey <= float(grey.min()) + LINE_EXCESS / 2
    for axis in (1, 0):  # rows (horizontal lines), then columns (vertical ones)
        # The paper is no darker than the darkest pixel, so a row with more than 1 - LINE_SHARE of its pixels
        # near that darkest level holds no line: when every row does, its percentiles need not be found.
        length = grey.shape[axis]
        if near_darkest.sum(axis=axis).min() >= np.floor((1 - LINE_SHARE) * (length - 1)) + 2:
            continue
        level = np.percentile(grey, 100 * (1 - LINE_SHARE), axis=axis).astype(np.float32)
        excess = np.clip(level - np.median(level), 0, None)
        excess[band_thickness(excess > LINE_EXCESS) > LINE_THICKNESS * length] = 0
        if excess.max() > LINE_EXCESS:
            lines = np.maximum(lines, excess[:, None] if axis == 1 else excess[None, :])
    if not lines.any():
        return grey
    cleaned = grey - lines
    if float(cleaned.max()) - float(np.median(cleaned)) < MIN_CONTRAST:  # nothing but lines: they were the writing
        return grey
    return cleaned


def band_thickness(marked: np.ndarray) -> np.ndarray:
    """For each position of a 1-D mask, the length of the run of marked positions it is in (0 off the mask)."""
    edges = np.diff(np.concatenate([[0], marked.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    thickness = np.zeros(len(marked), np.int64)
    for start, end in zip(starts, ends):
        thickness[start:end] = end - start
    return thickness


def without_specks(ink: np.ndarray, corrected: bool) -> np.ndarray:
    """`ink` without specks and, where the paper was `corrected` (its light evened, lines taken away),
    without the faint traces that may leave: ink fainter than FAINT_SHARE away from the strokes (farther
    than NEAR_STROKE from ink at STRONG_INK: a smear along a shadow's edge or a line) and separate marks
    whose brightest pixel is below FAINT_SHARE. (Faint ink elsewhere is writing: a small digit enlarged
    is faint over whole strokes.) Specks are marks smaller, both ways, than SPECK_SHARE
    of the tallest mark's height (dust, a dot of the pen) unless they lie within the writing's own box
    (a digit's detached piece, the dot of a broken stroke). The height, not the longer side: a number's
    digits joined into one long mark are no taller than the digit written apart beside them."""
    if corrected:
        strong = ink >= STRONG_INK
        near_strong = dilate(strong.astype(np.float32), max(2, round(NEAR_STROKE * max(ink.shape)))) > 0
        ink = np.where(near_strong | (ink >= FAINT_SHARE), ink, 0).astype(np.float32)
    labels, boxes = components(ink > 0)
    if len(boxes) < 2:
        return ink
    peaks = np.zeros(len(boxes), np.float32)
    np.maximum.at(peaks, labels[labels >= 0], ink[labels >= 0])
    faint = peaks < FAINT_SHARE * peaks.max() if corrected else np.zeros(len(boxes), bool)
    heights = np.where(faint, 0, boxes[:, 1] - boxes[:, 0])
    sides = np.where(faint, 0, np.maximum(heights, boxes[:, 3] - boxes[:, 2]))
    large = sides >= SPECK_SHARE * heights.max()
    top, bottom = boxes[large, 0].min(), boxes[large, 1].max()
    left, right = boxes[large, 2].min(), boxes[large, 3].max()
    inside = (boxes[:, 0] >= top) & (boxes[:, 1] <= bottom) & (boxes[:, 2] >= left) & (boxes[:, 3] <= right)
    specks = np.nonzero(faint | (~large & ~inside))[0]
    if not len(specks):
        return ink
    return np.where(np.isin(labels, specks), 0, ink).astype(np.float32)


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of `mask`: a label image (-1 off the mask; components numbered in the order
    a row-major scan meets them) and each one's box as rows of (top, bottom, left, right, area), bottom
    and right exclusive."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool), output=np.int32)
    if count <= 1:  # most images of one digit: its box from the mask, without scanning the labels again
        rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes = [[rows[0], rows[-1] + 1, columns[0], columns[-1] + 1, np.count_nonzero(mask)]] if count else []
        return labels - 1, np.array(boxes, np.int64).reshape(-1, 5)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    boxes = np.array(
        [
            [rows.start, rows.stop, columns.start, columns.stop, area]
            for (rows, columns), area in zip(ndimage.find_objects(labels), areas)
        ],
        np.int64,
    )
    return labels - 1, boxes


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the inked area over its outline length."""
    solid = ink > 0.5
    interior = solid.copy()
    interior[1:-1, 1:-1] &= solid[:-2, 1:-1] & solid[2:, 1:-1] & solid[1:-1, :-2] & solid[1:-1, 2:]
    outline = max(np.count_nonzero(solid & ~interior), 1)  # count_nonzero: 5x faster than a boolean sum
    return 2 * np.count_nonzero(solid) / outline


def preprocess(source: Source, name: str = "image") -> np.ndarray:
    """`source` as a (28, 28) float32 array in 0..1, white digit on black, framed as MNIST frames digits."""
    return frame(ink_image(load_image(source, name, max_side=WORKING_SIDE), name, (WORKING_SIDE, WORKING_SIDE)))


def ink_image(image: Image.Image, name: str, fit: tuple[int, int]) -> np.ndarray:
    """`image` shrunk to fit within `fit` (width, height) if larger, as an ink map (see `ink_map`)."""
    try:
        grey = grey_levels(shrink(image, fit))
    except ImageError as error:
        raise ImageError(f"{name}: {error}") from None
    except Exception as error:  # noqa: BLE001  (Pillow cannot convert every mode it decodes, e.g. LAB)
        raise ImageError(f"{name}: cannot read its {image.mode} pixels ({error})") from None
    try:
        return ink_map(grey)
    except ImageError as error:
        raise ImageError(f"{name}: {error}") from None


def frame(ink: np.ndarray) -> np.ndarray:
    """An ink map holding one digit, cropped, scaled and centred as MNIST's digits are: (28, 28) float32."""
    rows, cols = np.nonzero(ink.any(1))[0], np.nonzero(ink.any(0))[0]
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = BOX_SIDE / max(ink.shape)
    # a hairline would fade away when shrunk: thicken it
    if scale < 1 and (width_after := stroke_width(ink) * scale) < MIN_STROKE:
        radius = int(np.ceil((TARGET_STROKE - width_after) / (2 * scale)))
        ink = dilate(np.pad(ink, radius), radius)
        scale = BOX_SIDE / max(ink.shape)
    height, width = (max(1, round(side * scale)) for side in ink.shape)
    if (height, width) != ink.shape:
        resized = Image.fromarray(ink, mode="F").resize((width, height), Image.Resampling.LANCZOS)
        ink = np.clip(np.asarray(resized, dtype=np.float32), 0, None)
        ink /= max(float(ink.max()), 1e-6)
    return centre_by_mass(ink)


def shrink(image: Image.Image, fit: tuple[int, int]) -> Image.Image:
    """`image` fitted within `fit` (width, height), as `thumbnail` would make it, without copying it first
    (a copy of a 25-megapixel RGBA image is another 100 MB)."""
    if image.width <= fit[0] and image.height <= fit[1]:
        return image
    scale = min(fit[0] / image.width, fit[1] / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)


def dilate(ink: np.ndarray, radius: int) -> np.ndarray:
    """The maximum over the (2r+1)-square around each pixel, outside the image counting as 0: float32."""
    return ndimage.maximum_filter(np.asarray(ink, np.float32), size=2 * radius + 1, mode="constant", cval=0.0)


def centre_by_mass(ink: np.ndarray) -> np.ndarray:
    """Paste `ink` (at most 20x20) into 28x28 so that its centre of mass lands on MNIST's centre."""
    total = float(ink.sum())
    rows, cols = np.arange(ink.shape[0])[:, None], np.arange(ink.shape[1])  # broadcast: no (H, W) index arrays
    top = int(round(CENTRE - (rows * ink).sum() / total))
    left = int(round(CENTRE - (cols * ink).sum() / total))
    top = min(max(top, 0), FIELD_SIDE - ink.shape[0])
    left = min(max(left, 0), FIELD_SIDE - ink.shape[1])
    field = np.zeros((FIELD_SIDE, FIELD_SIDE), dtype=np.float32)
    field[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    return field


def keep_freed_memory() -> None:
    """Make glibc keep freed blocks of the sizes one ordinary image needs for reuse, and hand big ones back.

    By default every block over 128 KB (a 280x280 image as float32 is 313 KB) is mapped fresh from the
    kernel and unmapped when freed, so each image's arrays page-fault in anew: that cost more than the
    arithmetic on them (one 280x280 canvas PNG: 4.1 -> 3.0 ms from bytes to prediction). Blocks up to
    KEEP_FREED_BELOW stay in the heap; larger ones (Pillow holds a big image in 16 MB blocks) are still
    mapped and unmapped, and free heap above TRIM_ABOVE is returned, so that an image as large as allowed
    (25 megapixels, 100 MB as RGBA) leaves nothing lasting behind. For a process that recognizes image
    after image (`serve`, `predict_many`'s worker processes); a no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BELOW)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE)
    except (OSError, AttributeError):
        pass


def to_png(pixels: np.ndarray) -> bytes:
    """A picture in 0..1, grey (H, W) or RGB (H, W, 3), as PNG bytes: the (28, 28) view the model saw, and
    the Inside view's pictures (`explain`), for people to look at."""
    buffer = io.BytesIO()
    # zlib level 1: a third of the default level 6's time on a grid of feature maps, for 10 % more bytes
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
