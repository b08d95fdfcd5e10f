"""MNIST digits, and numbers written with them, rendered the way a person's images look: what the tests
and bench/ (person_style.py, read_numbers.py, inference.py) measure the recognizer and the reader on.

Also what `digitrec calibrate` fits a digit model's confidence on (validation digits in every style);
never trained on (training varies digits at MNIST's scale, as tensors: augment.py).

Each rendering scales the 28x28 digit up to a few hundred pixels, may thicken or thin its strokes, sets
it off-centre on a larger canvas, dark on light or light on dark, adds paper texture and noise, blurs it
mildly, and saves it as JPEG, PNG or a transparent-background RGBA PNG. The paper styles write it on a
school notebook's page, photographed: ruled lines (blue or grey, a red margin line on some pages) or
squared paper, lit unevenly with a soft shadow, a few specks of dust, in colour, as JPEG.
"""

import io

import numpy as np
from PIL import Image, ImageFilter

from digitrec.number_strings import written

PLAIN_STYLES = ("dark-on-light jpeg", "light-on-dark png", "rgba transparent", "thick pen", "thin pen", "photo")
PAPER_STYLES = ("ruled paper", "squared paper")
STYLES = PLAIN_STYLES + PAPER_STYLES

LINE_COLOURS = (np.array([0.45, 0.6, 0.9]), np.array([0.6, 0.6, 0.6]))  # a notebook's printed lines: blue, grey
MARGIN_RED = np.array([0.9, 0.35, 0.35])
INK_COLOURS = (
    np.array([0.05, 0.05, 0.1]),
    np.array([0.1, 0.15, 0.5]),
    np.array([0.25, 0.25, 0.25]),
)  # black, blue, pencil


def render(digit: np.ndarray, style: str, rng: np.random.Generator) -> bytes:
    """`digit` (28x28 uint8, white on black; or a wider row of digits) as encoded image bytes in the given style."""
    if style in PAPER_STYLES:
        return render_on_paper(digit, style, rng)
    side = int(rng.integers(150, 320))
    width = round(side * digit.shape[1] / digit.shape[0])
    ink = Image.fromarray(digit).resize((width, side), Image.Resampling.BICUBIC)
    if style == "thick pen":
        ink = ink.filter(ImageFilter.MaxFilter(int(side / 28) * 2 + 1))
    elif style == "thin pen":
        ink = ink.filter(ImageFilter.MinFilter(int(side / 56) * 2 + 1))
    canvas_w, canvas_h = width + int(rng.integers(40, 300)), side + int(rng.integers(40, 300))
    canvas = Image.new("L", (canvas_w, canvas_h), 0)
    canvas.paste(ink, (int(rng.integers(0, canvas_w - width)), int(rng.integers(0, canvas_h - side))))
    level = np.asarray(canvas, dtype=np.float32) / 255
    if style == "rgba transparent":
        rgba = np.zeros((canvas_h, canvas_w, 4), np.uint8)
        rgba[..., :3] = (20, 40, 160)  # blue ink
        rgba[..., 3] = (level * 255).astype(np.uint8)
        return encode(Image.fromarray(rgba, "RGBA"), "PNG")
    dark_on_light = style != "light-on-dark png"
    paper, ink_level = rng.uniform(0.75, 0.95), rng.uniform(0.05, 0.3)
    if not dark_on_light:
        paper, ink_level = rng.uniform(0.0, 0.15), rng.uniform(0.7, 1.0)
    grey = paper + (ink_level - paper) * level
    grey += rng.normal(0, 0.03, grey.shape)  # paper texture
    if style == "photo":
        rows = np.linspace(0, 1, canvas_h)[:, None]
        grey += 0.08 * (rows - 0.5)  # uneven lighting
    image = Image.fromarray((np.clip(grey, 0, 1) * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5)))
    )
    if style == "photo":
        image = Image.merge("RGB", [image, image, image.point(lambda v: v * 0.9)])
    return encode(image, "PNG" if style == "light-on-dark png" else "JPEG", quality=int(rng.integers(60, 90)))


