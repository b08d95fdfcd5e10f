"""float32 against bf16 autocast for training on this CPU: what `--precision auto` should choose.

Trains a recipe (default: `fast` quick, 400 steps) in each precision, alternating fp32 and bf16 runs so
that both see the same load, for each seed; prints each run's training seconds (wall clock and CPU time
of this process, which another process's load disturbs less) and test accuracy, then the medians.

    python bench/precision.py [--seeds 0 1] [--repeats 2] [--recipe quick] [--threads N]
"""

import argparse
import os
import statistics
import time
from dataclasses import replace

import torch

from digitrec import data, provenance, train


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fast")
    parser.add_argument("--recipe", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each precision per seed")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # one thread: a loaded machine cannot stall it at OpenMP barriers
    mnist = data.load()
    model_name, flags = provenance.cpu()
    print(
        f"CPU: {model_name}, flags {', '.join(flags)}; "
        f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads; auto chooses {train.choose_precision('auto', torch.device('cpu'))}"
    )
    results: dict[str, list[tuple[float, float, float]]] = {"fp32": [], "bf16": []}
    print(f"{'seed':>4} {'precision':>9} {'wall s':>8} {'cpu s':>8} {'test':>8} {'load':>5}")
    for seed in args.seeds:
        for _ in range(args.repeats):
            for precision in ("fp32", "bf16"):
                config = train.resolve_config(args.model, args.recipe, seed=seed, precision=precision, steps=args.steps)
                config = replace(config, eval_every=config.steps)  # evaluation is not training time
                cpu_started = time.process_time()
                result = train.train(config, mnist, torch.device("cpu"), show_progress=False, print_line=lambda _: None)
                cpu = time.process_time() - cpu_started
                accuracy = result.metrics["test_accuracy"]
                results[precision].append((result.metrics["train_seconds"], cpu, accuracy))
                print(
                    f"{seed:>4} {precision:>9} {result.metrics['train_seconds']:>8.2f} {cpu:>8.2f} "
                    f"{100 * accuracy:>7.2f}% {os.getloadavg()[0]:>5.1f}",
                    flush=True,
                )
    for precision, runs in results.items():
        walls, cpus, accuracies = zip(*runs)
        print(
            f"{precision}: median {statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} s CPU "
            f"(CPU time includes the final evaluation), test {100 * min(accuracies):.2f}-{100 * max(accuracies):.2f}% over {len(runs)} runs"
        )


if __name__ == "__main__":
    main()
