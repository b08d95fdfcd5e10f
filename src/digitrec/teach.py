"""Corrections made from a person's images: a digit with its right label, or a number with its right text.

The model in use reads each image first, so every correction records what the model saw (the 28x28
input `preprocess` made) and what it answered. A number's digits are each stored with their box: the
number is read again here (never trusting a box sent by a page), and only when the right text has as
many digits as were read, each digit's part of the image becomes one correction. Also the export of
the store as a folder of labelled PNGs (`DIR/D/ID.png`), which `digitrec teach add DIR` reads back.

Built on the recognizer and reading; stores through corrections.py. No torch here: the web routes use it.
"""

import io
from collections.abc import Iterable
from pathlib import Path

from digitrec.corrections import NewCorrection, Store, check_label
from digitrec.errors import ImageError
from digitrec.files import write_atomic
from digitrec.preprocess import Source, load_image, preprocess, read_file
from digitrec.reading import read as read_number
from digitrec.recognizer import Recognizer
from digitrec.runtime import Runtime

BOX_MARGIN = 0.15  # of a digit's box height, kept around it when a number's digit is cut out


def digit_correction(
    recognizer: Recognizer, image: bytes, label: int, source: str, name: str = "image"
) -> NewCorrection:
    """`image` (bytes of one digit) corrected to `label`; raises ImageError when it holds no digit."""
    label = check_label(label)
    prediction = recognizer.predict(image, name)
    return NewCorrection(image, prediction.preprocessed, label, prediction.digit, recognizer.info["name"], source)


def number_corrections(
    reader: Runtime, recognizer: Recognizer, image: bytes, text: str, source: str, name: str = "image"
) -> list[NewCorrection]:
    """One correction per digit of the number in `image` (read by `reader` and `recognizer`, as `reading.read`
    reads), whose right digits are `text`; raises ImageError when `text` is not digits, or has another
    count of digits than the number read."""
    if not (text.isascii() and text.isdigit()):
        raise ImageError(f"the right number is digits 0-9 only, not {text!r}")
    reading = read_number(reader, recognizer, image, name)
    if len(text) != len(reading.digits):
        raise ImageError(
            f"{len(reading.digits)} digit(s) were read ({reading.text}) but {text!r} has {len(text)}: each "
            f"digit is kept with its box, so the counts must match; write the digits further apart and try again"
        )
    picture = load_image(image, name)
    corrections = []
    for place, (found, right) in enumerate(zip(reading.digits, text), 1):
        x, y, width, height = found.box
        margin = max(2, round(BOX_MARGIN * height))
        crop = picture.crop(
            (
                max(0, x - margin),
                max(0, y - margin),
                min(picture.width, x + width + margin),
                min(picture.height, y + height + margin),
            )
        )
        crop_png = png_bytes(crop)
        pixels = preprocess(crop_png, f"{name}, digit {place}")
        corrections.append(
            NewCorrection(
                crop_png, pixels, int(right), found.digit, f"{recognizer.info['name']} + reader", source, found.box
            )
        )
    return corrections


def png_bytes(picture) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def image_bytes(source: Source, name: str) -> bytes:
    """The bytes of an image given as a path or bytes (read with preprocess's size limit)."""
    if isinstance(source, (str, Path)):
        return read_file(Path(source), name)
    return source


def add_images(
    store: Store, recognizer: Recognizer, labelled: Iterable[tuple[str, Source | ImageError, int]], source: str
) -> tuple[list[tuple[str, int, NewCorrection]], list[ImageError]]:
    """Store each (name, image, label) that holds a digit, all in one transaction: the stored (name, id,
    correction) and the errors of the images that could not be read, in their order."""
    made, failed = [], []
    for name, image, label in labelled:
        try:
            if isinstance(image, ImageError):
                raise image
            made.append((name, digit_correction(recognizer, image_bytes(image, name), label, source, name)))
        except ImageError as error:
            failed.append(error)
    ids = store.add_many([correction for _, correction in made]) if made else []
    return [(name, identifier, correction) for (name, correction), identifier in zip(made, ids)], failed


def export(store: Store, directory: Path) -> int:
    """Write every correction's image as `directory/LABEL/ID.png`; how many were written."""
    corrections = store.all()
    for correction in corrections:
        write_atomic(Path(directory) / str(correction.label) / f"{correction.id}.png", correction.image)
    return len(corrections)
