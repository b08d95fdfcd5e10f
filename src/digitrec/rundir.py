"""The run directory: the names of a run's files, and the one place that reads and writes them.

A finished run holds `weights.safetensors` (the model; checkpoint.py owns its format), `config.json`
(the resolved recipe), `metrics.json` (steps, accuracies, training seconds, and how the run was made:
provenance.py), `log.jsonl` (one record per logged step) and `curves.png`. A run in progress holds its
`config.json`, its `log.jsonl` so far and its training checkpoints: `checkpoint-STEP.pt` files
(`torch.save`, read back with `weights_only=True`) listed with their SHA-256 in `checkpoints.json`.
The newest `KEEP_CHECKPOINTS` are kept, so a damaged newest file falls back to the one before it.

Nothing saved is lost or left half-written: every file is written to a temporary name and renamed;
a finished run is assembled in a temporary sibling folder and renamed into place, so the folder holds
either the previous state or the complete new run; and only files this module names itself
(`checkpoint-STEP.pt` directly inside the run folder) are ever deleted, whatever `checkpoints.json` says.

What goes into a checkpoint is train.py's business; this module stores and finds them. It imports
torch only to save and load checkpoints, so listing and describing runs needs no torch.
"""

import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from digitrec.errors import ConfigError, ModelError, OutputError
from digitrec.files import UMASK, write_atomic

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.jsonl"
CURVES_FILE = "curves.png"
CHECKPOINTS_FILE = "checkpoints.json"
REPORT_JSON_FILE = "report.json"  # what `digitrec evaluate --report` (and the page) measured on the test set
REPORT_HTML_FILE = "report.html"  # the same with figures, as one page
OUTPUT_FILE = "train-output.txt"  # what `digitrec train` printed, where its starter keeps it (the web server)
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d{7})\.pt")  # the only files a run folder ever deletes
KEEP_CHECKPOINTS = 2
RUN_FILES = {WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE, LOG_FILE, CURVES_FILE, CHECKPOINTS_FILE}

MiB = 1024 * 1024
MAX_RECORD_BYTES = 1 * MiB  # config.json, metrics.json, checkpoints.json, report.json: a few kB when written here
MAX_LOG_BYTES = 64 * MiB  # log.jsonl: 14 MB for 200,000 steps logged every step
MAX_REPORT_BYTES = 16 * MiB  # report.html: about 1 MB with its figures embedded

# the type each known field of a record must have when present (None is allowed where the value may be unknown)
NUMBER = (int, float)
CONFIG_FIELDS = {"model": str, "recipe": str, "steps": int, "batch_size": int, "lr": NUMBER, "seed": int}
METRICS_FIELDS = {"steps": int, "test_accuracy": NUMBER, "validation_accuracy": NUMBER, "train_seconds": NUMBER}
LOG_FIELDS = {"step": int, "loss": NUMBER, "train_accuracy": NUMBER, "validation_accuracy": NUMBER, "seconds": NUMBER}

# what a folder is, for `status`
FINISHED = "finished"  # weights and metrics: a complete run
RESUMABLE = "resumable"  # stopped, killed or failed at its final save: `digitrec train --resume` continues it
STARTED = "started"  # a log but no checkpoint yet: training now, or ended before its first checkpoint
EMPTY = "empty"
MISSING = "missing"
NOT_A_RUN = "not a run"  # a folder with other files in it
DAMAGED = "damaged"  # for `describe`: a run whose files cannot be read as a run's (the reason is in "problem")

REPLACEMENT_SUFFIX = ".new"  # `--overwrite` trains beside the run it replaces, in NAME.new


def to_json(value: dict) -> str:
    return json.dumps(value, indent=2, allow_nan=False) + "\n"  # NaN is not JSON: fail rather than write it


