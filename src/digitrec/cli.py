"""The `digitrec` command: parses arguments, calls the library, prints results.

Every error that is the input's fault (a `DigitrecError`) becomes one line on stderr and exit status 1;
usage errors are Click's (exit status 2).
"""

import io
import json
import math
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path

import click

from digitrec import __version__
from digitrec.config import TrainConfig, describe_range, is_switch
from digitrec.errors import DigitrecError, ImageError, ModelError, OutputError
from digitrec.files import write_atomic
from digitrec.inputs import expand_inputs, preview_name

DATA_DIR_OPTION = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory holding the four MNIST files (default: $DIGITREC_DATA, the bundled copy, the cache).",
)
JSON_LINES_OPTION = click.option("--json", "as_json", is_flag=True, help="One JSON object per input line.")
CSV_OPTION = click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the results to this CSV file.",
)
MODEL_OPTION = click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory, .safetensors or .onnx file (default: the bundled model).",
)
READER_OPTION = click.option(
    "--reader",
    "reader_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The number reader: a run of `digitrec train --model reader`, its .safetensors or .onnx (default: the bundled one).",
)


def job_options(command):
    """`predict` and `read`'s flags for many files: where batches run, the output a rerun resumes (docs/scale.md)."""
    options = [
        click.option(
            "--engine",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,  # scale.ENGINES
            help="Where batches run: this process, or Ray (this machine's cores, or --address's cluster; "
            "needs pip install 'digitrec[scale]').",
        ),
        click.option(
            "--out",
            type=click.Path(path_type=Path),
            default=None,
            help="Write the rows (those of --json) to this .jsonl file or .parquet folder instead of printing "
            "them; the same command again resumes it, writing only the files not yet there.",
        ),
        click.option("--overwrite", is_flag=True, help="Start --out over instead of resuming it."),
        click.option(
            "--address",
            default=None,
            help="--engine ray: join the Ray cluster there (auto, HOST:PORT, ray://HOST:PORT) "
            "[default: start Ray on this machine].",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1, 100_000),
            default=None,
            help="--engine ray: files per batch sent to a worker [default: 256 for predict, 32 for read].",
        ),
        click.option(
            "--actors",
            type=click.IntRange(1, 100_000),
            default=None,
            help="--engine ray: workers, each holding one copy of the model on one CPU [default and most: one per CPU of the cluster].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


OPTIONAL_PACKAGES = {  # package -> the install extra that brings it
    "torch": "train",
    "safetensors": "train",
    "matplotlib": "train",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "ray": "scale",
    "pyarrow": "scale",
}


class Commands(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DigitrecError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(getattr(error, "exit_code", 1))
        except ModuleNotFoundError as error:
            extra = OPTIONAL_PACKAGES.get((error.name or "").split(".")[0])
            if extra is None:
                raise
            click.echo(
                f"error: this needs {error.name}, which is not installed: pip install 'digitrec[{extra}]'"
                + (" (predict and serve run an .onnx model without it)" if extra == "train" else ""),
                err=True,
            )
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning (e.g. a model without its calibration) as one line on stderr, not Python's two."""
    click.echo(f"warning: {message}", err=True)


@click.group(cls=Commands)
@click.version_option(__version__, prog_name="digitrec")
def main():
    """Handwritten-digit recognition: train, evaluate and use MNIST models."""
    warnings.showwarning = show_warning


@main.command("data")
@DATA_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def data_command(data_dir, as_json):
    """Show where MNIST is read from, each file's verified SHA-256, the split sizes and per-class counts."""
    from digitrec import data

    info = data.describe(data_dir)
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"location: {info['directory']}")
    for name, sha256 in info["sha256"].items():
        click.echo(f"  {name:<28} sha256 {sha256[:16]}… verified")
    click.echo(f"{'split':<12}{'images':>8}  " + " ".join(f"{digit:>5}" for digit in range(10)))
    for split_name, split in info["splits"].items():
        counts = " ".join(f"{count:>5}" for count in split["per_class"])
        click.echo(f"{split_name:<12}{split['size']:>8}  {counts}")


class RegistryOption(click.Option):
    """An option whose help text lists the registered models, read from models.py only when help is shown
    (importing it imports torch, which `predict` and `serve` on an .onnx model do without)."""

    def __init__(self, *args, describe, **kwargs):
        super().__init__(*args, **kwargs)
        self.describe = describe

    def get_help_record(self, ctx):
        from digitrec import models

        self.help = self.describe(models)
        return super().get_help_record(ctx)


def describe_models(models) -> str:
    return f"Architecture: {', '.join(models.REGISTRY)}. [default: {models.DEFAULT_MODEL}]"


def describe_recipes(models) -> str:
    recipes = "; ".join(
        f"{name}: "
        + ", ".join([spec.default_recipe, *(recipe for recipe in spec.recipes if recipe != spec.default_recipe)])
        for name, spec in models.REGISTRY.items()
    )
    return f"Named recipe of the model: the values of every setting not given as a flag ({recipes}; the first is the default)."


def config_options(command):
    """One `digitrec train` flag per TrainConfig field (config.py), with its help, range and default.

    Every flag defaults to None, "not given": the recipe's value then applies. Values are checked by
    TrainConfig itself, so a bad one is the same clear error from the CLI, a file or Python.
    """
    for spec in reversed(fields(TrainConfig)):
        flag = "--" + spec.name.replace("_", "-")
        meta = spec.metadata
        if spec.name in ("model", "recipe"):
            describe = describe_models if spec.name == "model" else describe_recipes
            option = click.option(flag, cls=RegistryOption, describe=describe, default=None)
        elif is_switch(spec):
            option = click.option(
                f"{flag}/--no-{flag[2:]}",
                default=None,
                help=f"{meta['help']} [default: the recipe's, else {'on' if spec.default else 'off'}]",
            )
        else:
            if meta["choices"] is not None:
                kind = click.Choice(meta["choices"])
            else:
                kind = float if spec.type is float else int
            bounds = f" Range {describe_range(spec)}." if meta["low"] is not None else ""
            fallback = f", else {spec.default}" if spec.default is not None else ""
            option = click.option(
                flag, type=kind, default=None, help=f"{meta['help']}{bounds} [default: the recipe's{fallback}]"
            )
        command = option(command)
    return command


@main.command("train")
@config_options
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Continue the stopped or killed run in this directory from its newest checkpoint.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory (default: runs/MODEL-RECIPE-TIMESTAMP); refused if it holds a run or other files.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Let --out replace the run (or other files) there, once the new run is saved; it trains in OUT.new.",
)
@DATA_DIR_OPTION
@click.option("--quiet", is_flag=True, help="No progress bar (log rows still print).")
@click.option("--tensorboard", is_flag=True, help="Also log to TensorBoard (RUN_DIR/tensorboard); needs tensorboard.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check the settings: a few steps on a slice of the data, every step logged; writes nothing.",
)
def train_command(resume, device, out, overwrite, data_dir, quiet, tensorboard, dry_run, **settings):
    """Train a model, print the tutorial's log and the final test accuracy, and save the run.

    Every setting below `--model` and `--recipe` overrides one value of the recipe (see README: the
    recipes live beside each model in models.py). Ctrl-C stops after the current step and saves a
    checkpoint; `--resume RUN_DIR` continues from it. Under `torchrun --nproc-per-node=N -m digitrec
    train ...` the processes train one model together.
    """
    from digitrec import data, models, report, rundir, tasks, train

    settings = {name: value for name, value in settings.items() if value is not None}
    leader = train.World.from_env().leader
    echo = click.echo if leader else (lambda *args, **kwargs: None)
    state = None
    if resume is not None:
        given = [f"--{name.replace('_', '-')}" for name in settings]
        given += [flag for flag, used in (("--out", out), ("--overwrite", overwrite), ("--dry-run", dry_run)) if used]
        if given:
            raise click.UsageError(f"--resume continues a run with its own settings; drop {', '.join(given)}")
        state = rundir.load_checkpoint(resume, warn=lambda line: echo(f"warning: {line}", err=True))
        config = train.config_from_checkpoint(state, resume)
        run_dir = resume
    else:
        if dry_run and (out or overwrite or tensorboard):
            raise click.UsageError(
                "--dry-run writes nothing; drop "
                + ", ".join(
                    flag
                    for flag, given in (("--out", out), ("--overwrite", overwrite), ("--tensorboard", tensorboard))
                    if given
                )
            )
        config = train.resolve_config(
            settings.pop("model", models.DEFAULT_MODEL), settings.pop("recipe", None), **settings
        )
        run_dir = None if dry_run else out or train.default_run_dir(config)
        if leader and run_dir is not None:
            rundir.check_new_run_dir(run_dir, overwrite)
    target = train.pick_device(device)
    mnist = data.load(data_dir)
    if dry_run:
        config, mnist = train.dry_run(config, mnist)
    precision = train.choose_precision(config.precision, target)
    graphed = train.uses_cuda_graph(config, target, train.World.from_env().size)
    echo(
        f"training {config.model} ({config.recipe}) for {config.steps} steps of {config.batch_size} on {target}, "
        f"precision {precision}" + (", CUDA graph" if graphed else "") + (" (dry run)" if dry_run else "")
    )
    result = train.train(
        config,
        mnist,
        target,
        run_dir,
        print_line=click.echo,
        show_progress=not quiet,
        tensorboard=tensorboard,
        resume_from=state,
        overwrite=overwrite,
        draw_curves=report.curves_png,
    )
    if not leader:
        return
    metrics = result.metrics
    measured = tasks.of(config.model).measured_on(len(mnist.test))
    if dry_run:
        echo(
            f"dry run done: {metrics['steps']} steps, test accuracy {100 * metrics['test_accuracy']:.2f}% "
            f"({measured}); nothing written"
        )
        return
    echo(
        f"test accuracy {100 * metrics['test_accuracy']:.2f}% ({measured}; "
        f"validation {100 * metrics['validation_accuracy']:.2f}%, {metrics['train_seconds']:.1f} s of training)"
    )
    echo(f"saved to {run_dir}")


