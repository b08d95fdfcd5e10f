"""`POST /api/read`: the whole number written in an image ("2026"), digit by digit, with boxes.

The same body forms and limits as `/api/predict` (`image_bytes`), the same recognizer and limiter.
"""

import anyio
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from digitrec.errors import ImageError
from digitrec.web.app import IMAGE_BODY, IMAGE_ERRORS, image_bytes

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
    confidence: float  # the product of the digits' confidences
    unsure: bool  # any digit unsure
    digits: list[DigitOut]


@router.post(
    "/api/read",
    response_model=ReadingOut,
    responses=IMAGE_ERRORS,
    openapi_extra=IMAGE_BODY,
)
async def read(request: Request):
    """Read a whole number, left to right. Each digit has its box in the image's pixels; `unsure` marks a
    digit whose probability is below 0.8, and the reading when any digit is unsure."""
    raw = await image_bytes(request)
    recognizer = request.app.state.recognizer
    try:
        reading = await anyio.to_thread.run_sync(recognizer.read, raw, "upload", limiter=request.app.state.limiter)
    except ImageError as problem:
        raise HTTPException(422, str(problem)) from None
    return reading.as_dict()