def render_on_paper(digit: np.ndarray, style: str, rng: np.random.Generator) -> bytes:
    """`digit` written on a ruled or squared notebook page and photographed: see the module's docstring.

    Sizes follow a page: the ink (20 of MNIST's 28 px) is as tall as 0.8-1.3 line spacings of ruled paper,
    or 1.6-2.6 squares of squared paper; the lines are 1-4 px wide, blue or grey, 12-32 % darker than the
    paper in luminance."""
    side = int(rng.integers(150, 320))
    width = round(side * digit.shape[1] / digit.shape[0])
    ink = np.asarray(Image.fromarray(digit).resize((width, side), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    canvas_w, canvas_h = width + int(rng.integers(40, 300)), side + int(rng.integers(40, 300))
    level = np.zeros((canvas_h, canvas_w), np.float32)
    top, left = int(rng.integers(0, canvas_h - side)), int(rng.integers(0, canvas_w - width))
    level[top : top + side, left : left + width] = ink
    ink_height = side * 20 / 28
    rows, cols = np.indices((canvas_h, canvas_w), dtype=np.float32)
    lines = np.zeros_like(level)  # how much of a line covers each pixel, 0..1
    line_width = float(rng.uniform(1, 4))
    if style == "ruled paper":
        lines = np.maximum(lines, periodic_lines(rows, ink_height / rng.uniform(0.8, 1.3), rng, line_width))
    else:
        spacing = ink_height / rng.uniform(1.6, 2.6)
        lines = np.maximum(
            periodic_lines(rows, spacing, rng, line_width), periodic_lines(cols, spacing, rng, line_width)
        )
    page = np.full((canvas_h, canvas_w, 3), rng.uniform(0.82, 0.97), np.float32) * np.array([1.0, 0.99, 0.95])
    line_colour = LINE_COLOURS[int(rng.integers(len(LINE_COLOURS)))]
    page = page * (1 - rng.uniform(0.3, 0.8) * lines[..., None] * (1 - line_colour))
    if style == "ruled paper" and rng.random() < 0.5:  # a margin line, somewhere on the page
        margin = (np.abs(cols - rng.uniform(0, canvas_w)) < line_width).astype(np.float32)
        page = page * (1 - 0.5 * margin[..., None] * (1 - MARGIN_RED))
    colour = INK_COLOURS[int(rng.integers(len(INK_COLOURS)))]
    page = page + (colour - page) * level[..., None] * rng.uniform(0.75, 1.0)
    for _ in range(int(rng.integers(0, 6))):  # specks of dust, well below a stroke's size
        y, x, radius = rng.uniform(0, canvas_h), rng.uniform(0, canvas_w), rng.uniform(0.5, 0.03 * side)
        page = page * (1 - 0.6 * ((rows - y) ** 2 + (cols - x) ** 2 < radius**2)[..., None])
    light = lighting(rows / canvas_h, cols / canvas_w, rng)
    page = page * light[..., None] + rng.normal(0, 0.02, page.shape)  # and the camera's noise
    image = Image.fromarray((np.clip(page, 0, 1) * 255).astype(np.uint8), "RGB")
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    return encode(image, "JPEG", quality=int(rng.integers(60, 90)))


def periodic_lines(position: np.ndarray, spacing: float, rng: np.random.Generator, line_width: float) -> np.ndarray:
    """Coverage 0..1 of lines `line_width` px wide every `spacing` px along `position`, at a random phase."""
    offset = (position - rng.uniform(0, spacing)) % spacing
    distance = np.minimum(offset, spacing - offset)
    return np.clip(line_width / 2 + 0.5 - distance, 0, 1)


def lighting(rows: np.ndarray, cols: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A photo's light over the page (rows and cols in 0..1): a gradient, and on most a soft shadow across it."""
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0.05, 0.2) * ((rows - 0.5) * np.cos(angle) + (cols - 0.5) * np.sin(angle))
    if rng.random() < 0.7:  # a hand's or a phone's shadow: a straight, blurred edge across the page
        edge_angle, at = rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3)
        across = (rows - 0.5) * np.cos(edge_angle) + (cols - 0.5) * np.sin(edge_angle) - at
        light = light * (1 - rng.uniform(0.15, 0.4) / (1 + np.exp(-across / rng.uniform(0.02, 0.1))))
    return light


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


NUMBER_STYLE = "dark-on-light jpeg"


def number_image(
    images: np.ndarray, labels: np.ndarray, length: int, kind: str, rng: np.random.Generator
) -> tuple[bytes, str]:
    """A random `length`-digit string drawn from `images` (N, 28, 28, 0..1) with their `labels`, written as
    `kind` (one of number_strings.CLASSES, by number_strings.written) and rendered as a person's JPEG (a
    photographed number is already its photo); returns the file's bytes and the true text."""
    chosen = rng.integers(0, len(images), length)
    made = written([images[i] for i in chosen], kind, rng)
    if not isinstance(made, bytes):
        made = render((made * 255).round().astype(np.uint8), NUMBER_STYLE, rng)
    return made, "".join(str(int(labels[i])) for i in chosen)