@main.command("calibrate")
@MODEL_OPTION
@DATA_DIR_OPTION
@click.option(
    "--count",
    type=click.IntRange(100, 5000),
    default=2000,
    show_default=True,
    help="Validation digits per person style (nine styles) to fit on.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as one JSON object.")
def calibrate_command(model_path, data_dir, count, as_json):
    """Fit a digit model's confidence on validation digits in every person style, and write it beside the
    model (calibration.json): the temperature, and the unsure threshold (see docs/robustness.md)."""
    from digitrec.calibrate import calibrate

    fitted, path = calibrate(model_path, count, data_dir)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "path": str(path),
                    "temperature": fitted.temperature,
                    "unsure_below": fitted.unsure_below,
                    **fitted.record,
                }
            )
        )
        return
    measured = fitted.record["validation"]
    click.echo(f"{path}: temperature {fitted.temperature:g}, unsure below {fitted.unsure_below:.6f}")
    click.echo(
        f"on {measured['readings']:,} validation readings: accuracy {100 * measured['accuracy']:.2f}%, "
        f"calibration error {100 * measured['ece_uncalibrated']:.2f}% -> {100 * measured['ece']:.2f}%, "
        f"unsure flags {100 * measured['wrong_flagged']:.1f}% of wrong readings and "
        f"{100 * measured['right_flagged']:.1f}% of right ones"
    )


