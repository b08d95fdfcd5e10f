"""A loaded model, wrapped the same way whatever its task and whatever runs it: torch or onnxruntime.

    reader = runtime.load(None, NUMBERS)           # the bundled number reader
    scores = reader.forward(strips)                # the task's input -> its answer, float32 numpy
    reader.outputs(strips), reader.info            # everything it computes, by name; what it is

`load` takes a run directory, a `.safetensors` weights file or an `.onnx` export (None: the task's
bundled model, on onnxruntime when it is installed, else on torch) and checks that the model is of the
task asked for. The ONNX side imports only numpy and onnxruntime, so a deployment that predicts or reads
from `.onnx` files needs neither torch nor the training code; the torch side imports torch when used.
The `Recognizer` (digits) and `reading.read` (numbers) both stand on this module.
"""

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from digitrec import confidence, metadata
from digitrec.confidence import Calibration
from digitrec.errors import ModelError
from digitrec.tasks import Task


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class Runtime:
    """One loaded model of one task: `forward` gives its answer, `outputs` all it computes by name."""

    def __init__(self, task: Task, info: dict):
        self.task = task
        self.info = info  # name, recipe, parameters, recorded metrics, weights path, runtime

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The task's input batch (float32) -> the task's answer (float32): logits, or a reader's scores."""
        raise NotImplementedError

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Everything the model computes, by name (the Inside view's activations where the model has them)."""
        return {self.task.output_name: self.forward(batch)}

    @functools.cached_property
    def calibration(self) -> Calibration:
        """Its calibration (confidence.py: what its confidences mean, and when it is unsure), read from beside
        its file when first asked for; the uncalibrated fallback, with one warning, when there is none."""
        return confidence.load(self.info["weights"])

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """`forward` as probabilities (float64); an answer that is NaN or infinite is a `ModelError`."""
        return self.task.probabilities(self.forward(batch))


class TorchRuntime(Runtime):
    def __init__(self, model, task: Task, info: dict):
        super().__init__(task, info)
        self.model = model

    def forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(batch)).float().numpy()

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            computed = self.task.export_outputs(self.model, torch.from_numpy(batch))
            return {name: value.float().numpy() for name, value in computed.items()}


class OnnxRuntime(Runtime):
    def __init__(self, session, task: Task, info: dict):
        super().__init__(task, info)
        self.session = session
        self.names = [output.name for output in session.get_outputs()]

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.task.output_name], {self.task.input_name: batch})[0]

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.session.run(self.names, {self.task.input_name: batch})))

    @property
    def metadata(self) -> dict[str, str]:
        """The file's own string metadata (config and metrics as JSON; a quantized copy's figures)."""
        return self.session.get_modelmeta().custom_metadata_map


def load(path: str | Path | None, task: Task, threads: int = 0) -> Runtime:
    """The model of `task` at `path` (run directory, .safetensors or .onnx file; None: the task's bundled
    model, on onnxruntime when installed). `threads`: how many threads one forward pass may use (0: the
    runtime's default, one per core); on torch it sets the process's thread count."""
    if path is None and onnxruntime_installed():
        path = task.bundled_onnx
    if path is not None and Path(path).suffix == ".onnx":
        return load_onnx(Path(path), task, threads)
    return load_torch(path, task, threads)


def load_torch(path: str | Path | None, task: Task, threads: int = 0) -> TorchRuntime:
    """A saved model of `task` on torch (see `checkpoint.load`), in eval mode, without gradients."""
    import torch

    from digitrec import checkpoint, models

    if threads:
        torch.set_num_threads(threads)
    loaded = checkpoint.load(path, task)
    info = metadata.model_info(
        loaded.config, loaded.metrics, models.parameter_count(loaded.model), loaded.weights_path, "torch"
    )
    return TorchRuntime(loaded.model, task, info)


def load_onnx(path: Path, task: Task, threads: int = 0) -> OnnxRuntime:
    """An exported file of `task` on onnxruntime, its signature and a blank probe checked."""
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    session = open_session(str(path), str(path), task, threads)
    config, metrics = metadata.read(session.get_modelmeta().custom_metadata_map, path)
    return OnnxRuntime(
        session, task, metadata.model_info(config, metrics, metrics.get("parameters"), path, "onnxruntime")
    )


def from_source(model: bytes | str, name: str, task: Task, threads: int = 0) -> OnnxRuntime:
    """An ONNX model held in memory (an export being checked, a quantized copy) or at a path, its metadata unread."""
    return OnnxRuntime(open_session(model, name, task, threads), task, {"weights": name, "runtime": "onnxruntime"})


def open_session(source: bytes | str, name: str, task: Task, threads: int):
    """An onnxruntime session over `source`, checked to be a model of `task` that runs on a blank batch."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # idle worker threads sleep instead of spinning: spinning steals the core that decodes the next image
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    try:
        # an int8 copy (digitrec.quantize) keeps its first block float, quantizing after the pool; propagating
        # that quantization up through the pool would run the pool on uint8 in the slow NCHW layout
        session = onnxruntime.InferenceSession(
            source, options, providers=["CPUExecutionProvider"], disabled_optimizers=["QDQPropagationTransformer"]
        )
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        raise ModelError(f"{name}: not a loadable ONNX model ({str(error).splitlines()[0]})") from None
    task.check_signature(session, name)
    run: Callable[[np.ndarray], np.ndarray] = lambda batch: session.run([task.output_name], {task.input_name: batch})[0]  # noqa: E731
    task.check_probe(run, name)
    return session
