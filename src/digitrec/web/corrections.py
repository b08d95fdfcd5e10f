"""`/api/corrections`: store what the model misread with its right answer, list and remove corrections,
and learn a personal model from them.

A correction comes as JSON: the image as a data URL (the drawing the page sent to /api/predict or
/api/read) and either the right `label` of one digit or the right `text` of a number. The image is read
again here with the model in use (never trusting an answer or a box from the page), so the correction
records what that model saw and answered; a number's digits are stored one per box, all or none, and only
when `text` has as many digits as were read. Learning runs `digitrec teach learn` as the Train panel's
child process (web/runs.py: one run at a time, loopback only unless allowed), in the runs folder, so
the panel shows its live curve and offers "Use" when it is done.

The store (corrections.py) is SQLite: each request opens its own short connection in a thread. Its
refusals become 404 (no such id), 409 (full) and 503 (the database cannot be used): STATUS_OF.
"""

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from digitrec import teach
from digitrec.corrections import MAX_CORRECTIONS, Correction, Store
from digitrec.errors import ImageError, ModelError, NoSuchCorrection, StoreError, StoreFull
from digitrec.reading import MAX_DIGITS
from digitrec.web.http import MAX_BODY_BYTES, decode_data_url, json_only, png_data_url
from digitrec.web.runs import Conflict, Runs
from digitrec.web.training import RunOut

MAX_LEARN_STEPS = 5000  # ten times the personal recipe's; more is a typo
DATA_URL_CHARACTERS = 4 * MAX_BODY_BYTES // 3 + 64  # base64 of the largest body, with its "data:image/png;base64," head
# what each refusal of the store is, in HTTP: an unknown id, a full store, a database that cannot be used
# (nothing was changed); the most specific first, as the app looks them up along each error's classes
STATUS_OF = {NoSuchCorrection: 404, StoreFull: 409, StoreError: 503}


class CorrectionIn(BaseModel):
    """An image with the right answer: `label` (one digit) or `text` (a number, as many digits as are read)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    image: str = Field(max_length=DATA_URL_CHARACTERS, description="data:image/png;base64,...")
    label: int | None = Field(None, ge=0, le=9)
    text: str | None = Field(None, min_length=1, max_length=MAX_DIGITS, pattern=r"^[0-9]+$")


class LearnIn(BaseModel):
    """Learning's settings; left out, the personal recipe's."""

    model_config = ConfigDict(extra="forbid", strict=True)
    steps: int | None = Field(None, ge=1, le=MAX_LEARN_STEPS)


class CorrectionOut(BaseModel):
    id: int
    label: int
    answer: int | None  # what the model read
    model: str | None
    source: str
    created: str
    box: list[int] | None  # a number's digit: x, y, width, height in the number's image
    input: str  # the 28x28 input the model saw, as a PNG data URL


class CorrectionsOut(BaseModel):
    corrections: list[CorrectionOut]  # oldest first
    count: int
    limit: int  # at most this many are kept


def correction_out(correction: Correction) -> CorrectionOut:
    return CorrectionOut(**correction.summary(), input=png_data_url(correction.input))


def router(store: Store, runs: Runs) -> APIRouter:
    """The corrections routes over `store`; learning runs through `runs` (the Train panel's runs)."""
    api = APIRouter(prefix="/api/corrections", tags=["corrections"])
    errors = {
        404: {"description": "no such correction"},
        409: {"description": "the store is full, or a run is training"},
        415: {"description": "a body that is not application/json"},
        422: {"description": "a bad label, text or image, or no digit in it"},
        503: {"description": "the corrections database cannot be used (locked, read-only, damaged)"},
    }
    changes = [Depends(json_only)]

    @api.post("", response_model=list[CorrectionOut], status_code=201, responses=errors, dependencies=changes)
    async def add(given: CorrectionIn, request: Request):
        """Store a correction of one digit (`label`), or of each digit of a number (`text`): the image is read
        again here with the model in use, which records what it saw and answered."""
        if (given.label is None) == (given.text is None):
            raise HTTPException(422, 'give exactly one of "label" (a digit 0-9) or "text" (the right number)')
        try:
            image = decode_data_url(given.image)
        except ValueError as problem:
            raise HTTPException(422, str(problem)) from None
        recognizer, reader = request.app.state.recognizer, request.app.state.reader

        def make():
            if given.label is not None:
                return [teach.digit_correction(recognizer, image, given.label, "page", "drawing")]
            return teach.number_corrections(reader, recognizer, image, given.text, "page", "drawing")

        try:
            made = await anyio.to_thread.run_sync(make, limiter=request.app.state.limiter)
        except (ImageError, ModelError) as problem:
            raise HTTPException(422, str(problem)) from None
        ids = await anyio.to_thread.run_sync(store.add_many, made)
        return [correction_out(c) for c in await anyio.to_thread.run_sync(lambda: [store.get(i) for i in ids])]

    @api.get("", response_model=CorrectionsOut, responses={503: errors[503]})
    async def listing():
        """Every stored correction, oldest first, with the 28x28 input the model saw."""
        corrections = await anyio.to_thread.run_sync(store.all)
        return CorrectionsOut(
            corrections=[correction_out(c) for c in corrections], count=len(corrections), limit=MAX_CORRECTIONS
        )

    @api.delete("/{correction_id}", status_code=204, responses=errors, dependencies=changes)
    async def remove(correction_id: Annotated[int, Path(ge=1, le=2**63 - 1)]):
        """Remove one correction."""
        await anyio.to_thread.run_sync(store.remove, [correction_id])
        return Response(status_code=204)

    @api.post(
        "/learn",
        response_model=RunOut,
        status_code=202,
        dependencies=changes,
        responses={
            **errors,
            403: {"description": "training is not offered by this server, or the request is from another site"},
        },
    )
    async def learn(settings: LearnIn | None = None):
        """Learn a personal model from the stored corrections (`digitrec teach learn`, from the bundled default)
        as a run of the Train panel: follow it at /api/runs/{name}/events, then use it with PUT /api/model
        {"run": name}. The body is optional."""
        runs.check_allowed()
        runs.refuse_if_busy()
        if await anyio.to_thread.run_sync(store.count) == 0:
            raise Conflict('no corrections to learn from yet: correct a reading first ("Wrong? It was")')
        runs.refuse_if_busy()  # again, on the event loop's thread: a second request may have come meanwhile
        name = runs.new_name("personal")
        steps = ["--steps", str(settings.steps)] if settings is not None and settings.steps is not None else []
        runs.launch(
            name,
            ["--db", str(store.path), "--out", str(runs.runs_dir / name), "--no-holdout", *steps],
            command=("teach", "learn"),
        )  # on the event loop's thread: see Runs.launch
        return await runs.run(name)

    return api