@main.command("evaluate")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@DATA_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--report",
    "with_report",
    is_flag=True,
    help="Also write figures and report.html: into --out, else the run directory evaluated, else "
    "(the bundled models, several PATHS) ./report-NAME in the working directory.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where --report writes.")
def evaluate_command(paths, data_dir, as_json, with_report, out):
    """Test accuracy, per-class accuracy and confusion matrix of a run (default: the bundled model).

    Several PATHS evaluate their ensemble: the average of the models' probabilities.
    """
    from digitrec import checkpoint, data, evaluate, files, rundir
    from digitrec.tasks import DIGITS

    for path in paths:
        if path.suffix.lower() == ".onnx":
            raise ModelError(
                f"{path}: evaluate reads a run directory or its .safetensors weights, not an ONNX export "
                "(an export is checked against its weights on the test set when it is made); evaluate "
                "the run it was exported from, or read images with: digitrec predict --model "
                f"{path} IMAGE..."
            )
    loaded = [checkpoint.load(path, DIGITS) for path in paths or [None]]
    mnist = data.load(data_dir)
    if len(loaded) == 1:
        logits = evaluate.model_logits(loaded[0].model, mnist.test)
    else:
        logits = evaluate.ensemble_logits([run.model for run in loaded], mnist.test)
    results = {
        "weights": [str(run.weights_path) for run in loaded] if len(loaded) > 1 else str(loaded[0].weights_path),
        "model": "+".join(run.config["model"] for run in loaded),
        **evaluate.test_results(logits, mnist.test.labels),
    }
    if with_report:
        from digitrec import report

        run_dir = loaded[0].weights_path.parent
        log = rundir.read_log(run_dir) if len(loaded) == 1 else []
        if out is None:  # a run's own folder, but never the installed package's bundled models
            inside_package = files.BUNDLED_DIR in run_dir.resolve().parents
            if len(loaded) == 1 and not inside_package:
                out = run_dir
            else:
                out = Path("report-" + "+".join(run.weights_path.parent.name for run in loaded))
        html_path = report.write_report(
            out, loaded[0].config, loaded[0].metrics, log, logits, mnist.test.images, mnist.test.labels
        )
        click.echo(f"report written to {html_path}", err=as_json)
    if as_json:
        click.echo(json.dumps(results))
        return
    click.echo(f"{results['model']} from {results['weights']}")
    click.echo(
        f"test accuracy {100 * results['test_accuracy']:.2f}% ({results['errors']} errors in {results['images']} images)"
    )
    click.echo("\nconfusion matrix (rows: true digit, columns: predicted)")
    recall = results["per_class"]["recall"]  # a digit's accuracy is its recall
    echo_table(
        ["true", *map(str, range(10)), "accuracy"],
        [[digit, *row, f"{100 * recall[digit]:.2f}%"] for digit, row in enumerate(results["confusion_matrix"])],
        "r" * 12,
    )


