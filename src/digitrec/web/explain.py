"""`POST /api/explain`: what the model computed for one image (`digitrec.explain`), as JSON with PNG
data URLs, for the page's Inside view. Same bodies, limits and errors as `/api/predict`."""

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from digitrec import explain
from digitrec.recognizer import Recognizer
from digitrec.web.http import IMAGE_BODY, IMAGE_ERRORS, on_image, png_data_url

router = APIRouter()


class FeatureMapsOut(BaseModel):
    name: str = Field(description="conv1, conv2, ...: the convolution stages in order")
    shape: list[int] = Field(description="channels, height, width")
    image: str = Field(description="all channels as one grid, a PNG data URL (8 or 16 maps a row)")


class SaliencyOut(BaseModel):
    digit: int
    image: str = Field(
        description="the 28x28 input, its ink red where it counts for the digit and blue where "
        "it counts against, a PNG data URL"
    )
    caption: str


class ExplanationOut(BaseModel):
    digit: int
    confidence: float
    probabilities: list[float]
    unsure: bool
    target: int = Field(description="the class `caption` describes: ?target=, else the predicted digit")
    caption: str = Field(description="what the target's saliency shows, in one sentence")
    input: str = Field(description="the 28x28 view the model saw, a PNG data URL")
    stages: list[FeatureMapsOut] = Field(description="each convolution stage's feature maps; empty for softmax")
    filters: FeatureMapsOut | None = Field(description="the first layer's filters, red positive, blue negative")
    saliency: list[SaliencyOut] = Field(description="occlusion saliency for each of the ten classes, 0 to 9")
    templates: list[str] | None = Field(description="softmax only: each class's 28x28 weights, red/blue PNG data URLs")


def explanation_out(recognizer: Recognizer, raw: bytes, target: int | None = None) -> ExplanationOut:
    """The whole Inside view of one uploaded image: explanation and pictures (what the route runs)."""
    result = explain.explain(recognizer, raw, "upload")
    prediction = result.prediction
    pixels = prediction.preprocessed
    target = prediction.digit if target is None else target
    return ExplanationOut(
        digit=prediction.digit,
        confidence=prediction.confidence,
        probabilities=prediction.probabilities,
        unsure=prediction.unsure,
        target=target,
        caption=explain.saliency_caption(target),
        input=png_data_url(pixels),
        stages=[
            FeatureMapsOut(
                name=stage.name, shape=list(stage.maps.shape), image=png_data_url(explain.feature_grid(stage.maps))
            )
            for stage in result.stages
        ],
        filters=None
        if result.filters is None
        else FeatureMapsOut(
            name="conv1", shape=list(result.filters.shape), image=png_data_url(explain.filter_grid(result.filters))
        ),
        saliency=[
            SaliencyOut(
                digit=digit,
                image=png_data_url(explain.overlay(pixels, attribution)),
                caption=explain.saliency_caption(digit),
            )
            for digit, attribution in enumerate(result.saliency)
        ],
        templates=None
        if result.templates is None
        else [png_data_url(picture) for picture in explain.templates_rgb(result.templates)],
    )


@router.post("/api/explain", response_model=ExplanationOut, responses=IMAGE_ERRORS, openapi_extra=IMAGE_BODY)
async def explain_image(
    request: Request,
    target: int | None = Query(
        None, ge=0, le=9, description="the digit whose saliency `caption` describes (default: the predicted one)"
    ),
):
    """What the network computed for one digit: the input it saw, each convolution stage's feature maps,
    the first layer's filters, occlusion saliency for every class, and (softmax) the weight templates."""
    return await on_image(request, explanation_out, target)