def open_regular(path: Path, limit: int, what: str):
    """`path` opened for reading and its `os.stat_result`, if it is a regular file of at most `limit` bytes,
    never through a link (a run file is never one) and never waiting on a FIFO or a device; anything else is a
    `ModelError` saying what `path` is (`what`: whose size limit it broke). A missing file is FileNotFoundError."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno == errno.ELOOP:  # the last part of the path is a link
            raise ModelError(f"{path}: a link, not a file (a run's files are read only as regular files)") from None
        raise ModelError(f"{path}: cannot read ({error.strerror})") from None
    file = open(descriptor, "rb")
    found = os.fstat(descriptor)
    if not stat.S_ISREG(found.st_mode):
        file.close()
        raise ModelError(f"{path}: not a regular file (a run's files are read only as regular files)")
    if found.st_size > limit:
        file.close()
        raise ModelError(f"{path}: {found.st_size:,} bytes, over the {limit:,} {what} may hold")
    return file, found


def read_bytes(path: Path, limit: int) -> bytes:
    """The content of the regular file `path`, at most `limit` bytes (see `open_regular`)."""
    try:
        file, _ = open_regular(path, limit, "a run's file of this kind")
    except FileNotFoundError as error:
        raise ModelError(f"{path}: cannot read ({error.strerror})") from None
    with file:
        try:
            return file.read(limit + 1)[:limit]
        except OSError as error:
            raise ModelError(f"{path}: cannot read ({error.strerror})") from None


def finite(value):
    """`value` with NaN and infinities (which json.loads accepts and JSON cannot carry) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def check_fields(where: str, record: dict, kinds: dict, required: tuple[str, ...] = ()) -> dict:
    """`record`, if each of its known fields has its type (None allowed, booleans are not numbers); else a
    `ModelError` naming the field."""
    for name in required:
        if record.get(name) is None:
            raise ModelError(f"{where}: no {name!r}")
    for name, kind in kinds.items():
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            expected = "a number" if kind is NUMBER else {int: "a whole number", str: "a string"}[kind]
            raise ModelError(f"{where}: {name} is {json.dumps(value)[:40]}, not {expected}")
    return record


def read_json(path: Path, kinds: dict | None = None) -> dict:
    """A run record (a JSON object of at most MAX_RECORD_BYTES); with `kinds`, its known fields are checked."""
    try:
        value = json.loads(read_bytes(path, MAX_RECORD_BYTES))
    except ModelError as error:
        raise ModelError(f"cannot read a run record: {error}") from None
    except (ValueError, RecursionError) as error:
        raise ModelError(f"{path}: cannot read a run record ({error})") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: cannot read a run record (not a JSON object)")
    return check_fields(str(path), finite(value), kinds) if kinds else finite(value)


# ---- the record: config, metrics, log


def read_record(run_dir: str | Path) -> tuple[dict, dict]:
    """A finished run's config and metrics, without loading its weights."""
    run_dir = Path(run_dir)
    return read_json(run_dir / CONFIG_FILE, CONFIG_FIELDS), read_json(run_dir / METRICS_FILE, METRICS_FIELDS)


@dataclass(frozen=True)
class LogPosition:
    """How far a reader got in a run's `log.jsonl`: the file (a resume replaces it) and the byte offset."""

    inode: int = 0
    offset: int = 0

    def __str__(self) -> str:  # e.g. an event stream's id, sent back by a reconnecting page
        return f"{self.inode}-{self.offset}"

    @classmethod
    def parse(cls, text: str | None) -> "LogPosition":
        try:
            inode, offset = (int(part) for part in (text or "").split("-"))
            return cls(inode, offset)
        except ValueError:
            return cls()


def read_log_since(run_dir: str | Path, position: LogPosition = LogPosition()) -> tuple[list[dict], LogPosition, bool]:
    """The whole records written to the run's log after `position`, the new position, and whether the file
    was replaced since (a resume rewrites it with the checkpoint's log): then the records are all of it.
    A line still being written is left for the next read; a line that is not a JSON object is skipped; NaN and
    infinities become None. No log yet: no records. A log that is not a regular file, over MAX_LOG_BYTES, or
    holds a record whose step is missing or whose fields are of the wrong type is a `ModelError`."""
    path = Path(run_dir) / LOG_FILE
    try:
        log, found = open_regular(path, MAX_LOG_BYTES, "a run's log")
    except FileNotFoundError:
        return [], position, False
    with log:
        replaced = found.st_ino != position.inode
        start = 0 if replaced else position.offset
        log.seek(start)
        chunk = log.read(MAX_LOG_BYTES - start)
    complete = chunk[: chunk.rfind(b"\n") + 1]
    records = []
    for line in complete.splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(check_fields(f"{path}: a record", finite(record), LOG_FIELDS, required=("step",)))
    return records, LogPosition(found.st_ino, start + len(complete)), replaced and position.inode != 0


def read_log(run_dir: str | Path) -> list[dict]:
    """The run's log records, oldest first (see `read_log_since`); none when it has no log."""
    return read_log_since(run_dir)[0]