COMPARE_COLUMNS = ("run", "model", "recipe", "steps", "train s", "validation", "test")


@main.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the table as Markdown to this file.",
)
def compare_command(runs, markdown):
    """A table of runs: model, recipe, steps, training seconds, validation and test accuracy."""
    from digitrec.rundir import read_record

    rows = []
    for run_dir in runs:
        config, metrics = read_record(run_dir)
        number = {
            name: float("nan") if metrics.get(name) is None else metrics[name]  # read_record checked the types
            for name in ("train_seconds", "validation_accuracy", "test_accuracy")
        }
        rows.append(
            [
                str(run_dir),
                config.get("model", "?"),
                config.get("recipe", "?"),
                metrics.get("steps", "?"),
                f"{number['train_seconds']:.1f}",
                f"{100 * number['validation_accuracy']:.2f}%",
                f"{100 * number['test_accuracy']:.2f}%",
            ]
        )
    echo_table(list(COMPARE_COLUMNS), rows, "lllrrrr")
    if markdown is not None:
        lines = ["| " + " | ".join(COMPARE_COLUMNS) + " |", "|" + "---|" * len(COMPARE_COLUMNS)]
        lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
        write_atomic(markdown, "\n".join(lines) + "\n")


def echo_table(header: list[str], rows: list[list], justify: str) -> None:
    """Print a plain table through Rich: a header line, then one line per row, columns two spaces apart;
    `justify` has one letter per column, l(eft) or r(ight). Cells are text, never Rich markup (a file may
    be named "[red]x.png"), and nothing wraps, so each row stays one line however long its path."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style=None, show_edge=False)
    for name, side in zip(header, justify, strict=True):
        table.add_column(Text(name), justify="left" if side == "l" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    buffer = io.StringIO()
    Console(file=buffer, width=100_000, color_system=None, highlight=False).print(table)
    click.echo("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


def exit_if_any_failed(rows: list[dict]) -> None:
    """Exit 1, saying how many, when any input's row is an error (after every row has been printed)."""
    failures = sum(1 for row in rows if row["error"])
    if failures:
        click.echo(f"{failures} of {len(rows)} images failed", err=True)
        sys.exit(1)


@main.command("predict")
@click.argument("paths", nargs=-1, required=True)
@MODEL_OPTION
@JSON_LINES_OPTION
@CSV_OPTION
@click.option(
    "--show-preprocessed",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Save the 28x28 image the model saw for each input into this folder.",
)
@click.option("--top", type=click.IntRange(1, 10), default=1, show_default=True, help="Show the K likeliest digits.")
@job_options
def predict_command(paths, model_path, as_json, csv_path, show_preprocessed, top, **job):
    """Recognize the digit in each image (files, folders searched recursively, 'globs', a .txt list of
    paths, - for stdin)."""
    from digitrec.preprocess import to_png
    from digitrec.recognizer import Recognizer
    from digitrec.rows import prediction_row

    recognizer = Recognizer.load(model_path)
    inputs = expand_inputs(paths, sys.stdin.buffer)
    if not inputs:
        raise click.UsageError("no images found in the given folders")
    if job_wanted(job, as_json=as_json, csv=csv_path, show_preprocessed=show_preprocessed, top=top > 1):
        return run_job("predict", inputs, recognizer, model_path, None, **job)
    results, progress = results_with_progress("predict", recognizer, inputs)
    rows = [prediction_row(name, result) for (name, _), result in zip(inputs, results)]
    previews: set[str] = set()
    for (name, _), result in zip(inputs, results):
        if show_preprocessed is not None and not isinstance(result, ImageError):
            write_atomic(show_preprocessed / preview_name(name, previews), to_png(result.preprocessed))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        echo_summary(progress)
    else:
        lines = []
        for row, result in zip(rows, results):
            if row["error"]:
                lines.append([row["path"], "", "", f"error: {row['error']}"])
                continue
            others = "  ".join(f"{d}:{100 * p:.1f}%" for d, p in result.top(top)[1:])
            flag = " unsure" if row["unsure"] else ""
            lines.append([row["path"], row["digit"], f"{100 * row['confidence']:.1f}%{flag}", others])
        echo_table(["image", "digit", "confidence", "others" if top > 1 else ""], lines, "lrrl")
    if csv_path is not None:
        write_csv(
            csv_path,
            ["path", "digit", "confidence", "unsure", *(f"p{d}" for d in range(10)), "error"],
            [
                [
                    row["path"],
                    row["digit"],
                    row["confidence"],
                    row["unsure"],
                    *(row["probabilities"] or [""] * 10),
                    row["error"] or "",
                ]
                for row in rows
            ],
        )
    exit_if_any_failed(rows)


