"""The digits task: one handwritten digit per (B, 1, 28, 28) image in 0..1 -> (B, 10) logits.

Trains on MNIST's images (augmented as the config asks) with cross-entropy; measured by the share of
images read right; exported with the Inside view's extra outputs (`models.inside_outputs`) and checked
on the check images. Imports torch only inside the training and export steps.
"""

from collections.abc import Callable

import numpy as np

from digitrec.errors import ConfigError, ModelError
from digitrec.files import BUNDLED_MODEL, BUNDLED_ONNX
from digitrec.shapes import CLASSES
from digitrec.tasks.base import Task, refuse_mismatch


class DigitTask(Task):
    cannot_run = "the model cannot run on a batch of images"
    bad_probe = f"the model's logits for blank images are not {CLASSES} finite numbers each"

    def check_signature(self, session, where: str) -> None:
        """One float input `images` of shape (batch, 1, 28, 28) and `logits` of shape (batch, 10); other
        outputs (the Inside view's activations) may come beside it."""
        inputs, outputs = session.get_inputs(), {output.name: output for output in session.get_outputs()}
        found = ", ".join(f"{node.name} {node.type} {node.shape}" for node in inputs)
        if (
            len(inputs) != 1
            or inputs[0].name != "images"
            or inputs[0].type != "tensor(float)"
            or inputs[0].shape[1:] != [1, 28, 28]
        ):
            raise ModelError(
                f"{where}: not a digitrec model: expected one input 'images' of float (batch, 1, 28, 28), found {found}"
            )
        logits = outputs.get("logits")
        if logits is None or logits.type != "tensor(float)" or len(logits.shape) != 2 or logits.shape[1] != CLASSES:
            found = ", ".join(f"{node.name} {node.type} {node.shape}" for node in outputs.values())
            raise ModelError(
                f"{where}: not a digitrec model: expected an output 'logits' of float (batch, {CLASSES}), found {found}"
            )

    single_digits = True
    graphable = True  # (B, 1, 28, 28) images picked by index from the split on the device: one shape every step

    def check_config(self, config) -> None:
        if config.strings != "plain" or config.string_workers:
            raise ConfigError(
                f"model {config.model!r} reads digits: --strings and --string-workers apply to the number reader only"
            )

    def batches(self, split, batch_size, seed, rank, world_size, start, config=None):
        from digitrec import data

        return data.batches(split, batch_size, seed, rank, world_size, start=start)

    def batch_indices(self, split, batch_size, seed, rank, world_size, start):
        from digitrec import data

        return data.batch_indices(split, batch_size, seed, rank, world_size, start=start)

    def indexed_batch(self, split, indices) -> tuple:
        return split.images[indices], split.labels[indices]

    def augmentation_draws(self, generator, count, config):
        """One column for the stroke (if varied), four for the rotation, zoom and shift (if any), those of the
        elastic distortion (if any): see `data.augment`; then those of the person-style variation (augment.columns)."""
        from digitrec import augment, data

        columns = geometric_columns(config) + augment.columns(config)
        return data.uniform_draws(generator, count, columns) if columns else None

    def augment(self, images, draws, config):
        """`data.augment` (stroke, affine, elastic) with its columns of `draws`, then the person-style variation
        (augment.py) with the rest."""
        from digitrec import augment, data

        if draws is None:
            return images
        geometric = geometric_columns(config)
        images = data.augment(
            images,
            draws[:, :geometric],
            config.augment_stroke,
            config.augment_degrees,
            config.augment_shift,
            config.augment_scale,
            config.augment_elastic,
        )
        return augment.person_style(images, draws[:, geometric:], config) if config.uses_person_style else images

    def loss(self, logits, batch, config) -> tuple[object, Callable[[], float]]:
        import torch.nn.functional as F

        from digitrec import evaluate

        labels = batch[1]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
        return loss, lambda: evaluate.accuracy(logits, labels)

    def accuracy(self, model, split, cache) -> float:
        from digitrec import evaluate, models

        return evaluate.accuracy(models.logits_in_batches(model, split.images), split.labels)

    def export_outputs(self, model, images) -> dict:
        from digitrec import models

        return models.inside_outputs(model, images)

    def measured_on(self, test_images: int) -> str:
        return f"on {test_images:,} images"

    def dynamic_axes(self, names):
        batched = ["images"] + [name for name in names if name == "logits" or name.startswith("activation:")]
        return {name: {0: "batch"} for name in batched}

    def export_parity(self, model, run, check_images, check_labels) -> dict:
        import torch

        from digitrec import models

        expected = models.logits_in_batches(model, torch.from_numpy(check_images)).numpy()
        got = np.concatenate([run(check_images[i : i + 1000]) for i in range(0, len(check_images), 1000)])
        parity = {
            "images": len(check_images),
            "same_digits": int((got.argmax(1) == expected.argmax(1)).sum()),
            "max_logit_difference": float(np.abs(got - expected).max()),
        }
        return refuse_mismatch(parity, parity["same_digits"] == len(check_images))


DIGITS = DigitTask(
    name="digits",
    input_name="images",
    output_name="logits",
    probe_shape=(2, 1, 28, 28),
    probe_answer=(2, CLASSES),
    noun="model",
    bundled_torch=BUNDLED_MODEL,
    bundled_onnx=BUNDLED_ONNX,
    load_hint="give it as --model",
)


def geometric_columns(config) -> int:
    """The draws per image that `data.augment` takes for `config`'s stroke, affine and elastic variation."""
    from digitrec import data

    return data.augmentation_columns(
        config.augment_stroke,
        config.augment_degrees,
        config.augment_shift,
        config.augment_scale,
        config.augment_elastic,
    )
