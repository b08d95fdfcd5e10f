"""Reading many files: one row per file (rows.py) into an output that a rerun resumes, with the batches
run in this process (engine "local") or on a Ray cluster (engine "ray", the `scale` extra).

    digitrec predict 'scans/**/*.png' --engine ray --out rows.parquet       # this machine's cores
    digitrec read paths.txt --engine ray --address HEAD:6379 --out rows.jsonl  # a cluster

    from digitrec import scale
    rows = scale.rows_dataset(paths_or_dataset, "predict")  # a Ray Dataset of rows, for people using Ray

Owns: the output (JSON lines or a folder of Parquet parts, with a job record beside it that makes a
rerun resume and refuses the output of another job), the progress line and summary, starting or
joining Ray, shipping the model files from the driver to the workers, and the workers that hold one
model each. The engine only decides where a batch runs: every batch becomes rows through
`rows.make_rows`. Not owned here: what a SOURCE names (inputs.py), the rows themselves (rows.py). Ray
and pyarrow are imported only here, and only when used, so the base install stays without them.
"""

import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from digitrec.errors import DigitrecError, EngineError, ImageError, OutputError
from digitrec.files import BUNDLED_INT8, BUNDLED_MODEL, BUNDLED_ONNX, BUNDLED_READER, BUNDLED_READER_ONNX
from digitrec.rows import ROW_FIELDS, arrow_schema, make_rows
from digitrec.rundir import WEIGHTS_FILE

ENGINES = ("local", "ray")
FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}  # --out's suffix -> its format
BATCH_SIZE = {"predict": 256, "read": 32}  # files per batch on a worker: a fraction of a second's work
LOCAL_CHUNK = 4096  # files handed to `predict_many` at once by the local engine (its process pool's work)
PART_ROWS = 50_000  # a Parquet part is written at this many rows ...
PART_SECONDS = 10.0  # ... or when its oldest row has waited this long (what a killed job can lose)
CONNECT_SECONDS = 25  # an --address that does not answer within this many seconds is an error
JOB_VERSION = 1
NODE_COLUMN = "_node"  # the Ray node that made a row: counted by the driver, never written


# --- the model files, read by the driver, written out again by each worker ---


def model_files(task: str, model_path: str | Path | None, reader_path: str | Path | None) -> dict[str, bytes]:
    """The files `Recognizer.load(model_path)` and `runtime.load(reader_path, NUMBERS)` read, by the name a worker gives them:
    model/model.onnx (+ model/model.int8.onnx, the bundled default's batch copy) or model/model.safetensors;
    for `read` also reader/reader.onnx or reader/reader.safetensors. Each file alone rebuilds its model (its
    config is inside); each folder also holds the model's calibration.json where it has one (confidence.py),
    so a worker's confidences and `unsure` are the driver's."""
    from digitrec.confidence import calibration_path
    from digitrec.runtime import onnxruntime_installed

    def one(role: str, path: str | Path | None, default_dir: Path, default_onnx: Path) -> dict[str, bytes]:
        if path is None:
            path = default_onnx if onnxruntime_installed() else default_dir / WEIGHTS_FILE
        path = Path(path)
        if path.is_dir():
            path = path / WEIGHTS_FILE
        suffix = ".onnx" if path.suffix == ".onnx" else ".safetensors"
        try:
            files = {f"{role}/{role}{suffix}": path.read_bytes()}
        except OSError as error:
            raise EngineError(f"{path}: cannot read the model file to send to the workers ({error.strerror})") from None
        if calibration_path(path).is_file():
            files[f"{role}/{calibration_path(path).name}"] = calibration_path(path).read_bytes()
        return files

    files = one("model", model_path, BUNDLED_MODEL, BUNDLED_ONNX)
    if model_path is None and "model/model.onnx" in files:
        files["model/model.int8.onnx"] = BUNDLED_INT8.read_bytes()
    if task == "read":
        files |= one("reader", reader_path, BUNDLED_READER, BUNDLED_READER_ONNX)
    return files


