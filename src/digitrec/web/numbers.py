"""`POST /api/read`: the whole number written in an image ("2026"), digit by digit, with boxes.

The same body forms and limits as `/api/predict` (`image_bytes`), the same recognizer and limiter.
"""

from fastapi import APIRouter, Request
from pydantic import BaseModel

from digitrec.reading import read as read_number
from digitrec.web.http import IMAGE_BODY, IMAGE_ERRORS, on_image

router = APIRouter()


class Alternative(BaseModel):
    digit: int
    confidence: float


class DigitOut(BaseModel):
    digit: int
    confidence: float
    unsure: bool
    box: list[int]  # x, y, width, height in the image's pixels
    alternatives: list[Alternative]


class ReadingOut(BaseModel):
    text: str
    confidence: float  # the calibrated chance that the whole reading is right (digits and their number)
    unsure: bool  # confidence below the reader's threshold; then at least one digit is marked unsure
    digits: list[DigitOut]


@router.post(
    "/api/read",
    response_model=ReadingOut,
    responses=IMAGE_ERRORS,
    openapi_extra=IMAGE_BODY,
    description="Read a whole number, left to right. Each digit has its box in the image's pixels. `confidence` is "
    "the calibrated chance that the whole reading is right (a digit missed or two read as one included); "
    "`unsure` marks a reading below the reader's threshold, and in it each digit that alone would make the "
    "number unsure (or else the least sure one).",
)
async def read(request: Request):
    reading = await on_image(
        request,
        lambda recognizer, image, reader, name: read_number(reader, recognizer, image, name),
        request.app.state.reader,
        "upload",
    )
    return reading.as_dict()
