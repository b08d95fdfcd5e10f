"""Steps to a validation accuracy: at which step a recipe first reaches it, over seeds, and ms per step.

Trains the recipe, evaluating on the 5,000 validation digits every --every steps (evaluation time is not
counted), and prints for each seed the first step at or above --target, the final validation accuracy
and the median milliseconds per training step. Variants that are experiments, not settings:

    python bench/steps_to_target.py --seeds 0 1 2                       # the quick recipe as it is
    python bench/steps_to_target.py --set lr=0.3 --set warmup_fraction=0.1
    python bench/steps_to_target.py --variant whiten                    # first conv from patch whitening, frozen
    python bench/steps_to_target.py --variant no-affine                 # batch norms without scale and shift

Run it with OMP_NUM_THREADS=1 when the machine is shared, so each run has the same one core.
"""

import argparse
import statistics
import time

import torch
from torch import nn

from digitrec import data, train
from seeds import setting


def whiten_first_conv(training: train.Training, eps: float = 1e-2) -> None:
    """Set the first convolution's filters to the leading eigenvectors of the training images' patches,
    scaled to unit variance (ZCA-style whitening, as airbench does on CIFAR-10), and freeze them."""
    conv = training.model.layers[0][0]
    size = conv.kernel_size[0]
    images = training.mnist.train.images[:5000]
    patches = (
        nn.functional.unfold(images, size, padding=size // 2).transpose(1, 2).reshape(-1, size * size)
    )  # (N*784, k*k)
    patches = patches[patches.abs().sum(1) > 0]  # blank patches say nothing about strokes
    covariance = torch.cov(patches.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    chosen = (
        eigenvectors[:, -conv.out_channels :].T.flip(0)
        / (eigenvalues[-conv.out_channels :].flip(0) + eps).sqrt()[:, None]
    )
    with torch.no_grad():
        conv.weight.copy_(chosen.reshape(conv.weight.shape))
        if training.ema_model is not None:
            training.ema_model.layers[0][0].weight.copy_(conv.weight)
    conv.weight.requires_grad_(False)
    rebuild_optimizer(training)


def drop_affine(training: train.Training) -> None:
    """Batch norms with a fixed scale of 1 and shift of 0."""
    for module in training.model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.requires_grad_(False)
            module.bias.requires_grad_(False)
    rebuild_optimizer(training)


def rebuild_optimizer(training: train.Training) -> None:
    trainable = [parameter for parameter in training.model.parameters() if parameter.requires_grad]
    training.optimizer = train.make_optimizer(training.config, trainable)
    training.scheduler = torch.optim.lr_scheduler.LambdaLR(training.optimizer, train.lr_factor(training.config))


VARIANTS = {"none": None, "whiten": whiten_first_conv, "no-affine": drop_affine}


def run(config, mnist, variant: str, every: int, target: float) -> dict:
    training = train.Training(config, mnist, torch.device("cpu"))
    if VARIANTS[variant] is not None:
        VARIANTS[variant](training)
    reached, step_seconds = None, []
    while not training.done:
        started = time.perf_counter()
        training.advance(every)
        step_seconds.append((time.perf_counter() - started) / every)
        accuracy = training.accuracy(training.mnist.validation)
        if reached is None and accuracy >= target:
            reached = training.step
    return {"reached": reached, "final": accuracy, "ms_per_step": 1000 * statistics.median(step_seconds)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fast")
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--variant", choices=VARIANTS, default="none")
    parser.add_argument("--every", type=int, default=25, help="steps between validation evaluations")
    parser.add_argument("--target", type=float, default=0.99)
    args = parser.parse_args()
    overrides = dict(setting(text) for text in args.set)
    mnist = data.load()
    results = []
    for seed in args.seeds:
        config = train.resolve_config(args.model, args.recipe, seed=seed, **overrides)
        result = run(config, mnist, args.variant, args.every, args.target)
        results.append(result)
        print(
            f"seed {seed}: {args.target:.1%} at step {result['reached']}, final validation {result['final']:.2%}, "
            f"{result['ms_per_step']:.1f} ms/step",
            flush=True,
        )
    steps = [r["reached"] for r in results]
    worst = "never" if None in steps else max(steps)
    print(
        f"{args.variant} {overrides}: worst step to {args.target:.1%}: {worst}; steps {steps}; "
        f"mean final {statistics.mean(r['final'] for r in results):.2%}; "
        f"median {statistics.median(r['ms_per_step'] for r in results):.1f} ms/step ({torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