def models_from_files(files: dict[str, bytes], folder: Path, threads: int = 1):
    """The `Recognizer` and number reader (None for predict) that `model_files` describes, their files
    written into `folder`: the same models on the same runtimes, so a worker's rows are the driver's."""
    from digitrec import runtime
    from digitrec.recognizer import Recognizer
    from digitrec.tasks import DIGITS, NUMBERS

    for name, content in files.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(content)
    reader = next(
        (runtime.load(folder / name, NUMBERS, threads) for name in files if name.startswith("reader/reader.")), None
    )
    if (
        "model/model.int8.onnx" in files
    ):  # the bundled default on onnxruntime: its int8 copy for batches, as load() does
        return Recognizer(
            runtime.load_onnx(folder / "model/model.onnx", DIGITS, threads),
            runtime.load_onnx(folder / "model/model.int8.onnx", DIGITS, threads),
        ), reader
    model = next(folder / name for name in files if name.startswith("model/model."))
    return Recognizer.load(model, threads), reader


def fingerprint(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(content).hexdigest() for name, content in sorted(files.items())}


# --- the output: JSON lines or a folder of Parquet parts, and its job record ---


def output_format(out: Path) -> str:
    try:
        return FORMATS[out.suffix.lower()]
    except KeyError:
        raise OutputError(
            f"{out}: --out must end in .parquet (a folder of Parquet parts) or .jsonl (JSON lines)"
        ) from None


def job_record_path(out: Path) -> Path:
    # inside a Parquet folder, where readers skip names starting with _; beside a JSON lines file
    return out / "_digitrec_job.json" if output_format(out) == "parquet" else out.with_name(out.name + ".job.json")


def is_part(path: Path) -> bool:
    return path.name.startswith("part-") and path.suffix == ".parquet"


def is_unfinished_part(path: Path) -> bool:  # a part being written when the job was killed (files.write_atomic)
    return path.name.startswith(".part-")


@dataclass
class Done:
    paths: set[str] = field(default_factory=set)
    errors: int = 0


def open_output(out: Path, job: dict, overwrite: bool) -> Done:
    """Make `out` ready for `job`'s rows and say which files it already holds rows of.

    A new `out`: its job record is written. The same job's output: resumed (a JSON lines file loses a
    last line cut short by a kill; a Parquet part is never half there). With `overwrite`: emptied
    first. Anything else there (another job's rows, another format, files digitrec did not write) is
    refused, and nothing is changed."""
    kind = output_format(out)
    record_path = job_record_path(out)
    exists = out.exists() or out.is_symlink()
    if exists and (out.is_dir() != (kind == "parquet")):
        raise OutputError(
            f"{out}: is a {'folder' if out.is_dir() else 'file'}, not the {kind} output of a digitrec "
            f"job; choose another --out"
        )
    if exists and overwrite:
        remove_output(out, kind)
    elif exists:
        try:
            recorded = json.loads(record_path.read_text())
        except (OSError, ValueError):
            raise OutputError(
                f"{out}: exists and is not the output of a digitrec job; choose another --out, or "
                f"--overwrite to replace it"
            ) from None
        if recorded != job:
            theirs = f"digitrec {recorded.get('task')} with model {short(recorded.get('models'))}"
            ours = f"digitrec {job['task']} with model {short(job['models'])}"
            raise OutputError(
                f"{out}: holds the rows of another job ({theirs}; this is {ours}); choose another "
                f"--out, or --overwrite to start over"
            )
        return read_done(out, kind)
    if kind == "parquet":
        out.mkdir(parents=True, exist_ok=True)
    from digitrec.files import write_atomic

    write_atomic(record_path, json.dumps(job, indent=1) + "\n")
    return Done()


def short(models) -> str:
    return "+".join(digest[:12] for digest in (models or {}).values()) or "?"


def remove_output(out: Path, kind: str) -> None:
    """Remove a job's output for --overwrite; a folder holding anything digitrec did not write stays."""
    if kind == "jsonl":
        out.unlink()
        job_record_path(out).unlink(missing_ok=True)
        return
    entries = list(out.iterdir())
    strangers = [
        entry.name
        for entry in entries
        if not (is_part(entry) or is_unfinished_part(entry) or entry == job_record_path(out))
    ]
    if strangers:
        raise OutputError(
            f"{out}: holds files digitrec did not write ({', '.join(sorted(strangers)[:3])}); "
            "--overwrite removes only a job's own parts: choose another --out"
        )
    for entry in entries:
        entry.unlink()


