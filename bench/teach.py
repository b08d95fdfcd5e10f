"""How much a personal model learns from K corrections per digit, and what it forgets: bench for issue 22.

Writers the bundled default has never seen:
  uci        scikit-learn's `load_digits` (UCI optical digits: 43 writers, 1,797 digits of 8x8, 0..16). Each
             is upscaled 10x to 80x80 with bicubic interpolation (values / 16, white ink on black) and framed
             as `preprocess` frames any image (preprocess.frame: cropped, longest side 20 px, centred by
             mass in 28x28). Measuring only: nothing is chosen on it.
  synthetic  one "writer" of our own: MNIST test digits written in one consistent style, slanted (shear 0.5)
             and narrow (70 % width), then framed the same way. The default reads 95.5 % of them.
  synthetic-validation  the same style applied to the 5,000 MNIST validation digits: what the personal
             recipe's settings were chosen on (with MNIST validation accuracy).

For each K, `--draws` random draws of K corrections per digit (seeded by draw number) are learned with the
personal recipe from the bundled default; the accuracy on the writer's other digits is measured before
and after, and the MNIST test accuracy after (validation accuracy for synthetic-validation).

    OMP_NUM_THREADS=2 python bench/teach.py --writer uci --k 1 5 10 20 --draws 3
"""

import argparse
import os
import time
from dataclasses import asdict, replace

import numpy as np
import torch
from PIL import Image

from digitrec import checkpoint, data, personal, train
from digitrec.preprocess import frame

SHEAR, WIDTH = 0.5, 0.7  # the synthetic writer's slant (x shift per unit of height) and relative width


def uci_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()

    def upscaled(pixels: np.ndarray) -> np.ndarray:
        image = Image.fromarray((pixels / 16).astype(np.float32), mode="F").resize((80, 80), Image.Resampling.BICUBIC)
        return frame(np.clip(np.asarray(image, np.float32), 0, 1))

    return np.stack([upscaled(pixels) for pixels in digits.images]), digits.target.astype(np.int64)


def slanted(image: np.ndarray) -> np.ndarray:
    """One MNIST digit (28, 28) in the synthetic writer's style, framed again."""
    side = 112
    big = Image.fromarray(image, mode="F").resize((side, side), Image.Resampling.BILINEAR)
    stretch = 1 / WIDTH  # output x -> input x: (x - c) / width + c + shear * (y - c)
    centre = side / 2
    coefficients = (stretch, SHEAR * stretch, centre - stretch * centre - SHEAR * stretch * centre, 0, 1, 0)
    ink = np.clip(
        np.asarray(
            big.transform((side, side), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR),
            np.float32,
        ),
        0,
        1,
    )
    return frame(ink)


def synthetic_digits(split: data.Split) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([slanted(image) for image in split.images[:, 0].numpy()]), split.labels.numpy()


def draw(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A mask of k digits of each class, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for digit in range(10):
        mask[rng.choice(np.flatnonzero(labels == digit), k, replace=False)] = True
    return mask


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    split = personal.as_split(images, labels)
    return personal.accuracy(model.cpu(), split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writer", choices=("uci", "synthetic", "synthetic-validation"), default="uci")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 10, 20], help="corrections per digit")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="override the personal recipe's steps")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="measure on the writer's first N digits only")
    parser.add_argument("--device", default="cpu", help="cpu, cuda (the accuracies; seconds then are the GPU's)")
    parser.add_argument(
        "--share",
        type=float,
        default=None,
        help="corrections' share of a batch (default: the recipe's, personal.correction_share)",
    )
    arguments = parser.parse_args()

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    device = train.pick_device(arguments.device)
    mnist = data.load()
    loaded = checkpoint.load(None)
    start = {name: tensor.clone() for name, tensor in loaded.model.state_dict().items()}
    config = personal.personal_config(
        loaded.config, steps=arguments.steps, lr=arguments.lr, batch_size=arguments.batch_size
    )
    config = replace(config, eval_every=config.steps)  # validation once, at the end: the runs are measured here
    if arguments.writer == "uci":
        images, labels = uci_digits()
    elif arguments.writer == "synthetic":
        images, labels = synthetic_digits(mnist.test)
    else:
        images, labels = synthetic_digits(
            data.Split(mnist.validation.images[: arguments.limit], mnist.validation.labels[: arguments.limit])
        )
    images, labels = images[: arguments.limit], labels[: arguments.limit]
    before_all = accuracy(loaded.model, images, labels)
    print(f"writer {arguments.writer}: {len(labels)} digits, the default reads {100 * before_all:.2f} %")
    recipe = {key: value for key, value in asdict(config).items() if key in ("steps", "batch_size", "lr")}
    print(f"recipe: {recipe}, share {arguments.share}; CPU threads {torch.get_num_threads()}")
    print(f"{'K':>3} {'draw':>4} {'before':>8} {'after':>8} {'mnist':>8} {'seconds':>8}")
    for k in arguments.k:
        afters, seconds = [], []
        for seed in range(arguments.draws):
            chosen = draw(labels, k, seed)
            rest_images, rest_labels = images[~chosen], labels[~chosen]
            before = accuracy(loaded.model, rest_images, rest_labels)
            started = time.perf_counter()
            result = personal.learn_arrays(
                config, mnist, start, images[chosen], labels[chosen], arguments.share, device
            )
            elapsed = time.perf_counter() - started  # includes the final MNIST test evaluation (finish)
            after = accuracy(result.model, rest_images, rest_labels)
            kept = result.metrics[
                "validation_accuracy" if arguments.writer == "synthetic-validation" else "test_accuracy"
            ]
            afters.append(after)
            seconds.append(elapsed)
            print(
                f"{k:>3} {seed:>4} {100 * before:>7.2f}% {100 * after:>7.2f}% {100 * kept:>7.2f}% {elapsed:>8.1f}",
                flush=True,
            )
        print(f"{k:>3} mean {'':>8} {100 * np.mean(afters):>7.2f}% {'':>8} {np.mean(seconds):>8.1f}", flush=True)


if __name__ == "__main__":
    main()
