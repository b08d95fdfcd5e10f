"""The public Python API: a saved model plus `preprocess` -> digits with probabilities.

    from digitrec.recognizer import Recognizer
    recognizer = Recognizer.load()            # the bundled default model
    result = recognizer.predict("seven.jpg")  # a path, bytes, a PIL image or a numpy array
    result.digit, result.confidence, result.probabilities, result.unsure

Owns turning images into digits with probabilities: preprocessing, batching, worker processes; the CLI
and the web app both call it. Loading the model (torch weights, or an `.onnx` file run by onnxruntime
without importing torch) is runtime.py's; reading a whole number is reading.py's, which takes a
recognizer and a number reader (`reading.read(reader, recognizer, image)`).
"""

import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec import confidence, runtime
from digitrec.errors import ImageError
from digitrec.files import BUNDLED_INT8, BUNDLED_ONNX
from digitrec.preprocess import Source, keep_freed_memory, preprocess
from digitrec.runtime import Runtime
from digitrec.tasks import DIGITS

# the threshold on an uncalibrated model's top probability (a model's own is in its calibration: confidence.py)
UNSURE_BELOW = confidence.UNCALIBRATED_UNSURE_BELOW
BATCH_SIZE = 256  # images per forward pass in batched prediction


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float  # the calibrated probability of `digit` (see confidence.py)
    probabilities: list[float]  # all ten, calibrated, summing to 1
    unsure: bool  # confidence < the calibration's `unsure_below`
    preprocessed: np.ndarray  # the (28, 28) view the model saw, 0..1

    def top(self, k: int) -> list[tuple[int, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(int(digit), self.probabilities[digit]) for digit in order]


def chunks(items: Iterable, size: int):
    """Successive lists of up to `size` items (itertools.batched arrives only in Python 3.12)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def try_preprocess(name: str, image: Source) -> np.ndarray | ImageError:
    """The preprocessed image, or whatever went wrong with it as an `ImageError` naming it."""
    try:
        return preprocess(image, name)
    except ImageError as error:
        return error
    except Exception as error:  # noqa: BLE001  (a bug or an exhausted resource is still this image's failure alone)
        return ImageError(f"{name}: {type(error).__name__}: {error}")


def submit_to(pool: ProcessPoolExecutor, chunk: list[tuple[str, Source]]) -> Iterable:
    """`try_preprocess` over `chunk` started in `pool`: an iterator of its results, in order."""
    try:
        return pool.map(try_preprocess, *zip(*chunk), chunksize=16)
    except BrokenProcessPool:  # a worker of an earlier chunk died
        return iter(())


def gather(results: Iterable) -> list[np.ndarray | ImageError]:
    """The results of `submit_to`; fewer than its chunk's images when a worker process died."""
    prepared: list[np.ndarray | ImageError] = []
    try:
        for result in results:
            prepared.append(result)
    except BrokenProcessPool:
        pass
    return prepared


class Recognizer:
    """Turns images into predictions with one digit model, loaded once."""

    def __init__(self, model: Runtime, batch_model: Runtime | None = None):
        self.model = model  # the digit model: (B, 1, 28, 28) float32 -> (B, 10) logits
        # the same for `predict_many`: the model's int8 copy where it has one (the bundled default), else `model`
        self.batch_model = batch_model or model
        self.info = model.info  # name, parameters, recorded metrics, weights path
        self.calibration = model.calibration  # logits -> confidence and unsure (confidence.py), from beside the model

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int = 0) -> "Recognizer":
        """The digit model at `path` (run directory, .safetensors or .onnx file), or the bundled default.

        The bundled default runs on onnxruntime when it is installed (several times faster than torch for
        one image, see the README's runtimes table, and no torch needed), else on torch; both copies give
        the same digits (tests check). On onnxruntime, `predict_many` runs the bundled int8 copy (`model.int8.onnx`,
        kept only because it is as accurate: see digitrec.quantize), about twice as fast in batches.
        `threads` is how many threads one forward pass may use (0: the runtime's default, one per core);
        a server that runs several requests at once does better with 1. On torch it sets the process's
        thread count. The model's calibration (confidence.py) is read from beside it; without one, the
        scores are used as they are, with one warning.
        """
        if path is None and runtime.onnxruntime_installed():
            return cls(
                runtime.load_onnx(BUNDLED_ONNX, DIGITS, threads), runtime.load_onnx(BUNDLED_INT8, DIGITS, threads)
            )
        return cls(runtime.load(path, DIGITS, threads))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(B, 1, 28, 28) float32 -> (B, 10) float32 logits of the float model."""
        return self.model.forward(batch)

    def batch_logits(self, batch: np.ndarray) -> np.ndarray:
        """The same through the copy `predict_many` runs (the int8 copy of the bundled default)."""
        return self.batch_model.forward(batch)

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(B, 1, 28, 28) -> everything the model computed, by name: `logits`, and where the runtime has them
        `activation:convN`, `filters:conv1`, `templates` (see `models.inside_outputs`); for `explain`."""
        return self.model.outputs(batch)

    def predict(self, image: Source, name: str = "image") -> Prediction:
        """One image; raises `ImageError` when it cannot be decoded or holds no digit."""
        return self.predict_arrays(preprocess(image, name)[None])[0]

    def predict_many(
        self, images: Iterable[tuple[str, Source]], workers: int | None = None
    ) -> list[Prediction | ImageError]:
        """Many (name, image) pairs, run through the model in batches; a bad image gives its error in its
        place instead of stopping the rest, whatever went wrong with it. Decoding and preprocessing, the
        costly part, is spread over `workers` processes (default: one per core) once there is at least a
        full batch of images. Each batch runs through the model on a thread of its own while the next is
        prepared."""
        workers = workers or os.cpu_count() or 1
        answered: list[Future] = []  # per batch, its results
        pool = None
        inference = ThreadPoolExecutor(1)

        def hand_over(chunk: list) -> tuple[list, Iterable] | None:
            """Start preparing `chunk`: in the pool (made once there is a full batch), else here and now."""
            nonlocal pool
            if pool is None and workers > 1 and len(chunk) == BATCH_SIZE:
                wait(answered)  # no fork while a thread runs the model
                # fork starts workers in milliseconds; they run only Pillow and numpy, never torch
                pool = ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("fork"), initializer=keep_freed_memory
                )
            if pool is None:
                answered.append(
                    inference.submit(self.predict_prepared, [try_preprocess(name, image) for name, image in chunk])
                )
                return None
            return chunk, submit_to(pool, chunk)

        def collect(handed: tuple[list, Iterable]) -> bool:
            """Wait for a chunk handed to the pool and pass it on to the model; whether the pool broke."""
            nonlocal pool
            chunk, results = handed
            prepared = gather(results)
            broke = len(prepared) < len(chunk)
            if broke:  # a worker died (killed, out of memory): the pool is broken
                pool.shutdown()
                pool = None
                prepared += [ImageError(f"{name}: the process reading it died") for name, _ in chunk[len(prepared) :]]
            answered.append(inference.submit(self.predict_prepared, prepared))
            return broke

        try:
            in_flight = (
                None  # the chunk the pool works on while the next is handed over: no idle workers between chunks
            )
            for chunk in chunks(images, BATCH_SIZE):
                handed = hand_over(chunk)
                if in_flight is not None and collect(in_flight) and handed is not None:
                    handed = hand_over(chunk)  # it went to the pool that broke: again, to a new one
                in_flight = handed
            if in_flight is not None:
                collect(in_flight)
            return [result for batch in answered for result in batch.result()]
        finally:
            inference.shutdown(cancel_futures=True)
            if pool is not None:
                pool.shutdown()

    def predict_prepared(self, prepared: list[np.ndarray | ImageError]) -> list[Prediction | ImageError]:
        """A batch's predictions from its preprocessed arrays, its errors kept in their places."""
        good = [array for array in prepared if not isinstance(array, ImageError)]
        predictions = iter(self.predict_arrays(good, self.batch_logits)) if good else iter(())
        return [item if isinstance(item, ImageError) else next(predictions) for item in prepared]

    def predict_arrays(
        self, arrays: Sequence[np.ndarray] | np.ndarray, logits: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> list[Prediction]:
        """Already-preprocessed (N, 28, 28) arrays in 0..1, through `logits` (default: the model's float `logits`)."""
        batch = np.asarray(arrays, dtype=np.float32)[:, None]  # (N, 28, 28) -> (N, 1, 28, 28)
        probabilities = DIGITS.probabilities(
            (logits or self.logits)(batch), self.calibration
        )  # refuses an overflow's NaN
        return [
            Prediction(
                digit=int(p.argmax()),
                confidence=float(p.max()),
                probabilities=[float(x) for x in p],
                unsure=self.calibration.unsure(float(p.max())),
                preprocessed=array,
            )
            for p, array in zip(probabilities, batch[:, 0])
        ]
