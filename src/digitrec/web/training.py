"""The Train panel's routes: `/api/training`, `/api/runs...` and `PUT /api/model`, over the runs manager
(web/runs.py, which knows nothing of HTTP). Bodies are pydantic models; the routes that change the
server's state take only `application/json` (`json_only`), and the app's middlewares have already checked
the request's `Host` and `Origin` (web/http.py)."""

import contextlib
from pathlib import Path
from typing import Literal

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from digitrec import rundir
from digitrec.errors import ModelError
from digitrec.web import runs as runs_module
from digitrec.web.http import REPORT_POLICY, json_only
from digitrec.web.runs import (
    PAGE_MAX_BATCH_SIZE,
    PAGE_MAX_STEPS,
    Runs,
    finite_json,
    recipes,
)

# what each refusal of the runs manager is, in HTTP
STATUS_OF = {
    runs_module.Refused: 403,
    runs_module.NoSuchRun: 404,
    runs_module.Conflict: 409,
    runs_module.Invalid: 422,
    runs_module.TooSlow: 503,
}


class StartIn(BaseModel):
    """A run to start; left out, a setting is the recipe's (the tutorial's for softmax and cnn)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    model: str = Field(min_length=1, max_length=40)  # a registered model; resolve_config refuses any other
    recipe: str | None = Field(None, min_length=1, max_length=40)  # "" is no recipe: leave it out for the default
    steps: int | None = Field(None, ge=1, le=PAGE_MAX_STEPS)
    batch_size: int | None = Field(None, ge=1, le=PAGE_MAX_BATCH_SIZE)
    lr: float | None = Field(None, gt=0, le=10)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)


class ModelChoiceIn(BaseModel):
    """Exactly one of: a finished run's name, or a bundled model."""

    model_config = ConfigDict(extra="forbid", strict=True)
    run: str | None = None
    bundled: Literal["default", "cnn"] | None = None


class RunOut(BaseModel):
    name: str
    model: str | None
    recipe: str | None
    steps: int | None  # the run's planned steps
    step: int  # steps done so far
    status: Literal["running", "stopping", "finished", "stopped", "failed", "damaged"]
    resumable: bool
    validation_accuracy: float | None  # the latest measured
    test_accuracy: float | None  # once finished
    detail: str | None = None  # why a run failed or is damaged, or why its last resume failed


class MistakeOut(BaseModel):
    index: int  # in the MNIST test set
    label: int
    predicted: int
    confidence: float
    image: str  # 28x28 PNG data URL


class SummaryOut(BaseModel):
    test_accuracy: float
    errors: int
    images: int
    confusion_matrix: list[list[int]]  # counts[true digit][predicted digit]
    mistakes: list[MistakeOut]  # the most confident wrong answers, most confident first


class RunDetailOut(RunOut):
    config: dict
    summary: SummaryOut | None  # finished digit runs with a report only
    report: str | None  # URL of the HTML report (when there is a summary)
    summary_note: str | None = None  # why a finished run has no summary


class TrainingOut(BaseModel):
    enabled: bool
    reason: str | None  # why training is not offered, in one line
    recipes: dict[str, dict[str, dict]]  # model -> recipe -> {steps, batch_size, lr}; the first is the default
    active: str | None  # the run this server is training now
    selected: dict | None  # the model the pad uses, when chosen here: {"run": NAME} or {"bundled": NAME}


class ModelChoiceOut(BaseModel):
    selected: dict
    name: str
    test_accuracy: float | None


def log_events(records: list[dict], last_id: str) -> str:
    """Server-sent `log` events, one per record; the last carries the id a reconnecting page sends back."""
    events = [f"event: log\ndata: {finite_json(record)}\n\n" for record in records]
    events[-1] = f"id: {last_id}\n" + events[-1]
    return "".join(events)


