"""Training from the page: the runs folder's list, one child `digitrec train` at a time, its live log as
server-sent events, a finished run's test summary and report, and choosing the model the drawing pad uses.

Owns no training: a run is an ordinary `python -m digitrec train ... --out RUNS/NAME` process (the one
training loop in train.py), so the page and the API stay responsive while it trains, and its folder holds
the same files a command-line run writes. Stop is Ctrl-C's SIGINT (the child checkpoints and exits 130);
resume is `digitrec train --resume RUNS/NAME`. A run's status is read from its files, plus whether this
server's child is training it:

    running    this server's child is training it (stopping: asked to stop, checkpointing)
    finished   weights.safetensors and metrics.json exist
    stopped    a checkpoint exists and nothing trains it: resumable
    failed     no checkpoint and no result (it ended before its first checkpoint): start it again

A server killed mid-run takes its child down with it on Linux (the child gets SIGTERM when the server
dies, so it checkpoints and exits as on Ctrl-C): the restarted server shows the run stopped and resumable.
Page runs also checkpoint every tenth of their steps, so even a child killed outright loses at most that.
Training is offered on a loopback address only (unless allowed), with torch, and in a single server
process: the child, its stop and the chosen model live in one process's memory.
"""

import asyncio
import contextlib
import ctypes
import importlib.util
import ipaddress
import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

import anyio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from digitrec import rundir
from digitrec.errors import ModelError

INSTALL_TRAINING = "pip install 'digitrec[train]'"
PAGE_MAX_STEPS = 200_000  # ten times the longest recipe (cnn's 20,000); more is a typo, not a plan
MAX_BATCH_SIZE = 8192
LOG_EVERY = 50  # steps between log records of page runs: the chart gains a point at least this often
POINTS_PER_RUN = 10  # validation evaluations and checkpoints per page run
POLL_SECONDS = 0.2  # how often the event stream looks for new log records
HEARTBEAT_SECONDS = 1.0  # the longest the page waits for a progress event
STOP_WAIT_SECONDS = 60  # how long a closing server waits for its child to checkpoint
MISTAKES_SHOWN = 12
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PR_SET_PDEATHSIG = 1  # Linux prctl option: the signal a process gets when its parent dies