@main.command("read")
@click.argument("paths", nargs=-1, required=True)
@MODEL_OPTION
@READER_OPTION
@JSON_LINES_OPTION
@CSV_OPTION
@click.option(
    "--show-segments",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Save each input with each digit's box and reading drawn on it into this folder.",
)
@job_options
def read_command(paths, model_path, reader_path, as_json, csv_path, show_segments, **job):
    """Read the whole number written in each image, e.g. 2026 (files, folders searched recursively, 'globs',
    a .txt list of paths, - for stdin).

    The number reader reads the digits; the digit model (--model) reads again each digit that stands apart."""
    from digitrec import runtime
    from digitrec.recognizer import Recognizer
    from digitrec.rows import reading_row
    from digitrec.tasks import NUMBERS

    recognizer = Recognizer.load(model_path)
    reader = runtime.load(reader_path, NUMBERS)  # now: a bad reader is one error, not one per image
    inputs = expand_inputs(paths, sys.stdin.buffer)
    if not inputs:
        raise click.UsageError("no images found in the given folders")
    if job_wanted(job, as_json=as_json, csv=csv_path, show_segments=show_segments):
        return run_job("read", inputs, recognizer, model_path, reader_path, reader=reader, **job)
    results, progress = results_with_progress("read", recognizer, inputs, reader)
    rows = [reading_row(name, result) for (name, _), result in zip(inputs, results)]
    previews: set[str] = set()
    for (name, source), result in zip(inputs, results):
        if show_segments is not None and not isinstance(result, ImageError):
            from digitrec.reading import draw_segments

            try:
                show_segments.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise OutputError(
                    f"{show_segments}: cannot create the folder for --show-segments ({error.strerror})", error.strerror
                ) from None
            write_atomic(show_segments / preview_name(name, previews), draw_segments(source, result))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        echo_summary(progress)
    else:
        lines = []
        for row in rows:
            if row["error"]:
                lines.append([row["path"], "", "", f"error: {row['error']}"])
                continue
            digits = " ".join(
                f"{d['digit']}:{100 * d['confidence']:.0f}%{'?' if d['unsure'] else ''}" for d in row["digits"]
            )
            flag = " unsure" if row["unsure"] else ""
            lines.append([row["path"], row["text"], f"{100 * row['confidence']:.1f}%", digits + flag])
        echo_table(["image", "number", "confidence", "digits"], lines, "llrl")
    if csv_path is not None:
        write_csv(
            csv_path,
            ["path", "text", "confidence", "unsure", "digit_confidences", "boxes", "error"],
            [
                [
                    row["path"],
                    row["text"] or "",
                    row["confidence"] or "",
                    row["unsure"] if row["digits"] else "",
                    " ".join(f"{d['confidence']:.4f}" for d in row["digits"] or []),
                    " ".join("{},{},{},{}".format(*d["box"]) for d in row["digits"] or []),
                    row["error"] or "",
                ]
                for row in rows
            ],
        )
    exit_if_any_failed(rows)


def job_wanted(job: dict, as_json: bool, **extras) -> bool:
    """Whether `predict`/`read` runs as a job (scale.run_job: --out or --engine ray); refuses the flags that
    only the printed run has, and the Ray flags without the Ray engine."""
    ray_only = [name for name in ("address", "batch_size", "actors") if job[name] is not None]
    if job["engine"] != "ray" and ray_only:
        raise click.UsageError(
            ", ".join(f"--{name.replace('_', '-')}" for name in ray_only) + ": only with --engine ray"
        )
    if job["overwrite"] and job["out"] is None:
        raise click.UsageError("--overwrite applies to --out")
    if job["out"] is None and job["engine"] == "local":
        return False
    given = [name for name, value in extras.items() if value]
    if given:
        raise click.UsageError(
            ", ".join(f"--{name.replace('_', '-')}" for name in given)
            + ": only for rows printed here; with --out or --engine ray, leave them out"
        )
    if job["out"] is not None and as_json:
        raise click.UsageError("--json prints the rows; --out writes them: give one")
    return True


