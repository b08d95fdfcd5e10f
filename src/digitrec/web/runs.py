"""The runs folder and the one child `digitrec train` that trains in it: what the Train panel shows and starts.
No HTTP here: the routes (web/training.py) turn this module's errors into status codes.

Owns no training: a run is an ordinary `python -m digitrec train ... --out RUNS/NAME` process (the one
training loop in train.py), so the page and the API stay responsive while it trains, and its folder holds
the same files a command-line run writes. Stop is SIGTERM, which the child handles as Ctrl-C (it
checkpoints and exits 130; one still starting ends quietly, before it began: nothing to save); resume is `digitrec train --resume RUNS/NAME`. A run's status is read from its files (`rundir.describe`,
each file once, in a worker thread with a timeout), plus whether this server's child is training it:

    running    this server's child is training it (stopping: asked to stop, checkpointing)
    finished   weights.safetensors and metrics.json exist
    stopped    a checkpoint exists and nothing trains it: resumable (`detail`: why its last resume failed)
    failed     no checkpoint and no result (it ended before its first checkpoint): start it again
    damaged    its files cannot be read as a run's (`detail` says which and why); the others stay usable

A server killed mid-run takes its child down with it on Linux (the child gets SIGTERM when the server
dies, so it checkpoints and exits as on Ctrl-C): the restarted server shows the run stopped and resumable.
Page runs also checkpoint every tenth of their steps, so even a child killed outright loses at most that.
Training is offered on a loopback address only (unless allowed), with torch, in a single server process,
and with a runs folder it can write: the child, its stop and the chosen model live in one process's memory.

A finished digit run's summary (test accuracy, confusion matrix, most confident mistakes) comes from its
`report.json`. Where the run has none, a server that offers training makes it once in a child
(`digitrec evaluate RUN --report`), so the server itself never evaluates a model; a server that offers no
training serves only what the run folder holds.
"""

import ctypes
import importlib.util
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import anyio

from digitrec import rundir
from digitrec.errors import DigitrecError, ModelError

INSTALL_TRAINING = "pip install 'digitrec[train]'"
PAGE_MAX_STEPS = 200_000  # ten times the longest recipe (cnn's 20,000); more from the page is a typo, not a plan
PAGE_MAX_BATCH_SIZE = 8192
LOG_EVERY = 50  # steps between log records of page runs: the chart gains a point at least this often
POINTS_PER_RUN = 10  # validation evaluations and checkpoints per page run
POLL_SECONDS = 0.2  # how often the event stream looks for new log records
HEARTBEAT_SECONDS = 1.0  # the longest the page waits for a progress event
STOP_WAIT_SECONDS = 60  # how long a closing server waits for its child to checkpoint
READ_SECONDS = 10  # the longest a read of a run folder may take before the request gets its 503
READING_THREADS = 4  # run-folder reads at once: a stuck file system holds these, never the event loop
REPORT_SECONDS = 600  # the longest `digitrec evaluate RUN --report` may take for the page
MISTAKES_SHOWN = 12
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PR_SET_PDEATHSIG = 1  # Linux prctl option: the signal a process gets when its parent dies
NORMAL_EXITS = (0, 130, -signal.SIGINT, -signal.SIGTERM)  # finished, or stopped with its checkpoint
PAGE_STATUS = {
    rundir.FINISHED: "finished",
    rundir.RESUMABLE: "stopped",
    rundir.STARTED: "failed",
    rundir.DAMAGED: "damaged",
}
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"


class RunsError(DigitrecError):
    """Base of what the runs manager refuses; web/training.py gives each kind its status code."""


class Refused(RunsError):
    """Training is not offered by this server (or its runs folder cannot be written)."""


class NoSuchRun(RunsError):
    pass


class Conflict(RunsError):
    """The request conflicts with a run's state (training now, not finished, not stopped)."""


class Invalid(RunsError):
    """A bad run name or setting."""


class TooSlow(RunsError):
    """Reading the runs folder took longer than READ_SECONDS (a stuck file system)."""


# ---- whether this server trains


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
    return unwritable(runs_dir)


def unwritable(runs_dir: Path) -> str | None:
    """Why new runs cannot be written into `runs_dir` (created on the first run if missing); None if they can."""
    existing = runs_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"The runs folder {runs_dir} cannot be made: {existing} is not a folder."
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"The runs folder {runs_dir} cannot be written (no permission for {existing}): training needs one it can write."
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


# ---- what the page shows of a run


