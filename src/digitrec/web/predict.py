"""`POST /api/predict` (one digit), `GET /api/health`, `GET /api/model` (the model in use) and the page at `/`."""

from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from digitrec.recognizer import Recognizer
from digitrec.web.http import (
    IMAGE_BODY,
    IMAGE_ERRORS,
    PAGE_POLICY,
    on_image,
    png_data_url,
)

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter()


class PredictionOut(BaseModel):
    digit: int
    confidence: float
    probabilities: list[float]
    unsure: bool
    preprocessed: str | None = None  # the 28x28 view as a PNG data URL, when asked for


@router.post(
    "/api/predict",
    response_model=PredictionOut,
    responses=IMAGE_ERRORS,
    openapi_extra=IMAGE_BODY,
    description="Recognize one digit. `confidence` is calibrated (its probability of being right); `unsure` "
    "is true when it is below the model's threshold, `unsure_below` in /api/model.",
)
async def predict(request: Request, preprocessed: bool = Query(False, description="include the 28x28 view")):
    result = await on_image(request, Recognizer.predict, "upload")
    return PredictionOut(
        digit=result.digit,
        confidence=result.confidence,
        probabilities=result.probabilities,
        unsure=result.unsure,
        preprocessed=png_data_url(result.preprocessed) if preprocessed else None,
    )


@router.get("/api/health")
def health():
    return {"status": "ok"}


@router.get("/api/model")
def model(request: Request):
    info = request.app.state.recognizer.info
    return {
        "name": info["name"],
        "recipe": info.get("recipe"),
        "parameters": info["parameters"],
        "test_accuracy": info["metrics"].get("test_accuracy"),
        "runtime": info["runtime"],
        "unsure_below": request.app.state.recognizer.calibration.unsure_below,
    }


@router.get("/", include_in_schema=False)
def page():
    """The drawing page: its scripts are files under /static, and its policy forbids any other script."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})
