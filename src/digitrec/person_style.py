"""MNIST digits, and numbers written with them, rendered the way a person's images look: what the tests
and bench/ (person_style.py, read_numbers.py, inference.py) measure the recognizer and the reader on.

Each rendering scales the 28x28 digit up to a few hundred pixels, may thicken or thin its strokes, sets
it off-centre on a larger canvas, dark on light or light on dark, adds paper texture and noise, blurs it
mildly, and saves it as JPEG, PNG or a transparent-background RGBA PNG.
"""

import io

import numpy as np
from PIL import Image, ImageFilter

from digitrec.number_strings import written

STYLES = ("dark-on-light jpeg", "light-on-dark png", "rgba transparent", "thick pen", "thin pen", "photo")


def render(digit: np.ndarray, style: str, rng: np.random.Generator) -> bytes:
    """`digit` (28x28 uint8, white on black; or a wider row of digits) as encoded image bytes in the given style."""
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


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


NUMBER_STYLE = "dark-on-light jpeg"


def number_image(images: np.ndarray, labels: np.ndarray, length: int, kind: str,
                 rng: np.random.Generator) -> tuple[bytes, str]:
    """A random `length`-digit string drawn from `images` (N, 28, 28, 0..1) with their `labels`, written as
    `kind` (one of number_strings.CLASSES, by number_strings.written) and rendered as a person's JPEG (a
    photographed number is already its photo); returns the file's bytes and the true text."""
    chosen = rng.integers(0, len(images), length)
    made = written([images[i] for i in chosen], kind, rng)
    if not isinstance(made, bytes):
        made = render((made * 255).round().astype(np.uint8), NUMBER_STYLE, rng)
    return made, "".join(str(int(labels[i])) for i in chosen)
