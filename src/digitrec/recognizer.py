"""The public Python API: a saved model plus `preprocess` -> digits with probabilities.

    from digitrec.recognizer import Recognizer
    recognizer = Recognizer.load()            # the bundled default model
    result = recognizer.predict("seven.jpg")  # a path, bytes, a PIL image or a numpy array
    result.digit, result.confidence, result.probabilities, result.unsure

Owns model loading for inference (torch weights, or an `.onnx` file run by onnxruntime without
importing torch) and batching; the CLI and the web app both call it.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec.errors import ImageError
from digitrec.preprocess import Source, preprocess

UNSURE_BELOW = 0.80  # a prediction whose top probability is below this is flagged as unsure
BATCH_SIZE = 256  # images per forward pass in batched prediction


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float  # the probability of `digit`
    probabilities: list[float]  # all ten, summing to 1
    unsure: bool  # confidence < UNSURE_BELOW
    preprocessed: np.ndarray  # the (28, 28) view the model saw, 0..1

    def top(self, k: int) -> list[tuple[int, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(digit), self.probabilities[digit]) for digit in order]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


class Recognizer:
    """Turns images into predictions with one model, loaded once."""

    def __init__(self, logits: Callable[[np.ndarray], np.ndarray], info: dict):
        self.logits = logits  # (B, 1, 28, 28) float32 -> (B, 10) float32
        self.info = info  # name, parameters, recorded metrics, weights path

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Recognizer":
        """The model at `path` (run directory, .safetensors or .onnx file), or the bundled default."""
        if path is not None and Path(path).suffix == ".onnx":
            from digitrec.onnx_runtime import load_onnx

            return cls(*load_onnx(Path(path)))
        return cls(*load_torch(path))

    def predict(self, image: Source, name: str = "image") -> Prediction:
        """One image; raises `ImageError` when it cannot be decoded or holds no digit."""
        return self.predict_arrays(preprocess(image, name)[None])[0]

    def predict_many(self, images: Iterable[tuple[str, Source]]) -> list[Prediction | ImageError]:
        """Many (name, image) pairs, preprocessed one by one and run in batches; a bad image gives its
        error in its place instead of stopping the rest."""
        results: list[Prediction | ImageError | None] = []
        pending_arrays, pending_slots = [], []
        for name, image in images:
            try:
                pending_arrays.append(preprocess(image, name))
                pending_slots.append(len(results))
                results.append(None)
            except ImageError as error:
                results.append(error)
            if len(pending_arrays) == BATCH_SIZE:
                self.fill(results, pending_slots, pending_arrays)
                pending_arrays, pending_slots = [], []
        if pending_arrays:
            self.fill(results, pending_slots, pending_arrays)
        return results

    def fill(self, results: list, slots: list[int], arrays: list[np.ndarray]) -> None:
        for slot, prediction in zip(slots, self.predict_arrays(np.stack(arrays))):
            results[slot] = prediction

    def predict_arrays(self, arrays: Sequence[np.ndarray] | np.ndarray) -> list[Prediction]:
        """Already-preprocessed (N, 28, 28) arrays in 0..1."""
        batch = np.asarray(arrays, dtype=np.float32)[:, None]  # (N, 28, 28) -> (N, 1, 28, 28)
        probabilities = softmax(self.logits(batch).astype(np.float64))
        return [
            Prediction(
                digit=int(p.argmax()),
                confidence=float(p.max()),
                probabilities=[float(x) for x in p],
                unsure=bool(p.max() < UNSURE_BELOW),
                preprocessed=array,
            )
            for p, array in zip(probabilities, batch[:, 0])
        ]


def load_torch(path: str | Path | None) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    import torch

    from digitrec import checkpoint

    loaded = checkpoint.load(path)
    model = loaded.model

    @torch.inference_mode()
    def logits(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(batch)).float().numpy()

    info = {
        "name": loaded.config["model"],
        "recipe": loaded.config.get("recipe"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "metrics": loaded.metrics,
        "weights": str(loaded.weights_path),
        "runtime": "torch",
    }
    return logits, info