def read_json_if_any(path: Path, kinds: dict | None = None) -> dict:
    """A run record that may not be written yet (a run still starting): empty when missing; a `ModelError`
    when it is there but cannot be read as one."""
    if not os.path.lexists(path):
        return {}
    return read_json(path, kinds)


def last_output_line(run_dir: str | Path) -> str | None:
    """The last line a run's starter kept of `digitrec train`'s output (OUTPUT_FILE), if any."""
    try:
        text = read_bytes(Path(run_dir) / OUTPUT_FILE, MAX_LOG_BYTES).decode(errors="replace")
    except ModelError:
        return None
    lines = text.strip().splitlines()
    return lines[-1][:500] if lines else None


def open_log(run_dir: Path, config: dict, log: list[dict]):
    """Create the run folder (if needed), write its config and its log so far; returns the log open for appending."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{run_dir}: cannot create the run folder ({error.strerror})", error.strerror) from None
    write_atomic(run_dir / CONFIG_FILE, to_json(config))
    write_atomic(run_dir / LOG_FILE, "".join(json.dumps(record) + "\n" for record in log))
    return (run_dir / LOG_FILE).open("a")


def append_log(log_file, record: dict) -> None:
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()  # a reader (the web page, `tail -f`) sees each record as it is logged


# ---- training checkpoints


def checkpoint_entries(run_dir: Path) -> list[dict]:
    """The checkpoints listed in `run_dir`, oldest first; entries that do not name a checkpoint file of this
    folder (`checkpoint-STEP.pt`, nothing else) with a whole-number step are left out, and none when there is
    no readable list."""
    try:
        entries = json.loads(read_bytes(run_dir / CHECKPOINTS_FILE, MAX_RECORD_BYTES))["checkpoints"]
    except (ModelError, ValueError, RecursionError, KeyError, TypeError):
        return []
    if not isinstance(entries, list):
        return []
    return [
        entry
        for entry in entries
        if isinstance(entry, dict)
        and CHECKPOINT_NAME.fullmatch(str(entry.get("file")))
        and type(entry.get("step")) is int
    ]


def write_entries(run_dir: Path, entries: list[dict]) -> None:
    write_atomic(run_dir / CHECKPOINTS_FILE, to_json({"checkpoints": entries}))


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    """Write the training `state` (tensors, numbers, strings, dicts and lists of them; its "step" names the
    file) as the newest checkpoint, then drop the oldest beyond `KEEP_CHECKPOINTS`."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    path = run_dir / f"checkpoint-{int(state['step']):07d}.pt"
    write_atomic(path, payload)
    entries = [entry for entry in checkpoint_entries(run_dir) if entry["file"] != path.name]
    entries.append({"file": path.name, "step": int(state["step"]), "sha256": hashlib.sha256(payload).hexdigest()})
    kept, dropped = entries[-KEEP_CHECKPOINTS:], entries[:-KEEP_CHECKPOINTS]
    write_entries(run_dir, kept)
    for entry in dropped:  # only once the list no longer names them
        (run_dir / entry["file"]).unlink(missing_ok=True)
    return path


def load_checkpoint(run_dir: str | Path, warn=print) -> dict:
    """The newest intact checkpoint of `run_dir`. A damaged one is reported through `warn`, skipped and
    dropped from the list, so the intact one before it stays the one to resume from."""
    import torch

    run_dir = Path(run_dir)
    entries = checkpoint_entries(run_dir)
    if not entries:
        found = status(run_dir)
        if found == FINISHED:
            raise ModelError(
                f"{run_dir}: this run is finished (it has its weights and metrics); nothing to resume. "
                "Train a new run with --out DIR"
            )
        raise ModelError(f"{run_dir}: no training checkpoint to resume from (the folder is {describe_status(found)})")
    damaged = []
    for entry in reversed(entries):
        path = run_dir / entry["file"]
        try:
            payload = path.read_bytes()
        except OSError as error:
            warn(f"{path}: cannot read the checkpoint ({error.strerror}); trying the one before")
            damaged.append(entry)
            continue
        if hashlib.sha256(payload).hexdigest() != entry.get("sha256"):
            warn(
                f"{path}: the checkpoint is damaged (its SHA-256 does not match {CHECKPOINTS_FILE}); trying the one before"
            )
            damaged.append(entry)
            continue
        try:
            state = torch.load(io.BytesIO(payload), weights_only=True)
        except Exception as error:  # a file that passed its checksum but is not a torch checkpoint
            warn(f"{path}: not a readable checkpoint ({str(error).splitlines()[0]}); trying the one before")
            damaged.append(entry)
            continue
        if damaged:
            write_entries(run_dir, [entry for entry in entries if entry not in damaged])
        return state
    raise ModelError(f"{run_dir}: every checkpoint is damaged or missing; the run cannot be resumed")


