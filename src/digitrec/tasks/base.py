"""What every task declares once, whatever it reads: the interface that training, export and the runtimes use.

A task is what a model reads and what it answers: a digit model reads (B, 1, 28, 28) images and answers
(B, 10) logits; the number reader reads (B, 1, 32, W) strips and answers (B, 11, W/2) per-column scores.
Everything that differs between tasks lives in its subclass (tasks/digits.py, tasks/numbers.py): the
names and shapes of its input and output (which the ONNX signature check and the runtimes use), its
training batches and loss, its accuracy, and the check of an export against torch. Imports neither torch
nor onnxruntime at module level, so the torch-free ONNX path can use a task's shapes.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec.confidence import UNCALIBRATED, Calibration
from digitrec.errors import ConfigError, ModelError

PARITY_TOLERANCE = 1e-4  # the largest output difference allowed between torch and onnxruntime in an export


@dataclass(frozen=True)
class Task:
    """One kind of model. Subclasses fill in the training and export steps."""

    name: str  # the name a model's spec gives (models.ModelSpec.task)
    input_name: str  # the ONNX input's name, and what a batch of it is called
    output_name: str  # the ONNX output that answers: what `Runtime.forward` returns
    probe_shape: tuple[int, ...]  # a small input every model of the task must run on (batch and width free)
    probe_answer: tuple[int, ...]  # the output shape for that probe
    noun: str  # how messages name a model of this task ("model", "number reader")
    bundled_torch: Path  # the bundled model's run folder (weights.safetensors, model.onnx)
    bundled_onnx: Path
    load_hint: str  # where a model of this task is given, for a model loaded where another task's is wanted

    # A model that answers one digit per image: what the page's Train panel trains and what a person's
    # corrections (one digit each) fine-tune (web/runs.py, personal.py).
    single_digits = False

    # --- shapes: torch-free -------------------------------------------------------------------------
    def check_signature(self, session, where: str) -> None:
        """Refuse an ONNX session whose inputs and outputs are not this task's."""
        raise NotImplementedError

    def check_probe(self, run: Callable[[np.ndarray], np.ndarray], where: str) -> None:
        """Run `run` on a blank probe batch: the batch size (and width) must be free and the answer finite."""
        try:
            answer = run(np.zeros(self.probe_shape, np.float32))
        except Exception as error:  # onnxruntime's own types, e.g. a fixed batch size
            raise ModelError(f"{where}: {self.cannot_run} ({str(error).splitlines()[0]})") from None
        if answer.shape != self.probe_answer or not np.isfinite(answer).all():
            raise ModelError(f"{where}: {self.bad_probe} (shape {answer.shape}); the weights may hold NaN")

    cannot_run = "the model cannot run on a batch"  # the probe failed to run
    bad_probe = "the model's answer for a blank batch is not finite"  # the probe's answer is wrong

    def probabilities(self, answer: np.ndarray, calibration: Calibration = UNCALIBRATED) -> np.ndarray:
        """The model's answer as probabilities over its classes (axis 1), float64, scaled by `calibration`'s
        temperature (confidence.py); a NaN or infinite answer (an overflow: loading refuses NaN weights) is refused."""
        if not np.isfinite(answer).all():
            raise ModelError(f"the {self.noun}'s answer is NaN or infinite: it cannot be used")
        if calibration is UNCALIBRATED:
            return softmax(answer.astype(np.float64), 1)
        return calibration.probabilities(answer)  # (N, classes): a digit model's logits

    # --- training and export: these import torch ----------------------------------------------------
    def check_config(self, config) -> None:
        """Refuse settings of a TrainConfig that mean nothing for this task (nothing by default)."""

    def batches(
        self, split, batch_size: int, seed: int, rank: int, world_size: int, start: int, config=None
    ) -> Iterator[tuple]:
        """Endless training batches of `split` from step `start`: (inputs, *targets) tensors; made as the
        TrainConfig `config` asks where the task takes something from it (None: its defaults)."""
        raise NotImplementedError

    # A graphable task's batches keep one shape from step to step and are picked from the split on its
    # device by a tensor of indices, so that a whole training step can be captured as a CUDA graph and
    # replayed with new indices and draws (train.uses_cuda_graph). The number reader's strips change
    # width from batch to batch: not graphable.
    graphable = False
    not_graphable = "its batches change shape from step to step"  # why not, for a message

    def batch_indices(self, split, batch_size: int, seed: int, rank: int, world_size: int, start: int) -> Iterator:
        """A graphable task: endless index tensors (on `split`'s device) naming the batches `batches` gives."""
        raise NotImplementedError

    def indexed_batch(self, split, indices) -> tuple:
        """A graphable task: the batch of `split` that `indices` (from `batch_indices`) name, as `batches` gives it."""
        raise NotImplementedError

    def augmentation_draws(self, generator, count: int, config):
        """The random numbers that vary a batch of `count` inputs as `config` asks, drawn from `generator`
        (on the CPU, so that they are the same on every device) as a (count, k) tensor; None when nothing
        is varied (the default). Drawn apart from `augment`, so that a CUDA graph can replay the same
        arithmetic with each step's draws copied in."""
        return None

    def augment(self, inputs, draws, config):
        """A training batch's inputs varied by `draws` (from `augmentation_draws`, on the inputs' device;
        unchanged by default)."""
        return inputs

    def loss(self, outputs, batch: tuple, config) -> tuple[object, Callable[[], float]]:
        """The loss of `outputs` for `batch`, and a function giving the batch's accuracy."""
        raise NotImplementedError

    def accuracy(self, model, split, cache: dict) -> float:
        """`model`'s accuracy on `split` (`cache`: the caller's, for anything made once per split)."""
        raise NotImplementedError

    def export_outputs(self, model, inputs) -> dict:
        """Everything the ONNX export writes, by output name: the answer first."""
        return {self.output_name: model(inputs)}

    def export_example(self):
        """A torch input the export traces."""
        import torch

        return torch.zeros(1, *self.probe_shape[1:])

    def dynamic_axes(self, names: list[str]) -> dict[str, dict[int, str]]:
        raise NotImplementedError

    def export_parity(
        self, model, run: Callable[[np.ndarray], np.ndarray], check_images: np.ndarray, check_labels: np.ndarray | None
    ) -> dict:
        """Compare torch (`model`) and the export (`run`, its answer function) on the check data; raise
        `ModelError` unless they agree, else return the comparison's figures."""
        raise NotImplementedError

    def measured_on(self, test_images: int) -> str:
        """What a test accuracy of this task counts, for a person (`digitrec train` prints it)."""
        raise NotImplementedError

    def refuse_other(self, found: "Task", model: str, where: object) -> None:
        """A model of task `found` was loaded where one of this task was wanted."""
        if found is not self:
            raise ModelError(f"{where}: model {model!r} reads {found.name}, not {self.name}: {found.load_hint}")


def softmax(values: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(values - values.max(axis, keepdims=True))
    return shifted / shifted.sum(axis, keepdims=True)


def refuse_mismatch(parity: dict, agreed: bool) -> dict:
    """`parity`, unless the export disagreed with torch (written so that NaN, which compares false, fails)."""
    if not agreed or not parity["max_logit_difference"] <= PARITY_TOLERANCE:
        raise ModelError(f"the ONNX export disagrees with torch: {parity}; nothing written")
    return parity


def unknown(name: str, known) -> ConfigError:
    return ConfigError(f"task {name!r} is not one of {', '.join(known)}")