def read_done(out: Path, kind: str) -> Done:
    done = Done()
    if kind == "jsonl":
        if not out.exists():
            return done
        complete = 0  # bytes up to the end of the last whole line
        with out.open("rb") as file:
            for number, line in enumerate(file, 1):
                if not line.endswith(b"\n"):  # a line cut short by a kill: it is written again
                    break
                complete += len(line)
                try:
                    row = json.loads(line)
                    done.paths.add(row["path"])
                except (ValueError, KeyError, TypeError):
                    raise OutputError(
                        f"{out}: line {number} is not a row of digitrec; choose another --out, or "
                        "--overwrite to start over"
                    ) from None
                done.errors += row.get("error") is not None
        if complete < out.stat().st_size:
            os.truncate(out, complete)
        return done
    import pyarrow.parquet as pq

    for entry in sorted(out.iterdir()):
        if is_unfinished_part(entry):
            entry.unlink()
        elif is_part(entry):
            table = pq.read_table(entry, columns=["path", "error"])
            done.paths.update(table.column("path").to_pylist())
            done.errors += table.num_rows - table.column("error").null_count
    return done


class JsonLinesSink:
    """Rows as JSON lines, each batch written whole and flushed: to a file (appended) or a stream."""

    def __init__(self, out: Path | None, stream=None):
        self.owned = out is not None
        self.file = out.open("a", encoding="utf-8") if self.owned else stream

    def write(self, rows) -> None:
        if not isinstance(rows, list):
            rows = rows.to_pylist()
        self.file.write("".join(json.dumps(row) + "\n" for row in rows))
        self.file.flush()

    def close(self) -> None:
        if self.owned:
            self.file.close()


class ParquetSink:
    """Rows into a folder of Parquet parts; each part is written whole (a temporary file, then a rename)."""

    def __init__(self, out: Path, task: str):
        self.out, self.schema = out, arrow_schema(task)
        self.number = 1 + max((int(part.stem.split("-")[1]) for part in out.iterdir() if is_part(part)), default=0)
        self.waiting, self.waiting_rows, self.since = [], 0, time.monotonic()

    def write(self, rows) -> None:
        import pyarrow as pa

        table = pa.Table.from_pylist(rows, schema=self.schema) if isinstance(rows, list) else rows.cast(self.schema)
        if not self.waiting:
            self.since = time.monotonic()
        self.waiting.append(table)
        self.waiting_rows += table.num_rows
        if self.waiting_rows >= PART_ROWS or time.monotonic() - self.since >= PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.waiting_rows:
            return
        path = self.out / f"part-{self.number:06d}.parquet"
        partial = self.out / f".{path.name}.{os.getpid()}"
        pq.write_table(pa.concat_tables(self.waiting), partial)
        os.replace(partial, path)
        self.number += 1
        self.waiting, self.waiting_rows = [], 0

    def close(self) -> None:
        self.flush()


def read_rows(out: Path) -> list[dict]:
    """Every row in a job's output, JSON lines or Parquet (in the order written)."""
    if output_format(out) == "jsonl":
        return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    import pyarrow.parquet as pq

    return [row for part in sorted(filter(is_part, out.iterdir())) for row in pq.read_table(part).to_pylist()]


# --- progress on stderr ---


class Progress:
    """Files done, rate, errors and time left on one line of stderr, redrawn at most twice a second and
    only when stderr is a terminal; `summary` is one line, always."""

    def __init__(self, total: int, stream=None):
        self.total, self.stream = total, stream or sys.stderr
        self.done = self.errors = 0
        self.first: tuple[float, int] | None = None  # when the first rows came, and how many
        self.start = self.drawn = time.monotonic()
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, rows: int, errors: int) -> None:
        self.done += rows
        self.errors += errors
        now = time.monotonic()
        if self.first is None:
            self.first = (now - self.start, rows)
        if self.live and now - self.drawn >= 0.5:
            self.drawn = now
            rate = self.rate()
            left = f"{format_seconds((self.total - self.done) / rate)} left" if rate else ""
            self.stream.write(
                f"\r{self.done:,}/{self.total:,} files  {rate:,.0f} files/s  {self.errors:,} errors  {left}\033[K"
            )
            self.stream.flush()

    def rate(self) -> float:
        seconds = time.monotonic() - self.start
        return self.done / seconds if seconds > 0 else 0.0

    def clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def seconds(self) -> float:
        return time.monotonic() - self.start

    def running_rate(self) -> tuple[float, float] | None:
        """Files/s from the first rows on (the workers up), and the seconds until the first rows came."""
        if self.first is None or self.done == self.first[1]:
            return None
        return (self.done - self.first[1]) / (self.seconds() - self.first[0]), self.first[0]


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def count_errors(rows) -> int:
    if isinstance(rows, list):
        return sum(row["error"] is not None for row in rows)
    return rows.num_rows - rows.column("error").null_count