def page_run(described: dict) -> dict:
    """`rundir.describe`'s answer in the page's terms (RunOut in web/training.py)."""
    status = PAGE_STATUS.get(described["status"], "failed")
    return {
        "name": described["name"],
        "model": described["model"],
        "recipe": described["recipe"],
        "steps": described["total_steps"],
        "step": described["steps"] or 0,
        "status": status,
        "resumable": status == "stopped",
        "validation_accuracy": described["validation_accuracy"],
        "test_accuracy": described["test_accuracy"],
        "detail": described["problem"],
    }


def digit_model(name: str | None) -> bool:
    from digitrec import models, tasks

    return name in models.REGISTRY and tasks.of(name).single_digits


def checked_summary(report: dict, where: str) -> dict:
    """The parts of a run's `report.json` the page shows, checked: a damaged one is a `ModelError`."""
    rundir.check_fields(
        where,
        report,
        {"test_accuracy": rundir.NUMBER, "errors": int, "images": int},
        required=("test_accuracy", "errors", "images", "confusion_matrix", "mistakes"),
    )
    confusion, mistakes = report["confusion_matrix"], report["mistakes"]
    if not (
        isinstance(confusion, list)
        and len(confusion) == 10
        and all(
            isinstance(row, list) and len(row) == 10 and all(type(count) is int for count in row) for row in confusion
        )
    ):
        raise ModelError(f"{where}: confusion_matrix is not 10 rows of 10 counts")
    if not isinstance(mistakes, list):
        raise ModelError(f"{where}: mistakes is not a list")
    shown = []
    for mistake in mistakes[:MISTAKES_SHOWN]:
        if not isinstance(mistake, dict):
            raise ModelError(f"{where}: a mistake is not an object")
        rundir.check_fields(
            f"{where}: a mistake",
            mistake,
            {"index": int, "label": int, "predicted": int, "confidence": rundir.NUMBER},
            required=("index", "label", "predicted", "confidence"),
        )
        if not 0 <= mistake["index"] < 10_000:
            raise ModelError(f"{where}: a mistake's index {mistake['index']} is not one of the 10,000 test digits")
        shown.append({key: mistake[key] for key in ("index", "label", "predicted", "confidence")})
    return {
        "test_accuracy": report["test_accuracy"],
        "errors": report["errors"],
        "images": report["images"],
        "confusion_matrix": confusion,
        "mistakes": shown,
    }


def test_digit_pictures(indices: list[int]) -> list[str]:
    """The MNIST test digits at `indices` as 28x28 PNG data URLs (the test images only: 8 MB, not all of MNIST)."""
    from digitrec import data
    from digitrec.web.http import png_data_url

    images = data.verified_array(data.locate() / TEST_IMAGES)
    return [png_data_url(images[index].astype("float32") / 255) for index in indices]


# ---- the manager


