"""The `digitrec` command: parses arguments, calls the library, prints results.

Every error that is the input's fault (a `DigitrecError`) becomes one line on stderr and exit status 1;
usage errors are Click's (exit status 2).
"""

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from digitrec import __version__
from digitrec.errors import DigitrecError

DATA_DIR_OPTION = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Directory holding the four MNIST files (default: $DIGITREC_DATA, the bundled copy, the cache).",
)


class Commands(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DigitrecError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=Commands)
@click.version_option(__version__, prog_name="digitrec")
def main():
    """Handwritten-digit recognition: train, evaluate and use MNIST models."""


@main.command("data")
@DATA_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def data_command(data_dir, as_json):
    """Show where MNIST is read from, the split sizes, per-class counts and checksum status."""
    from digitrec import data

    info = data.describe(data_dir)
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"location: {info['directory']}")
    for name, status in info["checksums"].items():
        click.echo(f"  {name:<28} sha256 {status}")
    click.echo(f"{'split':<12}{'images':>8}  " + " ".join(f"{digit:>5}" for digit in range(10)))
    for split_name, split in info["splits"].items():
        counts = " ".join(f"{count:>5}" for count in split["per_class"])
        click.echo(f"{split_name:<12}{split['size']:>8}  {counts}")


@main.command("train")
@click.option("--model", default="fast", show_default=True, help="softmax, cnn or fast.")
@click.option("--recipe", default=None, help="Named recipe (fast: quick or full; others: default).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimisation steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="(Peak) learning rate.")
@click.option("--seed", type=int, default=None, help="Seed for weights, batches and augmentation.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default: runs/MODEL-RECIPE-TIMESTAMP).")
@DATA_DIR_OPTION
@click.option("--quiet", is_flag=True, help="No progress bar (log rows still print).")
def train_command(model, recipe, steps, batch_size, lr, seed, device, out, data_dir, quiet):
    """Train a model, print the tutorial's log and the final test accuracy, and save the run."""
    from digitrec import data, train

    config = train.resolve_config(model, recipe, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    target = train.pick_device(device)
    run_dir = out or train.default_run_dir(config)
    click.echo(f"training {config.model} ({config.recipe}) for {config.steps} steps of {config.batch_size} on {target}")
    result = train.train(config, data.load(data_dir), target, run_dir, print_line=click.echo, show_progress=not quiet)
    metrics = result.metrics
    click.echo(
        f"test accuracy {100 * metrics['test_accuracy']:.2f}% on 10,000 images "
        f"(validation {100 * metrics['validation_accuracy']:.2f}%, {metrics['train_seconds']:.1f} s of training)"
    )
    click.echo(f"saved to {run_dir}")


@main.command("evaluate")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@DATA_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_command(path, data_dir, as_json):
    """Test accuracy, per-class accuracy and confusion matrix of a run (default: the bundled model)."""
    from digitrec import checkpoint, data, evaluate

    loaded = checkpoint.load(path)
    mnist = data.load(data_dir)
    summary = evaluate.summary(evaluate.model_logits(loaded.model, mnist.test), mnist.test.labels)
    summary = {"weights": str(loaded.weights_path), "model": loaded.config["model"], **summary}
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{summary['model']} from {summary['weights']}")
    click.echo(f"test accuracy {100 * summary['test_accuracy']:.2f}% ({summary['errors']} errors in {summary['images']} images)")
    click.echo("\nconfusion matrix (rows: true digit, columns: predicted)")
    click.echo("      " + "".join(f"{digit:>6}" for digit in range(10)) + "  accuracy")
    for digit, row in enumerate(summary["confusion_matrix"]):
        accuracy = summary["per_class"]["accuracy"][digit]
        click.echo(f"{digit:>6}" + "".join(f"{count:>6}" for count in row) + f"  {100 * accuracy:>7.2f}%")


if __name__ == "__main__":
    sys.exit(main())