# --- the engines: where a batch becomes rows ---


def local_chunks(task: str, inputs: list) -> Iterator[list]:
    """`inputs` in the chunks the local engine runs at once (predict: one `predict_many`, its process pool's work)."""
    size = LOCAL_CHUNK if task == "predict" else BATCH_SIZE["read"]
    for start in range(0, len(inputs), size):
        yield inputs[start : start + size]


def local_batches(task: str, recognizer, reader, inputs: list) -> Iterator[list]:
    """`rows.make_rows` over `inputs` in this process, a chunk at a time."""
    for chunk in local_chunks(task, inputs):
        yield make_rows(task, recognizer, chunk, reader=reader)


def import_ray(own_cluster: bool = True):
    """Ray, set to work offline and quietly; a missing Ray is the ModuleNotFoundError the CLI turns into
    its install hint. `own_cluster`: this process will start Ray on this machine rather than join a cluster."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report over the network
    if own_cluster and "ray" not in sys.modules:  # read when Ray is imported; a cluster joined has its own
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for a cluster of its own, without its warning
    # this process's Ray core prints its warnings on stderr, e.g. one per worker about Ray Data's own way of
    # passing a worker's arguments; ours is the progress line (set RAY_BACKEND_LOG_LEVEL=info to see them)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    import pyarrow  # noqa: F401  (the scale extra brings both; say so now if either is missing)
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is on stderr
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # its errors reach the CLI as an exception
    return ray


def start_ray(address: str | None, cpus: int | None = None) -> bool:
    """Join the cluster at `address` (what ray.init takes: auto, HOST:PORT, ray://HOST:PORT), or with None
    start Ray on this machine's cores (`cpus` of them), without a dashboard; whether it was started or
    joined here (False: this process was already connected, and stays so). A cluster that does not
    answer is an `EngineError` within CONNECT_SECONDS."""
    if address is not None:
        check_reachable(address)
    ray = import_ray(own_cluster=address is None)
    if ray.is_initialized():
        return False
    settings = {"log_to_driver": False, "configure_logging": False}
    if address is None:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, **settings)  # never a cluster found here
        return True
    failure: list[BaseException] = []

    def connect():
        try:
            ray.init(address=address, **settings)
        except BaseException as error:  # noqa: BLE001  (reported below, by the caller's thread)
            failure.append(error)

    # in a thread of its own: Ray retries an address that answers but is no Ray cluster without end, in
    # its C++ core, where no signal reaches it
    thread = threading.Thread(target=connect, name="ray-connect", daemon=True)
    thread.start()
    thread.join(CONNECT_SECONDS)
    if thread.is_alive():
        raise EngineError(f"{address}: no Ray cluster answered there within {CONNECT_SECONDS} s")
    if failure:
        raise EngineError(f"{address}: cannot join the Ray cluster ({first_line(failure[0])})")
    return True


def first_line(error: BaseException) -> str:
    """The line of a (Ray) error that says what went wrong: the last line naming an error, else its type."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    return (named or lines or [type(error).__name__])[-1]


def check_reachable(address: str) -> None:
    """Refuse at once a HOST:PORT (or ray://HOST:PORT) where nothing listens, instead of Ray's long retries."""
    where = address.removeprefix("ray://")
    if address == "auto" or ":" not in where:
        return
    host, _, port = where.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except ValueError:
        raise EngineError(f"{address}: not an address of a Ray cluster (auto, HOST:PORT or ray://HOST:PORT)") from None
    except OSError as error:
        raise EngineError(
            f"{address}: no Ray cluster answers there ({error.strerror or error}); start one with "
            "`ray start --head`, or leave out --address to run on this machine"
        ) from None


def is_ray_error(error: BaseException) -> bool:
    return type(error).__module__.startswith("ray.")


def stop_ray() -> None:
    import ray

    ray.shutdown()


class RowMaker:
    """A Ray worker holding one model: built once per actor from the files the driver sent, it turns each
    batch of paths into rows with `rows.make_rows`, exactly as the local engine does."""

    def __init__(self, task: str, files, folder: str, with_node: bool = False):
        import ray

        if isinstance(files, ray.ObjectRef):
            files = ray.get(files)
        self.task, self.with_node = task, with_node
        if Path(folder).is_dir():  # relative paths mean what they meant on the driver (where it is the same machine)
            os.chdir(folder)
        self.model_folder = tempfile.TemporaryDirectory(prefix="digitrec-model-")
        self.recognizer, self.reader = models_from_files(files, Path(self.model_folder.name))
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch):
        import pyarrow as pa

        names = [str(name) for name in batch.column("path").to_pylist()]
        rows = make_rows(
            self.task, self.recognizer, [(name, Path(name)) for name in names], workers=1, reader=self.reader
        )
        table = pa.Table.from_pylist(rows, schema=arrow_schema(self.task))
        if self.with_node:
            table = table.append_column(NODE_COLUMN, pa.array([self.node] * table.num_rows, pa.string()))
        return table


