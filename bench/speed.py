"""Time-to-accuracy and inference speed: the tutorial `cnn` against `fast` (quick recipe), in one process.

Trains each model, evaluating on the test set every N steps only to draw the time-to-accuracy curve
(evaluation time is not counted as training time), then measures inference throughput over the test
set and single-image latency. Prints a table; --json FILE writes the same figures.

    python bench/speed.py                     # cnn stops once it reaches the target
    python bench/speed.py --cnn-steps 20000   # the full tutorial schedule
"""

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from digitrec import data, models, train


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: restart the VmHWM high-water mark


def time_to_accuracy(config, mnist, device, eval_every: int, target: float, stop_at_target: bool) -> dict:
    reset_peak_rss()
    training = train.Training(config, mnist, device)
    seconds, reached, curve = 0.0, None, []
    while not training.done:
        started = time.perf_counter()
        training.advance(eval_every)
        seconds += time.perf_counter() - started
        accuracy = training.accuracy(training.mnist.test)
        curve.append({"step": training.step, "seconds": round(seconds, 3), "test_accuracy": accuracy})
        if reached is None and accuracy >= target:
            reached = {"step": training.step, "seconds": seconds}
            if stop_at_target:
                break
    model = training.evaluated_model.eval()
    return {
        "reached": reached,
        "final_accuracy": curve[-1]["test_accuracy"],
        "steps": training.step,
        "train_seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "curve": curve,
        "model": model,
    }


def inference_speed(model, images: torch.Tensor, repeats: int = 5) -> dict:
    models.logits_in_batches(model, images)  # warm-up
    throughput = []
    for _ in range(repeats):
        started = time.perf_counter()
        models.logits_in_batches(model, images)
        throughput.append(len(images) / (time.perf_counter() - started))
    single = images[:1]
    with torch.inference_mode():
        for _ in range(20):
            model(single)
        latencies = []
        for _ in range(200):
            started = time.perf_counter()
            model(single)
            latencies.append(time.perf_counter() - started)
    return {"images_per_second": statistics.median(throughput), "latency_ms": 1000 * statistics.median(latencies)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.99, help="test accuracy to reach")
    parser.add_argument("--cnn-steps", type=int, default=20000, help="cap on the tutorial cnn's steps")
    parser.add_argument("--cnn-eval-every", type=int, default=250)
    parser.add_argument("--fast-eval-every", type=int, default=25)
    parser.add_argument("--cnn-full", action="store_true", help="keep training the cnn after it reaches the target")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()

    device = train.pick_device(args.device)
    mnist = data.load()
    runs = {
        "cnn": (replace(train.resolve_config("cnn"), steps=args.cnn_steps), args.cnn_eval_every, not args.cnn_full),
        "fast quick": (train.resolve_config("fast", "quick"), args.fast_eval_every, False),
    }
    results = {}
    for name, (config, eval_every, stop) in runs.items():
        print(f"training {name} ({config.steps} steps at most, test set every {eval_every} steps)...", flush=True)
        result = time_to_accuracy(config, mnist, device, eval_every, args.target, stop)
        result.update(inference_speed(result.pop("model").to(device), mnist.test.images.to(device)))
        results[name] = result

    print(f"\ndevice {device}, {torch.get_num_threads()} torch threads, target {100 * args.target:.1f}% test accuracy")
    print(
        f"{'model':<12}{'s to target':>12}{'at step':>9}{'final acc':>11}{'steps':>7}{'peak MB':>9}"
        f"{'img/s':>10}{'1-img ms':>10}"
    )
    for name, r in results.items():
        reached = f"{r['reached']['seconds']:.1f}" if r["reached"] else "never"
        at_step = r["reached"]["step"] if r["reached"] else "-"
        print(
            f"{name:<12}{reached:>12}{at_step:>9}{100 * r['final_accuracy']:>10.2f}%{r['steps']:>7}"
            f"{r['peak_rss_mb']:>9.0f}{r['images_per_second']:>10.0f}{r['latency_ms']:>10.2f}"
        )
    cnn, fast = results["cnn"]["reached"], results["fast quick"]["reached"]
    ratio = cnn["seconds"] / fast["seconds"] if cnn and fast else None
    print(
        f"fast quick reaches the target {ratio:.1f}x sooner than cnn" if ratio else "ratio: a model missed the target"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"device": str(device), "target": args.target, "ratio": ratio, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
