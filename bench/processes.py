"""Does training on several processes pay on this machine? `fast` quick on 1 process vs N under torchrun.

Runs `digitrec train` three ways: one process with one thread, one process with N threads (torch's
default on N cores), and `torchrun --nproc-per-node=N` with one thread per process (DistributedDataParallel
over gloo). Prints each run's training seconds (from its metrics.json, evaluation excluded), the speed-up
over one thread, and the test accuracy.

    python bench/processes.py [--processes 2] [--recipe quick] [--steps N]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def timed_run(label: str, command: list[str], threads: int, run_dir: Path) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command + ["--out", str(run_dir), "--quiet"], env=environment, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"label": label, "seconds": metrics["train_seconds"], "test_accuracy": metrics["test_accuracy"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    train = ["-m", "digitrec", "train", "--model", "fast", "--recipe", args.recipe]
    train += ["--steps", str(args.steps)] if args.steps else []
    n = args.processes
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]
    with tempfile.TemporaryDirectory() as scratch:
        runs = [
            timed_run("1 process, 1 thread", [sys.executable, *train], 1, Path(scratch) / "one"),
            timed_run(f"1 process, {n} threads", [sys.executable, *train], n, Path(scratch) / "threads"),
            timed_run(f"{n} processes (gloo), 1 thread each", torchrun + train, 1, Path(scratch) / "ddp"),
        ]
    print(f"{'training':<36}{'seconds':>9}{'speed-up':>10}{'test accuracy':>15}")
    for run in runs:
        print(
            f"{run['label']:<36}{run['seconds']:>9.1f}{runs[0]['seconds'] / run['seconds']:>9.2f}x"
            f"{100 * run['test_accuracy']:>14.2f}%"
        )


if __name__ == "__main__":
    main()
