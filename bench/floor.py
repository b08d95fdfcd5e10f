"""How close a `fast` recipe trains to this CPU's physical floor, in each precision.

The floor of a run is its FLOPs over torch's peak matmul FLOP/s in that precision: FLOPs of one training
step (forward and backward, torch's FlopCounterMode; batch norm, pooling and the optimiser are not
counted) scaled to the recipe's images, over the best rate of a large matmul (median of repeats, after
a warm-up) in float32 and in bfloat16. Then the recipe itself is trained in each precision, the two
alternating (no evaluation until its end), and its median training seconds are set against that floor.

    python bench/floor.py [--recipe quick] [--repeats 3]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from digitrec import data, models, provenance, train

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_flops_per_second(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
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
    parser.add_argument("--repeats", type=int, default=3, help="training runs per precision (the median is shown)")
    args = parser.parse_args()
    config = train.resolve_config("fast", args.recipe)
    model = models.create("fast", width=config.width, pool_first=config.pool_first)
    images, labels = torch.rand(config.batch_size, 1, 28, 28), torch.randint(0, 10, (config.batch_size,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), labels).backward()
    per_image = counter.get_total_flops() / config.batch_size
    recipe = per_image * config.batch_size * config.steps
    cpu_name, _ = provenance.cpu()
    print(
        f"CPU: {cpu_name}, {torch.get_num_threads()} threads; --precision auto chooses "
        f"{train.choose_precision('auto', torch.device('cpu'))}"
    )
    print(
        f"fast {args.recipe} (width {config.width}, pool_first {config.pool_first}): {per_image / 1e6:.1f} MFLOP per "
        f"training image, epoch {per_image * 55000 / 1e12:.2f} TFLOP, the recipe's {config.steps} steps "
        f"{recipe / 1e12:.2f} TFLOP"
    )
    mnist = data.load()
    peaks = {precision: matmul_flops_per_second(dtype) for precision, dtype in DTYPES.items()}
    seconds = {precision: [] for precision in DTYPES}
    for _ in range(args.repeats):  # the precisions alternate, so that both see the same load
        for precision in DTYPES:
            run = train.resolve_config("fast", args.recipe, precision=precision, eval_every=config.steps)
            result = train.train(run, mnist, torch.device("cpu"), show_progress=False, print_line=lambda _: None)
            seconds[precision].append(result.metrics["train_seconds"])
    print(f"{'precision':<10}{'peak matmul':>14}{'floor':>9}{'recipe (median)':>17}{'x floor':>9}")
    for precision, peak in peaks.items():
        floor, measured = recipe / peak, statistics.median(seconds[precision])
        print(f"{precision:<10}{peak / 1e9:>8.0f} GFLOP/s{floor:>8.2f}s{measured:>16.2f}s{measured / floor:>8.1f}x")


if __name__ == "__main__":
    main()