class StartIn(BaseModel):
    """A run to start; left out, a setting is the recipe's (the tutorial's for softmax and cnn)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    model: str = Field(max_length=40)  # a registered model; resolve_config refuses any other
    recipe: str | None = Field(None, max_length=40)
    steps: int | None = Field(None, ge=1, le=PAGE_MAX_STEPS)
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH_SIZE)
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
    status: Literal["running", "stopping", "finished", "stopped", "failed"]
    resumable: bool
    validation_accuracy: float | None  # the latest measured
    test_accuracy: float | None  # once finished
    detail: str | None = None  # why a run failed: the signal that killed it, or the last line it printed


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
    summary: SummaryOut | None  # finished runs only
    report: str | None  # URL of the HTML report (finished runs only)


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


# Run-folder reads go through digitrec.rundir; these map its answers to the page's terms.

PAGE_STATUS = {rundir.FINISHED: "finished", rundir.RESUMABLE: "stopped"}  # any other: "failed"


def status_from_files(run_dir: Path) -> str:
    """The status of a run no child of this server is training (see the module's docstring)."""
    return PAGE_STATUS.get(rundir.status(run_dir), "failed")


def run_dirs(runs_dir: Path) -> list[Path]:
    """Every run directory in `runs_dir`, the most recently changed first."""
    runs = sorted(rundir.list_runs(runs_dir), key=lambda run: run["updated"] or 0, reverse=True)
    return [Path(run["path"]) for run in runs]


# The runs manager.

def refusal(runs_dir: Path | None, host: str, allow_training: bool, workers: int) -> str | None:
    """Why a server at `host` with `workers` processes does not offer training; None when it does."""
    if runs_dir is None:
        return "This server was started without a runs folder."
    if not has_torch():
        return f"Training needs torch, which this install lacks: {INSTALL_TRAINING}"
    if workers > 1:
        return "Training from the page needs a single server process (digitrec serve --workers 1)."
    if not allow_training and not is_loopback(host):
        return "Training is off on a server others can reach (start it with --allow-training to offer it)."
    return None


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def stop_with_parent() -> None:  # runs in the child between fork and exec
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


try:
    libc = ctypes.CDLL("libc.so.6")  # loaded before any fork: the child only calls it
except OSError:
    libc = None


class Runs:
    """The runs folder and the one child process that trains in it.

    Without a runs folder or without torch (which reads checkpoints and models) there are no runs to show.
    """

    def __init__(self, runs_dir: Path | None, refused: str | None):
        self.runs_dir = runs_dir if runs_dir is not None and has_torch() else None
        self.refused = refused
        self.child: subprocess.Popen | None = None
        self.child_run: str | None = None
        self.stop_sent = False
        self.selected: dict | None = None
        self.summaries: dict[str, dict] = {}
        self.summary_lock = anyio.Lock()

    def check_allowed(self) -> None:
        if self.refused:
            raise HTTPException(403, self.refused)

    def active(self) -> str | None:
        """The run the child is training now (polling also reaps a child that ended)."""
        if self.child is not None and self.child.poll() is None:
            return self.child_run
        return None

    def run_dir(self, name: str) -> Path:
        if not NAME_PATTERN.fullmatch(name):
            raise HTTPException(422, f"{name!r} is not a run name (letters, digits, '.', '-' and '_')")
        if self.runs_dir is None:
            raise HTTPException(404, f"no run named {name!r}: {self.refused}")
        run_dir = self.runs_dir / name
        if not (run_dir / rundir.CONFIG_FILE).is_file() and name != self.active():
            raise HTTPException(404, f"no run named {name!r} in {self.runs_dir}")
        return run_dir

    def describe(self, name: str) -> RunOut:
        run_dir = self.runs_dir / name
        config = rundir.read_json_if_any(run_dir / rundir.CONFIG_FILE)
        metrics = rundir.read_json_if_any(run_dir / rundir.METRICS_FILE)
        records = rundir.read_log(run_dir)
        validated = [record["validation_accuracy"] for record in records if "validation_accuracy" in record]
        checkpoints = [entry["step"] for entry in rundir.checkpoint_entries(run_dir)]
        if name == self.active():
            status = "stopping" if self.stop_sent else "running"
        else:
            status = status_from_files(run_dir)
        step = metrics.get("steps") or max([*checkpoints, *(record["step"] for record in records[-1:])], default=0)
        return RunOut(
            name=name, model=config.get("model"), recipe=config.get("recipe"), steps=config.get("steps"), step=step,
            status=status, resumable=status == "stopped", validation_accuracy=validated[-1] if validated else None,
            test_accuracy=metrics.get("test_accuracy"), detail=self.failure(name) if status == "failed" else None,
        )

    def failure(self, name: str) -> str | None:
        """Why run `name` failed: killed by a signal, if this server's child was, else its last output line."""
        code = self.child.returncode if self.child is not None and name == self.child_run else None
        if code is not None and code < 0:
            return f"its process was killed ({signal.Signals(-code).name})"
        return rundir.last_output_line(self.runs_dir / name)

    def listing(self) -> list[RunOut]:
        if self.runs_dir is None:
            return []
        names = [path.name for path in run_dirs(self.runs_dir)]
        if (active := self.active()) and active not in names:
            names.insert(0, active)  # started, not yet written its config
        return [self.describe(name) for name in names]

    @staticmethod
    def resolve(settings: StartIn):
        """The run's `TrainConfig`: the recipe with the given settings (imports torch: call it in a thread)."""
        from digitrec import models, train
        from digitrec.errors import ConfigError

        if settings.model in models.REGISTRY and models.spec(settings.model).task != "digits":
            raise HTTPException(422, f"model {settings.model!r} reads whole numbers: train it with digitrec train "
                                     f"--model {settings.model}; the page trains digit models")
        try:
            return train.resolve_config(settings.model, settings.recipe, steps=settings.steps,
                                        batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed)
        except ConfigError as problem:
            raise HTTPException(422, str(problem)) from None

    def start(self, config) -> RunOut:
        """Train `config` (a resolved `TrainConfig`) in a new run folder, logging every 50 steps or more
        often, and evaluating on validation digits and checkpointing every tenth of the run."""
        self.refuse_if_busy()
        log_every = min(config.log_every, LOG_EVERY)
        every = log_every * max(1, round(config.steps / POINTS_PER_RUN / log_every))  # a multiple of log_every
        name = self.new_name(f"{config.model}-{config.recipe}")
        flags = {"model": config.model, "recipe": config.recipe, "steps": config.steps, "batch-size": config.batch_size,
                 "lr": config.lr, "seed": config.seed, "log-every": log_every, "eval-every": every,
                 "checkpoint-every": every, "out": self.runs_dir / name}
        self.launch(name, [part for flag, value in flags.items() for part in (f"--{flag}", str(value))])
        return self.describe(name)

    def resume(self, name: str) -> RunOut:
        self.check_allowed()
        run_dir = self.run_dir(name)
        self.refuse_if_busy()
        if (status := self.describe(name).status) != "stopped":
            raise HTTPException(409, f"run {name} is {status}: only a stopped run (one with a checkpoint) resumes")
        self.launch(name, ["--resume", str(run_dir)])
        return self.describe(name)

    def stop(self, name: str) -> RunOut:
        self.check_allowed()
        self.run_dir(name)
        if name != self.active():
            raise HTTPException(409, f"run {name} is not training")
        if not self.stop_sent:  # a second SIGINT would abandon the run without its checkpoint
            self.child.send_signal(signal.SIGINT)
            self.stop_sent = True
        return self.describe(name)

    def refuse_if_busy(self) -> None:
        if (active := self.active()) is not None:
            raise HTTPException(409, f"run {active} is training; one training at a time: stop it or wait for it to finish")

    def new_name(self, prefix: str) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name, number = f"{prefix}-{stamp}", 1
        while (self.runs_dir / name).exists():
            number += 1
            name = f"{prefix}-{stamp}-{number}"
        return name

    def launch(self, name: str, arguments: list[str], command: tuple[str, ...] = ("train",)) -> None:
        """Start `digitrec train ARGUMENTS --quiet` (or another `command` that writes a run, e.g. `teach learn`)
        for run `name`, its output into the run folder.

        Called on the event loop's thread (async routes): the child's "parent died" signal fires when the
        thread that started it ends, and that thread lives as long as the server.
        """
        run_dir = self.runs_dir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / rundir.OUTPUT_FILE).open("ab") as output:
            self.child = subprocess.Popen(
                [sys.executable, "-m", "digitrec", *command, *arguments, "--quiet"],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the server's terminal reaches the server, which stops the child once
                preexec_fn=stop_with_parent if libc is not None and sys.platform == "linux" else None,
            )
        self.child_run, self.stop_sent = name, False

    def close(self) -> None:
        """Stop the child as Ctrl-C would, and wait for its checkpoint: for a server shutting down."""
        if self.active() is None:
            return
        if not self.stop_sent:
            self.child.send_signal(signal.SIGTERM)  # as SIGINT, but a repeat never abandons the run
        try:
            self.child.wait(STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()

    def progress(self, name: str, records: list[dict]) -> dict:
        """The run's status, and its speed and time left from its recent log records (training seconds)."""
        run = self.describe(name)
        rate = seconds_left = None
        if len(records) >= 2:
            first, last = records[max(0, len(records) - 6)], records[-1]
            if last["seconds"] > first["seconds"]:
                rate = (last["step"] - first["step"]) / (last["seconds"] - first["seconds"])
                seconds_left = max(0, (run.steps or 0) - last["step"]) / rate if rate else None
        return {**run.model_dump(), "steps_per_second": rate, "seconds_left": seconds_left}

    async def events(self, name: str, last_event_id: str | None):
        """Server-sent events: the log so far, then each new record (`log`), a `progress` event on every
        change and at least every second, `reset` when a resume replaced the log, and `end` when the run is
        no longer training. A reconnecting page sends the last id it saw and continues from there."""
        run_dir = self.runs_dir / name
        position = rundir.LogPosition.parse(last_event_id)
        recent: list[dict] = []
        last_progress, sent_at = None, 0.0
        while True:
            ended = self.describe(name).status not in ("running", "stopping")  # before reading: all it wrote is read
            records, position, replaced = rundir.read_log_since(run_dir, position)
            if replaced:
                recent = []
                yield "event: reset\ndata: {}\n\n"
            for record in records:
                yield f"id: {position}\nevent: log\ndata: {json.dumps(record)}\n\n"
            recent = (recent + records)[-10:]
            progress = self.progress(name, recent)
            if ended:
                yield f"event: end\ndata: {json.dumps(progress)}\n\n"
                return
            if progress != last_progress or time.monotonic() - sent_at >= HEARTBEAT_SECONDS:
                yield f"event: progress\ndata: {json.dumps(progress)}\n\n"
                last_progress, sent_at = progress, time.monotonic()
            await asyncio.sleep(POLL_SECONDS)

    def summary(self, name: str) -> dict | None:
        """A finished run's test accuracy, confusion matrix and most confident mistakes (with their images),
        from its report; the report is written first (as `digitrec evaluate RUN --report` does) if missing."""
        if name in self.summaries:
            return self.summaries[name]
        from digitrec import checkpoint, data, evaluate, models, report
        from digitrec.web.app import png_data_url

        run_dir = self.runs_dir / name
        model = rundir.read_json_if_any(run_dir / rundir.CONFIG_FILE).get("model")
        if model not in models.REGISTRY or models.spec(model).task != "digits":
            return None  # a number reader (trained from the command line) has no digit report
        test = data.load().test
        if not ((run_dir / rundir.REPORT_JSON_FILE).is_file() and (run_dir / rundir.REPORT_HTML_FILE).is_file()):
            loaded = checkpoint.load(run_dir)
            logits = evaluate.model_logits(loaded.model, test)
            report.write_report(run_dir, loaded.config, loaded.metrics, rundir.read_log(run_dir), logits, test.images, test.labels)
        written = rundir.read_json_if_any(run_dir / rundir.REPORT_JSON_FILE)
        mistakes = [{**entry, "image": png_data_url(test.images[entry["index"], 0].numpy())}
                    for entry in written["mistakes"][:MISTAKES_SHOWN]]
        self.summaries[name] = {key: written[key] for key in ("test_accuracy", "errors", "images", "confusion_matrix")}
        self.summaries[name]["mistakes"] = mistakes
        return self.summaries[name]

    async def detail(self, name: str) -> RunDetailOut:
        run = self.describe(name)
        summary = None
        if run.status == "finished":
            async with self.summary_lock:  # computed once: evaluating 10,000 digits and drawing the report
                summary = await anyio.to_thread.run_sync(self.summary, name)
        return RunDetailOut(**run.model_dump(), config=rundir.read_json_if_any(self.runs_dir / name / rundir.CONFIG_FILE), summary=summary,
                            report=f"/api/runs/{name}/report" if run.status == "finished" else None)


def recipes() -> dict[str, dict[str, dict]]:
    """Each digit model's recipes, its default first, with the settings the page shows. (The number reader
    trains from the command line: the page shows and uses digit models.)"""
    from digitrec import models, train

    chosen = {}
    for model, spec in models.REGISTRY.items():
        if spec.task != "digits":
            continue
        ordered = [spec.default_recipe, *(name for name in spec.recipes
                                          if name not in (spec.default_recipe, models.PERSONAL_RECIPE))]
        configs = {name: train.resolve_config(model, name) for name in ordered}
        chosen[model] = {name: {"steps": config.steps, "batch_size": config.batch_size, "lr": config.lr}
                         for name, config in configs.items()}
    return chosen


def validated(model: type[BaseModel], document: object) -> BaseModel:
    """`document` as `model`, or a 422 whose detail names each bad field in one line."""
    try:
        return model.model_validate(document)
    except ValidationError as problem:
        details = [f"{'.'.join(map(str, error['loc'])) or 'body'}: {error['msg']}" for error in problem.errors()]
        raise HTTPException(422, "; ".join(details)) from None


async def json_body(request: Request) -> object:
    try:
        return json.loads(await request.body())
    except ValueError:
        raise HTTPException(422, "the body is not valid JSON") from None


def body_schema(model: type[BaseModel]) -> dict:
    return {"requestBody": {"content": {"application/json": {"schema": model.model_json_schema()}}, "required": True}}


def router(runs_dir: Path | None, host: str = "127.0.0.1", allow_training: bool = False, workers: int = 1) -> APIRouter:
    """The `/api/runs`, `/api/training` and `PUT /api/model` routes over `runs_dir` (None: no training)."""
    runs = Runs(runs_dir, refusal(runs_dir, host, allow_training, workers))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        runs.close()

    api = APIRouter(prefix="/api", tags=["training"], lifespan=lifespan)
    api.runs = runs  # the corrections routes learn through the same runs (web/corrections.py)
    errors = {403: {"description": "training is not offered by this server"}, 404: {"description": "no such run"},
              409: {"description": "conflicts with the run training now"}, 422: {"description": "bad parameters"}}

    @api.get("/training", response_model=TrainingOut)
    def training():
        """Whether this server offers training, the recipes to choose from, the run training now."""
        return TrainingOut(enabled=runs.refused is None, reason=runs.refused, recipes=recipes() if not runs.refused else {}, active=runs.active(),
                           selected=runs.selected)

    @api.get("/runs", response_model=list[RunOut])
    def list_runs():
        """Every run in the runs folder, the most recently changed first."""
        return runs.listing()

    @api.post("/runs", response_model=RunOut, status_code=202, responses=errors, openapi_extra=body_schema(StartIn))
    async def start(request: Request):
        """Start training a model (one run at a time); follow it at /api/runs/{name}/events."""
        settings = validated(StartIn, await json_body(request))
        runs.check_allowed()
        config = await anyio.to_thread.run_sync(runs.resolve, settings)
        return runs.start(config)  # here, on the event loop's thread: see Runs.launch

    @api.post("/runs/{name}/stop", response_model=RunOut, status_code=202, responses=errors)
    async def stop(name: str):
        """Stop the run training now, as Ctrl-C does: it saves a checkpoint and can be resumed."""
        return runs.stop(name)

    @api.post("/runs/{name}/resume", response_model=RunOut, status_code=202, responses=errors)
    async def resume(name: str):
        """Continue a stopped run from its checkpoint."""
        return runs.resume(name)

    @api.get("/runs/{name}", response_model=RunDetailOut, responses=errors)
    async def detail(name: str):
        """A run's status and config; once finished, its test summary (computed once) and report link."""
        runs.run_dir(name)
        return await runs.detail(name)

    @api.get("/runs/{name}/events", responses={**errors, 200: {"content": {"text/event-stream": {}}}})
    async def events(name: str, request: Request):
        """Server-sent events of the run's log: `log` (each record), `progress`, `reset` and `end`."""
        runs.run_dir(name)
        return StreamingResponse(runs.events(name, request.headers.get("last-event-id")), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.get("/runs/{name}/report", response_class=FileResponse, responses=errors)
    async def report(name: str):
        """The finished run's HTML report (written on first request, as `digitrec evaluate RUN --report`)."""
        run_dir = runs.run_dir(name)
        if runs.describe(name).status != "finished":
            raise HTTPException(409, f"run {name} has not finished: its report comes at the end")
        async with runs.summary_lock:
            await anyio.to_thread.run_sync(runs.summary, name)
        return FileResponse(run_dir / rundir.REPORT_HTML_FILE, media_type="text/html")

    @api.put("/model", response_model=ModelChoiceOut, responses=errors, openapi_extra=body_schema(ModelChoiceIn))
    async def choose_model(request: Request):
        """Make a finished run, or a bundled model, the one the drawing pad and /api/predict use."""
        from digitrec.files import BUNDLED_DIR
        from digitrec.recognizer import Recognizer

        runs.check_allowed()
        choice = validated(ModelChoiceIn, await json_body(request))
        if (choice.run is None) == (choice.bundled is None):
            raise HTTPException(422, 'give exactly one of {"run": NAME} or {"bundled": "default" | "cnn"}')
        if choice.run is not None:
            runs.run_dir(choice.run)
            if (status := runs.describe(choice.run).status) != "finished":
                raise HTTPException(409, f"run {choice.run} is {status}: only a finished run can be used")
            path, selected = runs.runs_dir / choice.run, {"run": choice.run}
        else:
            path, selected = (None if choice.bundled == "default" else BUNDLED_DIR / choice.bundled), {"bundled": choice.bundled}
        try:
            recognizer = await anyio.to_thread.run_sync(Recognizer.load, path, 1)
        except ModelError as problem:  # e.g. a number reader's run: not a digit model
            raise HTTPException(422, str(problem)) from None
        request.app.state.recognizer = recognizer
        runs.selected = selected
        return ModelChoiceOut(selected=selected, name=recognizer.info["name"],
                              test_accuracy=recognizer.info["metrics"].get("test_accuracy"))

    return api
