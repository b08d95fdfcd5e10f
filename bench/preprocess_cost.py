"""CPU time of `preprocess` per image, this checkout's against another's, in one process (alternated).

CPU time, not wall time, so that other jobs on the machine disturb it less (caches are still shared):

    python bench/preprocess_cost.py --compare-with ../main/src [--count 500] [--rounds 5]
"""

import argparse
import importlib.util
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitrec import data, preprocess


def module_from(source_folder: Path):
    spec = importlib.util.spec_from_file_location("other_preprocess", source_folder / "digitrec" / "preprocess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare-with", type=Path, required=True, help="another checkout's src/ folder")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    digits = (data.load().test.images[: args.count, 0].numpy() * 255).astype(np.uint8)
    files = []
    for digit in digits:  # as bench/predict_throughput.py writes them: 280x280 dark-on-light PNGs
        buffer = io.BytesIO()
        Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR).save(buffer, format="PNG")
        files.append(buffer.getvalue())
    versions = {"other": module_from(args.compare_with.resolve()), "this": preprocess}
    arrays = {name: [module.preprocess(blob) for blob in files] for name, module in versions.items()}
    same = all(np.array_equal(a, b) for a, b in zip(arrays["other"], arrays["this"]))
    cost: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(args.rounds):
        for name, module in versions.items():
            started = time.process_time()
            for blob in files:
                module.preprocess(blob)
            cost[name].append(1000 * (time.process_time() - started) / len(files))
    for name in versions:
        print(
            f"{name}: median {statistics.median(cost[name]):.3f} ms of CPU per image "
            f"(rounds: {', '.join(f'{value:.3f}' for value in cost[name])})"
        )
    print(f"identical arrays on all {len(files)} images: {same}")


if __name__ == "__main__":
    main()
