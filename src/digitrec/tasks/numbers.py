"""The numbers task: a strip of written digits (B, 1, 32, W) -> (B, 11, W/2) per-column scores over
blank and the ten digits, read by CTC decoding (number_strings.py).

Trains on random strings of training digits (data.string_batches, made as the `strings` setting says,
by `string_workers` processes) with the CTC loss; measured by the
share of whole strings read right, on EVALUATION_STRINGS fixed strings made from a split; an export is
checked on PARITY_STRINGS strings of the check images' digits. Imports torch only inside the training
and export steps.
"""

from collections.abc import Callable

import numpy as np

from digitrec.errors import ConfigError, ModelError
from digitrec.files import BUNDLED_READER, BUNDLED_READER_ONNX
from digitrec.shapes import CLASSES
from digitrec.tasks.base import Task, refuse_mismatch, softmax

EVALUATION_STRINGS = 1000  # a number reader's accuracy: whole strings read right, of this many made from the split
PARITY_STRINGS = 200  # a number reader's export is checked on this many strings of the check images' digits
DIGIT_ONLY = (
    "augment_degrees",
    "augment_shift",
    "augment_scale",
    "augment_stroke",
    "augment_elastic",
    "augment_low_resolution",
    "augment_blur",
    "augment_lighting",
    "augment_paper",
    "label_smoothing",
)


class NumberTask(Task):
    cannot_run = "the reader cannot run on a batch of strips"
    bad_probe = f"the reader's scores for blank strips are not finite (batch, {CLASSES + 1}, width / 2)"
    not_graphable = "the number reader's strips change width from batch to batch"

    def check_signature(self, session, where: str) -> None:
        """One input `strips` and one output `scores`."""
        inputs, outputs = session.get_inputs(), session.get_outputs()
        described = ", ".join(f"{node.name} {node.type} {node.shape}" for node in [*inputs, *outputs])
        if ([node.name for node in inputs], [node.name for node in outputs]) != (["strips"], ["scores"]):
            raise ModelError(
                f"{where}: not a digitrec number reader: expected input 'strips' and output 'scores', found {described}"
            )

    def check_config(self, config) -> None:
        digit_only = [name for name in DIGIT_ONLY if getattr(config, name)]
        if digit_only:  # a reader's strings are varied as they are made (number_strings.py); its loss is CTC
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in digit_only)
            raise ConfigError(f"model {config.model!r} reads whole numbers: {flags} apply to digit models only")
        if config.cuda_graph == "on":  # its strips change width from batch to batch: no one graph fits them
            raise ConfigError(
                f"model {config.model!r} reads whole numbers: --cuda-graph on applies to digit models only"
            )

    def batches(self, split, batch_size, seed, rank, world_size, start, config=None):
        from digitrec import data

        if config is None:
            return data.string_batches(split, batch_size, seed, rank, start=start)
        return data.string_batches(
            split, batch_size, seed, rank, start=start, mixture=config.strings, workers=config.string_workers
        )

    def loss(self, outputs, batch, config) -> tuple[object, Callable[[], float]]:
        import torch.nn.functional as F

        from digitrec import evaluate, number_strings

        columns, digits, lengths = batch[1:]
        scores = outputs.float().log_softmax(1)  # (B, 11, T)
        # zero_infinity: a string too long for its strip's columns adds nothing, instead of an infinite loss
        loss = F.ctc_loss(
            scores.permute(2, 0, 1), digits, columns, lengths, blank=number_strings.BLANK, zero_infinity=True
        )
        return loss, lambda: evaluate.string_accuracy(
            number_strings.texts(scores.detach().exp().cpu().numpy(), columns.numpy()),
            number_strings.truths((digits - 1).cpu().numpy(), lengths.numpy()),
        )

    def accuracy(self, model, split, cache) -> float:
        """Whole strings read right, of EVALUATION_STRINGS fixed strings of `split`'s digits (made once per split)."""
        import torch

        from digitrec import evaluate, models, number_strings

        made = cache.get(id(split.labels))
        if made is None:
            made = number_strings.fixed_set(
                split.images[:, 0].cpu().numpy(), split.labels.cpu().numpy(), EVALUATION_STRINGS
            )
            cache[id(split.labels)] = made
        device = next(model.parameters()).device
        scores = models.logits_in_batches(model, torch.from_numpy(made.pixels).to(device), batch_size=250)
        return evaluate.string_accuracy(
            number_strings.texts(scores.softmax(1).cpu().numpy(), made.columns),
            number_strings.truths(made.digits, made.lengths),
        )

    def measured_on(self, test_images: int) -> str:
        return f"whole strings read right of {EVALUATION_STRINGS:,} made from test digits"

    def export_example(self):
        import torch

        return torch.zeros(1, 1, self.probe_shape[2], 64)

    def dynamic_axes(self, names):
        return {"strips": {0: "batch", 3: "width"}, "scores": {0: "batch", 2: "columns"}}

    def export_parity(self, model, run, check_images, check_labels) -> dict:
        import torch

        from digitrec import models, number_strings

        made = number_strings.fixed_set(check_images[:, 0], check_labels, PARITY_STRINGS)
        expected = models.logits_in_batches(model, torch.from_numpy(made.pixels), batch_size=100).numpy()
        got = run(made.pixels)
        parity = {
            "strings": len(made.lengths),
            "same_readings": sum(
                a == b
                for a, b in zip(
                    number_strings.texts(softmax(got, 1), made.columns),
                    number_strings.texts(softmax(expected, 1), made.columns),
                )
            ),
            "max_logit_difference": float(np.abs(got - expected).max()),
        }
        return refuse_mismatch(parity, parity["same_readings"] == parity["strings"])


NUMBERS = NumberTask(
    name="numbers",
    input_name="strips",
    output_name="scores",
    probe_shape=(2, 1, 32, 64),
    probe_answer=(2, CLASSES + 1, 32),
    noun="number reader",
    bundled_torch=BUNDLED_READER,
    bundled_onnx=BUNDLED_READER_ONNX,
    load_hint="give it as --reader to digitrec read",
)