def run_job(
    task,
    inputs,
    recognizer,
    model_path,
    reader_path,
    *,
    engine,
    out,
    overwrite,
    address,
    batch_size,
    actors,
    reader=None,
):
    """Rows into --out (JSON lines on stdout without it), progress and a summary on stderr; exit 1 when
    any row of the output is an error, as for printed rows."""
    from digitrec import scale

    summary = scale.run_job(
        task,
        inputs,
        recognizer,
        reader=reader,
        out=out,
        engine=engine,
        model_path=model_path,
        reader_path=reader_path,
        overwrite=overwrite,
        batch_size=batch_size,
        actors=actors,
        address=address,
    )
    click.echo(scale.describe(summary, out), err=True)
    if summary.total_errors:
        click.echo(f"{summary.total_errors} of {summary.written + summary.skipped} images failed", err=True)
        sys.exit(1)


def results_with_progress(task: str, recognizer, inputs: list, reader=None) -> tuple[list, object]:
    """`rows.results_of` over `inputs` in this process, with the progress line on stderr while it runs."""
    from digitrec import scale
    from digitrec.rows import results_of

    progress = scale.Progress(len(inputs))
    results = []
    for chunk in scale.local_chunks(task, inputs):
        chunk_results = results_of(task, recognizer, chunk, reader=reader)
        results += chunk_results
        progress.update(len(chunk), sum(isinstance(result, ImageError) for result in chunk_results))
    progress.clear()
    return results, progress


def echo_summary(progress) -> None:
    """After rows printed as JSON lines, the job's summary line, on stderr when it is a terminal (`--json >
    rows.jsonl`); a script reading both streams gets the rows and the failure count alone, as before."""
    from digitrec import scale

    if progress.live:
        click.echo(
            scale.describe(
                scale.Summary(
                    written=progress.done,
                    errors=progress.errors,
                    skipped=0,
                    total_errors=progress.errors,
                    seconds=progress.seconds(),
                    nodes={},
                ),
                None,
            ),
            err=True,
        )


@main.command("explain")
@click.argument("paths", nargs=-1, required=True)
@MODEL_OPTION
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder for the pictures, one NAME.explain.png per image.",
)
def explain_command(paths, model_path, out):
    """Show what the model computed for each image: the 28x28 input, the saliency of its answer (red: ink
    for it, blue: against), the ten probabilities, each convolution stage's feature maps and the first
    layer's filters (softmax: its ten weight templates), as one PNG per image."""
    from digitrec import explain
    from digitrec.recognizer import Recognizer

    recognizer = Recognizer.load(model_path)
    inputs = expand_inputs(paths, sys.stdin.buffer)
    if not inputs:
        raise click.UsageError("no images found in the given folders")
    failures = 0
    pictures: set[str] = set()
    for name, source in inputs:
        try:
            if isinstance(source, ImageError):
                raise source
            result = explain.explain(recognizer, source, name)
        except ImageError as error:
            click.echo(f"{name}  error: {error}")
            failures += 1
            continue
        buffer = io.BytesIO()
        explain.sheet(result, name).save(buffer, format="PNG")
        path = out / Path(preview_name(name, pictures)).with_suffix(".explain.png")  # seven.png.explain.png
        write_atomic(path, buffer.getvalue())
        prediction = result.prediction
        unsure = " unsure" if prediction.unsure else ""
        click.echo(f"{name}  {prediction.digit}  {100 * prediction.confidence:.1f}%{unsure}  -> {path}")
    if failures:
        click.echo(f"{failures} of {len(inputs)} images failed", err=True)
        sys.exit(1)


