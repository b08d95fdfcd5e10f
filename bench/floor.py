"""The physical floor of a `fast` training run on this CPU: its FLOPs over torch's peak matmul FLOP/s.

Counts the FLOPs of one training step (forward and backward) with torch's FlopCounterMode, scales them
to an epoch of 55,000 images and to the recipe's own number of images, and divides by the best rate of
a large float32 matmul (median of repeats, after a warm-up).

    python bench/floor.py [--recipe quick]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from digitrec import models, train


def matmul_flops_per_second(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - started))
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="quick")
    args = parser.parse_args()
    config = train.resolve_config("fast", args.recipe)
    model = models.create("fast", width=config.width)
    images, labels = torch.rand(config.batch_size, 1, 28, 28), torch.randint(0, 10, (config.batch_size,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), labels).backward()
    per_image = counter.get_total_flops() / config.batch_size
    peak = matmul_flops_per_second()
    epoch = per_image * 55000
    recipe = per_image * config.batch_size * config.steps
    print(f"fast ({args.recipe}, width {config.width}): {per_image / 1e6:.1f} MFLOP per training image; "
          f"epoch {epoch / 1e12:.2f} TFLOP, recipe {recipe / 1e12:.2f} TFLOP")
    print(f"peak float32 matmul on {torch.get_num_threads()} threads: {peak / 1e9:.0f} GFLOP/s")
    print(f"floor: {epoch / peak:.1f} s per epoch, {recipe / peak:.1f} s for the recipe's {config.steps} steps")


if __name__ == "__main__":
    main()