# ---- what a folder holds


def status(run_dir: str | Path, entries: list[dict] | None = None) -> str:
    """FINISHED, RESUMABLE, STARTED, EMPTY, MISSING or NOT_A_RUN (see their comments above); `entries`: the
    folder's `checkpoint_entries`, if the caller has read them already."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return MISSING
    names = {path.name for path in run_dir.iterdir()}
    if checkpoint_entries(run_dir) if entries is None else entries:
        return RESUMABLE
    if {WEIGHTS_FILE, METRICS_FILE} <= names:
        return FINISHED
    if {CONFIG_FILE, LOG_FILE} <= names:
        return STARTED
    return EMPTY if not names - {OUTPUT_FILE} else NOT_A_RUN  # a starter may open the output file first


def describe_status(found: str) -> str:
    return {
        FINISHED: "a finished run",
        RESUMABLE: "a stopped run",
        STARTED: "a run that has no checkpoint yet",
        EMPTY: "empty",
        MISSING: "missing",
        NOT_A_RUN: "not a digitrec run",
    }[found]


def describe(run_dir: str | Path) -> dict:
    """One run for a list of runs: path, status, model, recipe, steps done of all, the newest validation
    accuracy, the test accuracy (finished runs only), training seconds, when it last changed (Unix time), and
    `problem`. Each file is read once, as a regular file inside the folder (see `read_bytes`). A run whose
    files cannot be read as a run's is DAMAGED, with `problem` saying why; a folder that holds only what a
    starter kept of `digitrec train`'s output (it ended before writing anything) is STARTED."""
    run_dir = Path(run_dir)
    checkpoints = checkpoint_entries(run_dir)
    found = status(run_dir, checkpoints)
    described = {
        "path": str(run_dir),
        "name": run_dir.name,
        "status": found,
        "model": None,
        "recipe": None,
        "steps": None,
        "total_steps": None,
        "validation_accuracy": None,
        "test_accuracy": None,
        "train_seconds": None,
        "updated": None,
        "problem": None,
    }
    if found == EMPTY and (run_dir / OUTPUT_FILE).exists():
        found = described["status"] = STARTED
    if found in (MISSING, EMPTY, NOT_A_RUN):
        return described
    try:
        entries = list(os.scandir(run_dir))
        described["updated"] = max(entry.stat(follow_symlinks=False).st_mtime for entry in entries)
        for entry in entries:  # what a run reads besides its records (weights, checkpoints) must be plain files too
            if (entry.name in RUN_FILES or CHECKPOINT_NAME.fullmatch(entry.name)) and not entry.is_file(
                follow_symlinks=False
            ):
                raise ModelError(
                    f"{entry.path}: {'a link' if entry.is_symlink() else 'not a regular file'}, "
                    "not a file (a run's files are read only as regular files)"
                )
        config = read_json_if_any(run_dir / CONFIG_FILE, CONFIG_FIELDS)
        metrics = read_json(run_dir / METRICS_FILE, METRICS_FIELDS) if found == FINISHED else {}
        log = read_log(run_dir)
    except OSError as error:
        return {**described, "status": DAMAGED, "problem": f"{run_dir}: cannot read ({error.strerror})"}
    except ModelError as error:
        return {**described, "status": DAMAGED, "problem": str(error)}
    validated = [record["validation_accuracy"] for record in log if record.get("validation_accuracy") is not None]
    if found == RESUMABLE:
        steps = checkpoints[-1]["step"]
    elif log:
        steps = log[-1]["step"]
    else:
        steps = 0
    described.update(
        model=config.get("model"),
        recipe=config.get("recipe"),
        total_steps=config.get("steps"),
        steps=metrics.get("steps", steps),
        validation_accuracy=metrics.get("validation_accuracy", validated[-1] if validated else None),
        test_accuracy=metrics.get("test_accuracy"),
        train_seconds=metrics.get("train_seconds", log[-1].get("seconds") if log else None),
    )
    return described