@main.command("export")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--format",
    type=click.Choice(["onnx"]),
    default="onnx",
    show_default=True,
    expose_value=False,
    help="The export format (ONNX is the only one).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The file to write.")
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    help="Write an int8 copy (logits only; about twice as fast in batches), its ranges calibrated on training "
    "digits; refused if it loses more than 0.05 points of test accuracy.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing --out file (never one of the source run's own files)."
)
@DATA_DIR_OPTION
def export_command(path, out, quantize, overwrite, data_dir):
    """Export a model (default: the bundled one) to ONNX, checked against onnxruntime on the test set (a number
    reader: on strings of test digits)."""
    from digitrec import data, deploy
    from digitrec.quantize import TEST_POINTS

    deploy.check_export_out(path, out, overwrite)
    exported = deploy.export(path, out, data.load(data_dir), quantize)
    parity = exported.parity
    if "strings" in parity:
        same = f"the same reading of {parity['same_readings']}/{parity['strings']} strings of test digits"
    else:
        same = f"the same digit on {parity['same_digits']}/{parity['images']} test images"
    click.echo(
        f"{'checked' if quantize else f'wrote {out}'}: onnxruntime gives {same}, largest logit difference "
        f"{parity['max_logit_difference']:.2e} (limit {deploy.PARITY_TOLERANCE:g})"
    )
    if exported.quantized:
        test = exported.quantized
        click.echo(
            f"wrote {out}: int8, test accuracy {100 * test['int8']:.2f} % against the float model's "
            f"{100 * test['float']:.2f} % (at most {TEST_POINTS:g} points lower allowed)"
        )
    if exported.calibration:
        click.echo(f"wrote {exported.calibration}: the model's calibration (its confidences and unsure threshold)")


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0 exposes it).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@MODEL_OPTION
@READER_OPTION
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Server processes, each with its own copy of the model (one per core serves most; training needs 1).",
)
@click.option(
    "--runs",
    "runs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="Folder of the runs the page lists and trains.",
)
@click.option(
    "--allow-training",
    is_flag=True,
    help="Offer training from the page on a non-loopback --host too (anyone who reaches it can use the CPU).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="A name the server answers to besides IP addresses and localhost (the Host header), e.g. "
    "mybox.local; repeat for more. Other names are refused, so a web page on a rebound DNS name "
    "cannot reach the server.",
)
@click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The corrections database the page stores to (default: $DIGITREC_DB, else the user's data folder).",
)
def serve_command(host, port, model_path, reader_path, workers, runs_dir, allow_training, allowed_hosts, db_path):
    """Serve the drawing page at / and the JSON API at /api (documented at /docs)."""
    import uvicorn

    from digitrec.web.app import MODEL_VARIABLE, READER_VARIABLE, TRAINING_VARIABLE, serving_app
    from digitrec.web.server import uvicorn_settings

    os.environ[MODEL_VARIABLE] = str(model_path or "")
    os.environ[READER_VARIABLE] = str(reader_path or "")
    os.environ[TRAINING_VARIABLE] = json.dumps(
        {
            "runs_dir": str(runs_dir),
            "host": host,
            "allow_training": allow_training,
            "workers": workers,
            "allowed_hosts": list(allowed_hosts),
            "corrections_db": str(db_path) if db_path else None,
        }
    )
    app = serving_app()  # loads the model here first, so a bad one is one clear error, not one per worker
    click.echo(f"digitrec: open http://{host}:{port}/ (API docs at /docs)")
    # several workers are started by uvicorn from an import string, each building its own app
    uvicorn.run(
        app if workers == 1 else "digitrec.web:serving_app",
        factory=workers > 1,
        workers=workers,
        host=host,
        port=port,
        log_level="warning",
        **uvicorn_settings(),
    )


# ---- teach: corrections and the personal model (corrections.py, teach.py, personal.py)

DB_OPTION = click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The corrections database (default: $DIGITREC_DB, else corrections.sqlite3 in the user's data folder).",
)


@main.group("teach", cls=Commands)
def teach_group():
    """Teach digitrec your handwriting: store corrections, learn a personal model from them."""


@teach_group.command("add")
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--label",
    type=click.IntRange(0, 9),
    default=None,
    help="The right digit of every image given (without it: folders whose subfolders 0..9 hold images).",
)
@MODEL_OPTION
@DB_OPTION
def teach_add(paths, label, model_path, db_path):
    """Store images of digits with their right label (IMAGE... --label D), or FOLDER whose subfolders 0..9 hold them."""
    from digitrec import teach
    from digitrec.corrections import Store

    labelled = []
    if label is not None:
        labelled = [(name, source, label) for name, source in expand_inputs(paths, sys.stdin.buffer)]
        source = "cli"
    else:
        for given in paths:
            folders = [Path(given, str(digit)) for digit in range(10)]
            if given == "-" or not Path(given).is_dir() or not any(folder.is_dir() for folder in folders):
                raise click.UsageError(
                    f"{given}: give --label D for images, or a folder whose subfolders 0..9 hold images"
                )
            for digit, folder in enumerate(folders):
                if folder.is_dir():
                    labelled += [(name, found, digit) for name, found in expand_inputs((str(folder),))]
        source = "import"
    from digitrec.recognizer import Recognizer

    store = Store(db_path)
    store.count()  # an unusable database is one error before any image is read
    added, failed = teach.add_images(store, Recognizer.load(model_path), labelled, source)
    for name, identifier, correction in added:
        click.echo(f"added {identifier}: {name} is {correction.label} (the model read {correction.answer})")
    for error in failed:
        click.echo(f"error: {error}", err=True)
    click.echo(f"{len(added)} correction(s) added to {store.path}")
    if failed:
        click.echo(f"{len(failed)} of {len(labelled)} images failed", err=True)
        sys.exit(1)