def rows_dataset(
    source,
    task: str = "predict",
    model: str | Path | None = None,
    reader: str | Path | None = None,
    batch_size: int | None = None,
    actors: int | None = None,
    with_node: bool = False,
):
    """A Ray Dataset of rows (rows.ROW_FIELDS[task], the same as `digitrec predict/read --json`), one per
    path in `source`: paths (str or Path), or a Ray Dataset with a string column "path". Lazy, like every
    Ray Dataset: write it (`.write_parquet(...)`) or iterate it to run it. Each of `actors` workers (default:
    one per CPU of the cluster) loads the model once, from files sent by this process; relative paths
    are taken from this process's working folder. Ray is started here if it is not yet."""
    if task not in ROW_FIELDS:
        raise DigitrecError(f"unknown task {task!r}: predict or read")
    ray = import_ray()
    start_ray(None)  # unless this process is connected already
    if isinstance(source, ray.data.Dataset):
        if "path" not in source.schema().names:
            raise DigitrecError("the Dataset needs a column named path (the image files' paths)")
        dataset, batches = source.select_columns(["path"]), None
    else:
        items = [{"path": str(path)} for path in source]
        batches = max(1, -(-len(items) // (batch_size or BATCH_SIZE[task])))
        dataset = ray.data.from_items(items, override_num_blocks=min(batches, 10_000))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    actors = min(actors or cpus, cpus, batches or cpus)  # each takes a CPU; none without a batch to run
    files = ray.put(model_files(task, model, reader))
    return dataset.map_batches(
        RowMaker,
        fn_constructor_kwargs={"task": task, "files": files, "folder": os.getcwd(), "with_node": with_node},
        batch_size=batch_size or BATCH_SIZE[task],
        batch_format="pyarrow",
        num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
    )


def ray_batches(
    task: str, inputs: list, model, reader, batch_size: int | None, actors: int | None, nodes: Counter
) -> Iterator:
    """The rows of `inputs` made on the Ray cluster, as pyarrow tables in the order they finish; `nodes`
    counts the rows each node made."""
    readable = [name for name, source in inputs if not isinstance(source, ImageError)]
    if readable:
        dataset = rows_dataset(readable, task, model, reader, batch_size, actors, with_node=True)
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            nodes.update(table.column(NODE_COLUMN).to_pylist())
            yield table.drop_columns([NODE_COLUMN])
    found_errors = [(name, source) for name, source in inputs if isinstance(source, ImageError)]
    if found_errors:  # what could not even be found needs no worker
        yield make_rows(task, None, found_errors)


# --- the job ---


@dataclass
class Summary:
    written: int  # rows written by this run
    errors: int  # error rows among them
    skipped: int  # files whose rows were already in the output
    total_errors: int  # error rows in the whole output
    seconds: float
    nodes: dict[str, int]  # Ray: rows made on each node
    running: tuple[float, float] | None = None  # Ray: files/s once the workers were up, and after how many seconds

    @property
    def rate(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def run_job(
    task: str,
    inputs: list,
    recognizer,
    *,
    reader=None,
    out: Path | None,
    engine: str = "local",
    model_path=None,
    reader_path=None,
    overwrite: bool = False,
    batch_size: int | None = None,
    actors: int | None = None,
    address: str | None = None,
    cpus: int | None = None,
    stdout=None,
    stderr=None,
) -> Summary:
    """One row per input into `out` (JSON lines or Parquet; None: JSON lines on `stdout`), skipping the
    files whose rows `out` already holds; progress on `stderr`. `recognizer` and, for read, the number
    `reader` (already loaded, so that a bad model is one error before anything starts) run the local
    engine; the Ray engine sends their model files to the workers."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    unique: dict[str, tuple] = {}
    for name, source in inputs:  # a file named twice gets one row
        unique.setdefault(name, (name, source))
    inputs = list(unique.values())
    if out is not None:
        output_format(out)
    if engine == "ray" and any(name == "-" for name, _ in inputs):
        raise EngineError("-: the Ray engine reads files, not stdin")
    files = model_files(task, model_path, reader_path)
    job = {"digitrec_job": JOB_VERSION, "task": task, "models": fingerprint(files)}
    # Ray first: a cluster that does not answer is an error before anything is written
    started = start_ray(address, cpus) if engine == "ray" else False
    sink = None
    try:
        if out is None:
            done, sink = Done(), JsonLinesSink(None, stdout)
        else:
            done = open_output(out, job, overwrite)
            sink = JsonLinesSink(out) if output_format(out) == "jsonl" else ParquetSink(out, task)
        pending = [pair for pair in inputs if pair[0] not in done.paths]
        if done.paths:
            stderr.write(f"resuming {out}: {len(inputs) - len(pending):,} of {len(inputs):,} files already there\n")
        progress = Progress(len(pending), stderr)
        nodes: Counter = Counter()
        if engine == "ray":
            batches = ray_batches(task, pending, model_path, reader_path, batch_size, actors, nodes)
        else:
            batches = local_batches(task, recognizer, reader, pending)
        try:
            for rows in batches:
                sink.write(rows)
                progress.update(len(rows) if isinstance(rows, list) else rows.num_rows, count_errors(rows))
        finally:
            progress.clear()
    except Exception as error:
        if engine != "ray" or isinstance(error, DigitrecError) or not is_ray_error(error):
            raise
        raise EngineError(
            f"the Ray job stopped: {first_line(error)} (the rows written so far stay; is the same "
            "digitrec with its scale extra installed on every node?)"
        ) from None
    finally:
        if sink is not None:
            sink.close()
        if started:  # Ray started here stops here; a cluster joined is left (disconnected)
            stop_ray()
    return Summary(
        written=progress.done,
        errors=progress.errors,
        skipped=len(inputs) - len(pending),
        total_errors=done.errors + progress.errors,
        seconds=progress.seconds(),
        nodes=dict(nodes),
        running=progress.running_rate() if engine == "ray" else None,
    )


def describe(summary: Summary, out: Path | None) -> str:
    """The job's summary line."""
    where = f" to {out}" if out is not None else ""
    running = (
        ""
        if summary.running is None
        else (f"; {summary.running[0]:,.0f} files/s once the first rows came after {summary.running[1]:.1f} s")
    )
    line = (
        f"{summary.written:,} rows written{where} in {summary.seconds:.1f} s ({summary.rate:,.0f} files/s{running}), "
        f"{summary.errors:,} errors"
    )
    if summary.skipped:
        line += f"; {summary.skipped:,} files were already there"
    if summary.nodes:
        line += f"; made on {len(summary.nodes)} Ray node(s): " + ", ".join(
            f"{node[:8]} {count:,}" for node, count in sorted(summary.nodes.items())
        )
    return line