def router(runs_dir: Path | None, host: str = "127.0.0.1", allow_training: bool = False, workers: int = 1) -> APIRouter:
    """The `/api/runs`, `/api/training` and `PUT /api/model` routes over `runs_dir` (None: no training)."""
    runs = Runs(runs_dir, host, allow_training, workers)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        runs.close()

    api = APIRouter(prefix="/api", tags=["training"], lifespan=lifespan)
    api.runs = runs  # the corrections' learning is one of these runs (web/corrections.py)
    errors = {
        403: {"description": "training is not offered by this server, or the request is from another site"},
        404: {"description": "no such run"},
        409: {"description": "conflicts with a run's state"},
        415: {"description": "a body that is not application/json"},
        422: {"description": "bad parameters"},
        503: {"description": "the runs folder did not answer in time"},
    }
    changes = [Depends(json_only)]

    @api.get("/training", response_model=TrainingOut)
    def training():
        """Whether this server offers training, the recipes to choose from, the run training now."""
        refused = runs.refused
        return TrainingOut(
            enabled=refused is None,
            reason=refused,
            recipes=recipes() if not refused else {},
            active=runs.active(),
            selected=runs.selected,
        )

    @api.get("/runs", response_model=list[RunOut], responses=errors)
    async def list_runs():
        """Every run in the runs folder, the most recently changed first; a damaged one says why in `detail`."""
        return await runs.listing()

    @api.post("/runs", response_model=RunOut, status_code=202, responses=errors, dependencies=changes)
    async def start(settings: StartIn):
        """Start training a model (one run at a time); follow it at /api/runs/{name}/events."""
        return await runs.start(**settings.model_dump())

    @api.post("/runs/{name}/stop", response_model=RunOut, status_code=202, responses=errors, dependencies=changes)
    async def stop(name: str):
        """Stop the run training now, as Ctrl-C does: it saves a checkpoint and can be resumed."""
        return await runs.stop(name)

    @api.post("/runs/{name}/resume", response_model=RunOut, status_code=202, responses=errors, dependencies=changes)
    async def resume(name: str):
        """Continue a stopped run from its checkpoint."""
        return await runs.resume(name)

    @api.get("/runs/{name}", response_model=RunDetailOut, responses=errors)
    async def detail(name: str):
        """A run's status and config; once finished, its test summary and report link. The summary comes
        from the run's report, which a server that offers training makes once, in a child process."""
        run = await runs.run(name)
        try:
            config = await runs.read(rundir.read_json_if_any, runs.runs_dir / name / rundir.CONFIG_FILE)
        except ModelError:
            config = {}  # the run is listed damaged, saying why
        summary, note = (await runs.summary(name)) if run["status"] == "finished" else (None, None)
        return RunDetailOut(
            **run,
            config=config,
            summary=summary,
            summary_note=note,
            report=f"/api/runs/{name}/report" if summary is not None else None,
        )

    @api.get("/runs/{name}/events", responses={**errors, 200: {"content": {"text/event-stream": {}}}})
    async def events(name: str, request: Request):
        """Server-sent events of the run's log: `log` (each record), `progress`, `reset` and `end`."""
        await runs.run(name)

        async def stream():
            async for event, event_id, data in runs.events(name, request.headers.get("last-event-id")):
                if event == "log":  # a batch of records (a whole log at once): formatted off the event loop
                    yield await anyio.to_thread.run_sync(log_events, data, event_id)
                else:
                    yield f"event: {event}\ndata: {finite_json(data)}\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @api.get("/runs/{name}/report", response_class=Response, responses=errors)
    async def report(name: str):
        """The finished run's HTML report, sandboxed: it runs no script and cannot act as the page."""
        page = await runs.report_page(name)
        return Response(page, media_type="text/html", headers={"Content-Security-Policy": REPORT_POLICY})

    @api.put("/model", response_model=ModelChoiceOut, responses=errors, dependencies=changes)
    async def choose_model(choice: ModelChoiceIn, request: Request):
        """Make a finished run, or a bundled model, the one the drawing pad and /api/predict use."""
        from digitrec.files import BUNDLED_DIR
        from digitrec.recognizer import Recognizer

        runs.check_allowed()
        if (choice.run is None) == (choice.bundled is None):
            raise runs_module.Invalid('give exactly one of {"run": NAME} or {"bundled": "default" | "cnn"}')
        if choice.run is not None:
            path, selected = await runs.finished_run(choice.run), {"run": choice.run}
        else:
            path, selected = (
                (None if choice.bundled == "default" else BUNDLED_DIR / choice.bundled),
                {"bundled": choice.bundled},
            )
        try:
            recognizer = await anyio.to_thread.run_sync(Recognizer.load, path, 1)
        except ModelError as problem:  # e.g. a number reader's run: not a digit model
            raise runs_module.Invalid(str(problem)) from None
        request.app.state.recognizer = recognizer  # the number reader (app.state.reader) stays as it was
        runs.selected = selected
        return ModelChoiceOut(
            selected=selected,
            name=recognizer.info["name"],
            test_accuracy=recognizer.info["metrics"].get("test_accuracy"),
        )

    return api
