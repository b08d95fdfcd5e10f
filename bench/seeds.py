"""Test accuracy of a recipe over several seeds: mean ± standard deviation, with training seconds.

    python bench/seeds.py --model fast --recipe quick --seeds 0 1 2 3 4
    python bench/seeds.py --recipe quick --set pool_first=false --set precision=fp32
    python bench/seeds.py --runs runs/fast-full-seed0 runs/fast-full-seed1 runs/fast-full-seed2

The second form summarises finished run directories instead of training.
"""

import argparse
import json
import statistics
from dataclasses import fields

import torch

from digitrec import data, rundir, train
from digitrec.config import TrainConfig


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fast")
    parser.add_argument("--recipe", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting to change, its value as JSON or a bare word: pool_first=false, lr=0.1, precision=fp32",
    )
    parser.add_argument("--runs", nargs="+", default=None, help="summarise these run directories instead")
    args = parser.parse_args()
    overrides = dict(setting(text) for text in args.set)
    unknown = overrides.keys() - {spec.name for spec in fields(TrainConfig)}
    if unknown:
        parser.error(f"unknown settings: {', '.join(sorted(unknown))}")
    if args.runs:
        records = [rundir.read_record(run)[1] for run in args.runs]
    else:
        mnist = data.load()
        records = []
        for seed in args.seeds:
            config = train.resolve_config(args.model, args.recipe, seed=seed, **overrides)
            result = train.train(config, mnist, torch.device("cpu"), show_progress=False, print_line=lambda _: None)
            records.append(result.metrics)
            print(
                f"seed {seed}: test {100 * result.metrics['test_accuracy']:.2f}%  "
                f"validation {100 * result.metrics['validation_accuracy']:.2f}%  {result.metrics['train_seconds']:.1f} s",
                flush=True,
            )
    if overrides:
        print(f"settings changed from the recipe: {overrides}")
    tests = [100 * r["test_accuracy"] for r in records]
    validations = [100 * r["validation_accuracy"] for r in records]
    seconds = [r["train_seconds"] for r in records]
    spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
    print(
        f"{len(records)} runs: test accuracy {statistics.mean(tests):.2f} ± {spread:.2f} %, "
        f"validation {statistics.mean(validations):.2f} %, "
        f"training {statistics.mean(seconds):.1f} s (median {statistics.median(seconds):.1f} s)"
    )


def setting(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value  # a bare word: a name such as fp32


if __name__ == "__main__":
    main()