class Runs:
    """The runs folder and the one child process that trains in it.

    Without a runs folder or without torch (which reads checkpoints and models) there are no runs to show.
    """

    def __init__(self, runs_dir: Path | None, host: str = "127.0.0.1", allow_training: bool = False, workers: int = 1):
        self.runs_dir = runs_dir if runs_dir is not None and has_torch() else None
        self.settings = (runs_dir, host, allow_training, workers)
        self.child: subprocess.Popen | None = None
        self.child_run: str | None = None
        self.stop_sent = False
        self.exits: dict[str, int] = {}  # the exit code of this server's last child for each run
        self.selected: dict | None = None
        self.summaries: dict[str, dict] = {}
        self.summary_lock = anyio.Lock()
        self.readers = anyio.CapacityLimiter(READING_THREADS)

    @property
    def refused(self) -> str | None:
        """Why this server does not train now (asked each time: the runs folder may stop being writable)."""
        return refusal(*self.settings)

    def check_allowed(self) -> None:
        if reason := self.refused:
            raise Refused(reason)

    async def read(self, function, *args):
        """`function(*args)` in a worker thread, given up after READ_SECONDS: a run folder on a stuck file
        system holds a thread, never the event loop."""
        try:
            with anyio.fail_after(READ_SECONDS):
                return await anyio.to_thread.run_sync(function, *args, limiter=self.readers, abandon_on_cancel=True)
        except TimeoutError:
            raise TooSlow(f"reading the runs folder took over {READ_SECONDS} s") from None

    def active(self) -> str | None:
        """The run the child is training now (polling also reaps a child that ended)."""
        if self.child is not None and (code := self.child.poll()) is None:
            return self.child_run
        if self.child is not None and self.child_run is not None:
            self.exits[self.child_run] = code
        return None

    def check_name(self, name: str) -> None:
        if not NAME_PATTERN.fullmatch(name):
            raise Invalid(f"{name!r} is not a run name (letters, digits, '.', '-' and '_')")
        if self.runs_dir is None:
            raise NoSuchRun(f"no run named {name!r}: {self.refused}")

    def find(self, name: str) -> dict:
        """Run `name` as the page shows it (reads its files: call it in a thread, as `run` does)."""
        self.check_name(name)
        described = rundir.describe_inside(self.runs_dir, name)
        if described["status"] in (rundir.MISSING, rundir.EMPTY, rundir.NOT_A_RUN) and name != self.active():
            raise NoSuchRun(f"no run named {name!r} in {self.runs_dir}")
        return self.shown(described)

    async def run(self, name: str) -> dict:
        return await self.read(self.find, name)

    def shown(self, described: dict) -> dict:
        """A described run with what this server knows: its child training it, how its child ended."""
        run = page_run(described)
        name = run["name"]
        if name == self.active():
            run["status"] = "stopping" if self.stop_sent else "running"
            run["resumable"], run["detail"] = False, None
        elif run["status"] == "failed":
            run["detail"] = self.failure(name)
        elif run["status"] == "stopped" and self.exits.get(name, 0) not in NORMAL_EXITS:
            run["detail"] = f"its last resume failed: {rundir.last_output_line(self.runs_dir / name) or 'no output'}"
        return run

    def failure(self, name: str) -> str | None:
        """Why run `name` failed: how this server's child for it ended, else its last output line."""
        code = self.exits.get(name)
        if code is not None and code < 0 and -code not in (signal.SIGINT, signal.SIGTERM):
            return f"its process was killed ({signal.Signals(-code).name})"
        if code in NORMAL_EXITS[1:] and not (self.runs_dir / name / rundir.CONFIG_FILE).exists():
            return "stopped before it began training"
        return rundir.last_output_line(self.runs_dir / name)

    def list_now(self) -> list[dict]:
        if self.runs_dir is None:
            return []
        described = sorted(rundir.list_runs(self.runs_dir), key=lambda run: run["updated"] or 0, reverse=True)
        runs = [self.shown(run) for run in described]
        if (active := self.active()) and active not in {run["name"] for run in runs}:
            runs.insert(0, self.find(active))  # started, not yet written anything
        return runs

    async def listing(self) -> list[dict]:
        """Every run in the runs folder, the most recently changed first; a damaged one says why."""
        return await self.read(self.list_now)

    # ---- training

    @staticmethod
    def resolve(model: str, recipe: str | None, **settings):
        """The run's `TrainConfig`: the recipe with the given settings (imports torch: call it in a thread)."""
        from digitrec import models, tasks, train
        from digitrec.errors import ConfigError

        if model in models.REGISTRY and not tasks.of(model).single_digits:
            raise Invalid(
                f"model {model!r} reads whole numbers: train it with digitrec train "
                f"--model {model}; the page trains digit models"
            )
        try:
            return train.resolve_config(model, recipe, **settings)
        except ConfigError as problem:
            raise Invalid(str(problem)) from None

    async def start(self, model: str, recipe: str | None = None, **settings) -> dict:
        """Train a new run (one at a time), logging every 50 steps or more often, and evaluating on
        validation digits and checkpointing every tenth of the run."""
        self.check_allowed()
        self.refuse_if_busy()
        config = await anyio.to_thread.run_sync(lambda: self.resolve(model, recipe, **settings))
        self.refuse_if_busy()  # again, on the event loop's thread: a second start may have come meanwhile
        log_every = min(config.log_every, LOG_EVERY)
        every = log_every * max(1, round(config.steps / POINTS_PER_RUN / log_every))  # a multiple of log_every
        name = self.new_name(f"{config.model}-{config.recipe}")
        flags = {
            "model": config.model,
            "recipe": config.recipe,
            "steps": config.steps,
            "batch-size": config.batch_size,
            "lr": config.lr,
            "seed": config.seed,
            "log-every": log_every,
            "eval-every": every,
            "checkpoint-every": every,
            "out": self.runs_dir / name,
        }
        self.launch(name, [part for flag, value in flags.items() for part in (f"--{flag}", str(value))])
        return await self.run(name)

    async def resume(self, name: str) -> dict:
        self.check_allowed()
        run = await self.run(name)
        self.refuse_if_busy()
        if run["status"] != "stopped":
            raise Conflict(f"run {name} is {run['status']}: only a stopped run (one with a checkpoint) resumes")
        self.launch(name, ["--resume", str(self.runs_dir / name)])
        return await self.run(name)

    async def stop(self, name: str) -> dict:
        self.check_allowed()
        self.check_name(name)
        if name != self.active():
            await self.run(name)  # a 404 for no such run
            raise Conflict(f"run {name} is not training")
        if not self.stop_sent:
            # SIGTERM, not Ctrl-C's SIGINT: the child handles both alike once training (it checkpoints and exits
            # 130), but a SIGINT while Python is still starting ends it with a traceback, a SIGTERM quietly
            self.child.send_signal(signal.SIGTERM)
            self.stop_sent = True
        return await self.run(name)

    def refuse_if_busy(self) -> None:
        if (active := self.active()) is not None:
            raise Conflict(f"run {active} is training; one training at a time: stop it or wait for it to finish")

    def new_name(self, prefix: str) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name, number = f"{prefix}-{stamp}", 1
        while (self.runs_dir / name).exists():
            number += 1
            name = f"{prefix}-{stamp}-{number}"
        return name

    def launch(self, name: str, arguments: list[str], command: tuple[str, ...] = ("train",)) -> None:
        """Start `digitrec train ARGUMENTS --quiet` (or another `command` that writes a run: `teach learn`)
        for run `name`, its output into the run folder.

        Called on the event loop's thread (async routes): the child's "parent died" signal fires when the
        thread that started it ends, and that thread lives as long as the server.
        """
        run_dir = self.runs_dir / name
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            output = (run_dir / rundir.OUTPUT_FILE).open("ab")
        except OSError as error:
            raise Refused(
                f"cannot write the run folder {run_dir} ({error.strerror}): training needs a runs folder it can write"
            ) from None
        with output:
            self.child = subprocess.Popen(
                [sys.executable, "-m", "digitrec", *command, *arguments, "--quiet"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the server's terminal reaches the server, which stops the child once
                preexec_fn=stop_with_parent if libc is not None and sys.platform == "linux" else None,
            )
        self.child_run, self.stop_sent = name, False
        self.exits.pop(name, None)

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

    # ---- following a run

    @staticmethod
    def progress(run: dict, records: list[dict]) -> dict:
        """The run, and its speed and time left from its recent log records (training seconds)."""
        rate = seconds_left = None
        timed = [record for record in records if record.get("seconds") is not None]
        if len(timed) >= 2:
            first, last = timed[max(0, len(timed) - 6)], timed[-1]
            if last["seconds"] > first["seconds"]:
                rate = (last["step"] - first["step"]) / (last["seconds"] - first["seconds"])
                seconds_left = max(0, (run["steps"] or 0) - last["step"]) / rate if rate else None
        return {**run, "steps_per_second": rate, "seconds_left": seconds_left}

    async def events(self, name: str, last_event_id: str | None):
        """(event, id, data) of the run's log: the log so far, then the new records (`log`, a list of records
        read at once, all but the last without an id: each is one event to send), a `progress`
        event on every change and at least every second, `reset` when a resume replaced the log, and `end`
        when the run is no longer training. A reconnecting page gives the last id it saw and continues from
        there. Every data is finite JSON (a NaN in the log is null). A log that cannot be read ends the
        stream with the run shown damaged."""
        run_dir = self.runs_dir / name
        position = rundir.LogPosition.parse(last_event_id)
        run = await self.run(name)
        recent: list[dict] = []
        last_progress, sent_at = None, 0.0
        while True:
            ended = name != self.active()  # before reading: all it wrote is read
            try:
                records, position, replaced = await self.read(rundir.read_log_since, run_dir, position)
            except ModelError:
                records, replaced, ended = [], False, True
            if replaced:
                recent = []
                yield "reset", None, {}
            if records:
                yield "log", str(position), records  # a batch: each record is one `log` event
                validated = [
                    record["validation_accuracy"] for record in records if record.get("validation_accuracy") is not None
                ]
                run["validation_accuracy"] = validated[-1] if validated else run["validation_accuracy"]
                run["step"] = records[-1]["step"]
            recent = (recent + records)[-10:]
            if ended:
                yield "end", None, self.progress(await self.run(name), recent)
                return
            if run["steps"] is None:  # the child had not written its config yet when the stream began
                run = await self.run(name)
            run = {**run, "status": "stopping" if self.stop_sent else "running", "resumable": False}
            progress = self.progress(run, recent)
            if progress != last_progress or time.monotonic() - sent_at >= HEARTBEAT_SECONDS:
                yield "progress", None, progress
                last_progress, sent_at = progress, time.monotonic()
            await anyio.sleep(POLL_SECONDS)

    # ---- a finished run's summary and report

    def summary_now(self, name: str, may_evaluate: bool) -> tuple[dict | None, str | None]:
        """A finished digit run's summary, or None and why not. From its `report.json`, which only a server
        that trains makes, once, in a child (`digitrec evaluate RUN --report`) when the run has none."""
        if name in self.summaries:
            return self.summaries[name], None
        run = self.find(name)
        if run["status"] != "finished":
            return None, None
        if not digit_model(run["model"]):
            return None, f"model {run['model']!r} reads whole numbers: the page shows reports of digit models"
        run_dir = self.runs_dir / name
        if not os.path.lexists(run_dir / rundir.REPORT_JSON_FILE):
            if not may_evaluate:
                return None, (
                    "no report yet: this server does not evaluate runs (it offers no training); "
                    f"make one with: digitrec evaluate {name} --report"
                )
            self.make_report(run_dir)
        try:
            summary = checked_summary(
                rundir.read_json(run_dir / rundir.REPORT_JSON_FILE), str(run_dir / rundir.REPORT_JSON_FILE)
            )
        except ModelError as error:
            return None, str(error)
        pictures = test_digit_pictures([mistake["index"] for mistake in summary["mistakes"]])
        summary["mistakes"] = [{**mistake, "image": picture} for mistake, picture in zip(summary["mistakes"], pictures)]
        self.summaries[name] = summary
        return summary, None

    def make_report(self, run_dir: Path) -> None:
        """`digitrec evaluate RUN --report` in a child process: the 10,000 test digits are evaluated, and the
        figures drawn, in its memory, not the server's."""
        try:
            done = subprocess.run(
                [sys.executable, "-m", "digitrec", "evaluate", str(run_dir), "--report", "--json"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=REPORT_SECONDS,
            )
        except subprocess.TimeoutExpired:
            raise ModelError(f"{run_dir}: making its report took over {REPORT_SECONDS} s") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise ModelError(lines[-1] if lines else f"digitrec evaluate {run_dir} --report failed")

    async def summary(self, name: str) -> tuple[dict | None, str | None]:
        async with self.summary_lock:  # made once, whoever asks at the same time
            try:
                with anyio.fail_after(REPORT_SECONDS + READ_SECONDS):
                    return await anyio.to_thread.run_sync(
                        self.summary_now, name, self.refused is None, limiter=self.readers, abandon_on_cancel=True
                    )
            except TimeoutError:
                raise TooSlow(f"the report of run {name} took too long") from None
            except ModelError as error:
                return None, str(error)

    async def report_page(self, name: str) -> bytes:
        """The finished digit run's report.html (made as `summary` makes its report.json)."""
        run = await self.run(name)
        if run["status"] != "finished":
            raise Conflict(f"run {name} is {run['status']}: its report comes when it has finished")
        summary, why_not = await self.summary(name)
        if summary is None:
            raise Conflict(f"run {name} has no report: {why_not}")
        try:
            return await self.read(
                rundir.read_bytes, self.runs_dir / name / rundir.REPORT_HTML_FILE, rundir.MAX_REPORT_BYTES
            )
        except ModelError as error:
            raise Conflict(f"run {name} has no report: {error}") from None

    async def finished_run(self, name: str) -> Path:
        """The folder of finished run `name`, for use as the pad's model."""
        run = await self.run(name)
        if run["status"] != "finished":
            raise Conflict(f"run {name} is {run['status']}: only a finished run can be used")
        return self.runs_dir / name


def finite_json(value) -> str:
    """`value` as JSON, NaN and infinities as null (JSON has no NaN: a browser's JSON.parse refuses it)."""
    return json.dumps(rundir.finite(value), allow_nan=False)


def recipes() -> dict[str, dict[str, dict]]:
    """Each digit model's recipes, its default first, with the settings the page shows. (The number reader
    trains from the command line: the page shows and uses digit models.)"""
    from digitrec import models, tasks, train

    chosen = {}
    for model, spec in models.REGISTRY.items():
        if not tasks.named(spec.task).single_digits:
            continue
        ordered = [
            spec.default_recipe,
            *(
                name
                for name in spec.recipes  # the personal recipe: teach learn's
                if name not in (spec.default_recipe, models.PERSONAL_RECIPE)
            ),
        ]
        configs = {name: train.resolve_config(model, name) for name in ordered}
        chosen[model] = {
            name: {"steps": config.steps, "batch_size": config.batch_size, "lr": config.lr}
            for name, config in configs.items()
        }
    return chosen