@teach_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per correction.")
@DB_OPTION
def teach_list(as_json, db_path):
    """List the stored corrections, oldest first."""
    from digitrec.corrections import Store

    store = Store(db_path)
    corrections = [correction.summary() for correction in store.all()]
    if as_json:
        for correction in corrections:
            click.echo(json.dumps(correction))
        return
    click.echo(f"{len(corrections)} correction(s) in {store.path}")
    if corrections:
        click.echo(f"{'id':>6} {'label':>5} {'read':>5}  {'source':<7} {'created':<26} model")
    for c in corrections:
        read = "-" if c["answer"] is None else c["answer"]
        click.echo(f"{c['id']:>6} {c['label']:>5} {read!s:>5}  {c['source']:<7} {c['created']:<26} {c['model'] or '-'}")


@teach_group.command("remove")
@click.argument("ids", nargs=-1, required=True, type=click.IntRange(min=1))
@DB_OPTION
def teach_remove(ids, db_path):
    """Remove corrections by id (all or none: an unknown id removes nothing)."""
    from digitrec.corrections import Store

    store = Store(db_path)
    store.remove(list(dict.fromkeys(ids)))
    click.echo(f"removed {len(set(ids))} correction(s) from {store.path}")


@teach_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@DB_OPTION
def teach_export(directory, db_path):
    """Write every correction's image as DIRECTORY/LABEL/ID.png (which `digitrec teach add DIRECTORY` reads back)."""
    from digitrec import teach
    from digitrec.corrections import Store

    count = teach.export(Store(db_path), directory)
    click.echo(f"wrote {count} image(s) to {directory}")


@teach_group.command("learn")
@click.option(
    "--from",
    "start_from",
    type=click.Path(path_type=Path),
    default=None,
    help="The model to start from: a run directory or .safetensors (default: the bundled default).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory of the personal model (default: `personal` beside the database); a finished run "
    "there is replaced once the new one is saved.",
)
@click.option("--steps", type=click.IntRange(1, 100_000), default=None, help="Override the personal recipe's steps.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None, help="Seed for the batches and variations.")
@click.option(
    "--holdout/--no-holdout",
    default=True,
    show_default=True,
    help="Measure on a held-out share of the corrections first (a second, shorter-lived run).",
)
@DB_OPTION
@DATA_DIR_OPTION
@click.option("--quiet", is_flag=True, help="No progress bar (log rows still print).")
def teach_learn(start_from, out, steps, seed, holdout, db_path, data_dir, quiet):
    """Learn a personal model from the stored corrections and save it as an ordinary run folder.

    It starts from --from's weights and takes the personal recipe's steps (models.py), mixing your
    corrections with replayed MNIST training digits; then prints, before and after, the accuracy on
    held-out corrections and on the MNIST test set. Use it with --model RUN (predict, serve, evaluate,
    explain, export). Killed halfway, the previous personal model and every correction are kept.
    """
    from digitrec import personal, report
    from digitrec.corrections import Store

    learned = personal.learn(
        Store(db_path),
        start_from,
        out,
        data_dir,
        print_line=click.echo,
        show_progress=not quiet,
        draw_curves=report.curves_png,
        holdout=holdout,
        steps=steps,
        seed=seed,
    )
    click.echo(
        f"learned {learned.corrections} correction(s) in {learned.train_seconds:.1f} s of training; "
        f"saved to {learned.run_dir}"
    )
    if learned.held_out:
        click.echo(
            f"held-out corrections ({learned.held_out}: {personal.HOLDOUT_SHARE:.0%} of each digit's, drawn at "
            f"random, learned without them): {100 * learned.held_out_before:.2f}% before, "
            f"{100 * learned.held_out_after:.2f}% after"
        )
    elif not holdout:
        click.echo("held-out corrections: not measured (--no-holdout)")
    else:
        click.echo(
            f"held-out corrections: none (too few to hold any out: a digit needs {math.ceil(1 / personal.HOLDOUT_SHARE)})"
        )
    click.echo(
        f"MNIST test set (10,000 images): {100 * learned.test_before:.2f}% before, "
        f"{100 * learned.test_after:.2f}% after"
    )
    click.echo(f"use it: digitrec predict --model {learned.run_dir} IMAGE, or digitrec serve --model {learned.run_dir}")


if __name__ == "__main__":
    sys.exit(main())