def describe_inside(folder: Path, name: str) -> dict:
    """`describe` of `folder / name`, unless that is a link: then it is DAMAGED, unread (runs are read only
    inside `folder`)."""
    path = folder / name
    if path.is_symlink():
        return {
            **describe(folder / ".missing"),
            "path": str(path),
            "name": name,
            "status": DAMAGED,
            "problem": f"{path}: a link to a folder (runs are read only inside {folder})",
        }
    return describe(path)


def list_runs(folder: str | Path) -> list[dict]:
    """`describe_inside` of every run directly inside `folder` (folders that hold no run are left out), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    runs = [
        describe_inside(folder, path.name)
        for path in sorted(folder.iterdir())
        if path.is_dir() and not path.name.startswith(".")
    ]
    return [run for run in runs if run["status"] not in (EMPTY, NOT_A_RUN)]


def replacement_dir(run_dir: Path) -> Path:
    """Where `--overwrite` trains the run that replaces `run_dir` once it is saved."""
    return run_dir.with_name(run_dir.name + REPLACEMENT_SUFFIX)


def check_new_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to start a run in `run_dir` when that would destroy something: a run (finished or not) or
    other files, unless `overwrite`, and then only where the replacement's own training folder is free."""
    found = status(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: not a folder")
    if found in (MISSING, EMPTY):
        return
    if not overwrite:
        replace = "add --overwrite to replace it once the new run is saved"
        advice = {
            RESUMABLE: f"continue it with --resume {run_dir}, choose another --out folder, or {replace}",
            STARTED: f"it may be training now; choose another --out folder, or {replace}",
            FINISHED: f"choose another --out folder, or {replace}",
            NOT_A_RUN: "choose another --out folder, or add --overwrite to replace the folder and everything in it "
            "once the new run is saved",
        }[found]
        raise ConfigError(f"{run_dir} is {describe_status(found)}; {advice}")
    replacement = replacement_dir(run_dir)
    if status(replacement) not in (MISSING, EMPTY):
        raise ConfigError(
            f"{replacement} (where --overwrite trains the run that replaces {run_dir.name}) is "
            f"{describe_status(status(replacement))}: resume it with --resume {replacement}, or delete it"
        )


# ---- saving a finished run


def save_run(run_dir: Path, files: dict[str, bytes | str], training_dir: Path | None = None) -> Path:
    """Make `run_dir` the finished run made of `files` (name -> content), all or nothing.

    The files are written into a temporary sibling folder, joined by whatever else the training folder
    holds besides its run files (a TensorBoard log); that folder is then renamed into place and the
    training folder (`run_dir` itself, or the one `--overwrite` trained in) is removed with its
    checkpoints. If anything fails, `run_dir` and the training folder are as they were and the
    OutputError says why.
    """
    training_dir = training_dir or run_dir
    try:
        staging = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.saving-"))
    except OSError as error:
        raise OutputError(f"{run_dir}: cannot save the finished run ({error.strerror})", error.strerror) from None
    previous = run_dir.with_name(f".{run_dir.name}.previous-{staging.name.rsplit('-', 1)[-1]}")
    moved: list[Path] = []
    try:
        for name, content in files.items():
            write_atomic(staging / name, content)
        os.chmod(staging, 0o777 & ~UMASK)  # mkdtemp makes a private folder; a run folder should not be
        extras = (
            [
                path
                for path in training_dir.iterdir()
                if path.name not in RUN_FILES and not CHECKPOINT_NAME.fullmatch(path.name)
            ]
            if training_dir.is_dir()
            else []
        )
        for path in extras:  # keep what else the run wrote, e.g. its TensorBoard log
            path.rename(staging / path.name)
            moved.append(path)
        if run_dir.exists():
            run_dir.rename(previous)
        try:
            staging.rename(run_dir)  # a crash between the two renames leaves both folders whole, beside each other
        except OSError:
            if previous.exists():
                previous.rename(run_dir)
            raise
    except (OutputError, OSError) as error:
        for path in moved:
            (staging / path.name).rename(path)
        shutil.rmtree(staging, ignore_errors=True)
        reason = error.reason if isinstance(error, OutputError) else error.strerror or str(error)
        raise OutputError(f"{run_dir}: cannot save the finished run ({reason})", reason) from None
    shutil.rmtree(previous, ignore_errors=True)
    if training_dir != run_dir:
        shutil.rmtree(training_dir, ignore_errors=True)
    return run_dir
