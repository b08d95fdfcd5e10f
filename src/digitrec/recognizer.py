"""The public Python API: a saved model plus `preprocess` -> digits with probabilities.

    from digitrec.recognizer import Recognizer
    recognizer = Recognizer.load()            # the bundled default model
    result = recognizer.predict("seven.jpg")  # a path, bytes, a PIL image or a numpy array
    result.digit, result.confidence, result.probabilities, result.unsure
    reading = recognizer.read("year.jpg")     # a whole number: reading.text == "2026", boxes, confidences

Owns model loading for inference (torch weights, or an `.onnx` file run by onnxruntime without
importing torch) and batching, for the digit model and for the number reader that `read` uses (loaded on
the first `read`); the CLI and the web app both call it.
"""

import importlib.util
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec.deploy import softmax
from digitrec.errors import ImageError, ModelError
from digitrec.files import DEFAULT_INT8, DEFAULT_MODEL, DEFAULT_ONNX, DEFAULT_READER, DEFAULT_READER_ONNX
from digitrec.metadata import model_info
from digitrec.preprocess import Source, keep_freed_memory, preprocess

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


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class Recognizer:
    """Turns images into predictions with one model, loaded once."""

    def __init__(self, logits: Callable[[np.ndarray], np.ndarray], info: dict,
                 outputs: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
                 batch_logits: Callable[[np.ndarray], np.ndarray] | None = None,
                 reader_path: str | Path | None = None, threads: int = 0):
        self.logits = logits  # (B, 1, 28, 28) float32 -> (B, 10) float32
        # the same for `predict_many`: the model's int8 copy where it has one (the bundled default), else `logits`
        self.batch_logits = batch_logits or logits
        self.info = info  # name, parameters, recorded metrics, weights path
        # (B, 1, 28, 28) -> everything the model computed, by name: `logits`, and where the runtime has them
        # `activation:convN`, `filters:conv1`, `templates` (see `models.inside_outputs`); for `explain`
        self.outputs = outputs or (lambda batch: {"logits": self.logits(batch)})
        self.reader_path, self.threads = reader_path, threads
        self.reader: tuple[Callable[[np.ndarray], np.ndarray], dict] | None = None  # scores function, info

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int = 0, reader: str | Path | None = None) -> "Recognizer":
        """The model at `path` (run directory, .safetensors or .onnx file), or the bundled default; `reader`:
        the number reader `read` uses (the same kinds of path; None: the bundled one), loaded when first used.

        The bundled default runs on onnxruntime when it is installed (several times faster than torch for
        one image, see the README's runtimes table, and no torch needed), else on torch; both copies give
        the same digits (tests check). On onnxruntime, `predict_many` runs the bundled int8 copy (`model.int8.onnx`,
        kept only because it is as accurate: see digitrec.quantize), about twice as fast in batches.
        `threads` is how many threads one forward pass may use (0: the runtime's default, one per core);
        a server that runs several requests at once does better with 1. On torch it sets the process's
        thread count.
        """
        if path is None and onnxruntime_installed():
            from digitrec.deploy import load_onnx

            return cls(*load_onnx(DEFAULT_ONNX, threads), batch_logits=load_onnx(DEFAULT_INT8, threads)[0],
                       reader_path=reader, threads=threads)
        if path is not None and Path(path).suffix == ".onnx":
            from digitrec.deploy import load_onnx

            return cls(*load_onnx(Path(path), threads), reader_path=reader, threads=threads)
        return cls(*load_torch(path, threads), reader_path=reader, threads=threads)

    def load_reader(self) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
        """The number reader, loaded now if it is not yet (a caller that reads many images calls this first,
        so that a bad reader is one error, not one per image)."""
        if self.reader is None:
            self.reader = load_reader(self.reader_path, self.threads)
        return self.reader

    def reader_scores(self, strips: np.ndarray) -> np.ndarray:
        """The number reader's per-column probabilities (B, 11, W/2) for strips (B, 1, 32, W); see strings.py."""
        scores = self.load_reader()[0](strips)
        if not np.isfinite(scores).all():
            raise ModelError("the number reader's answer is NaN or infinite: it cannot be used")
        return softmax(scores.astype(np.float64), 1)

    def predict(self, image: Source, name: str = "image") -> Prediction:
        """One image; raises `ImageError` when it cannot be decoded or holds no digit."""
        return self.predict_arrays(preprocess(image, name)[None])[0]

    def read(self, image: Source, name: str = "image"):
        """The number written in one image ("2026"): a `numbers.Reading` with the text, its confidence
        and each digit's box; raises `ImageError` when there is none. See digitrec/numbers.py."""
        from digitrec.numbers import read  # numbers builds on this module

        return read(self, image, name)

    def predict_many(self, images: Iterable[tuple[str, Source]], workers: int | None = None) -> list[Prediction | ImageError]:
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
                pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=keep_freed_memory)
            if pool is None:
                answered.append(inference.submit(self.predict_prepared, [try_preprocess(name, image) for name, image in chunk]))
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
                prepared += [ImageError(f"{name}: the process reading it died") for name, _ in chunk[len(prepared):]]
            answered.append(inference.submit(self.predict_prepared, prepared))
            return broke

        try:
            in_flight = None  # the chunk the pool works on while the next is handed over: no idle workers between chunks
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

    def predict_arrays(self, arrays: Sequence[np.ndarray] | np.ndarray,
                       logits: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Prediction]:
        """Already-preprocessed (N, 28, 28) arrays in 0..1, through `logits` (default: the model's float `logits`)."""
        batch = np.asarray(arrays, dtype=np.float32)[:, None]  # (N, 28, 28) -> (N, 1, 28, 28)
        logits = (logits or self.logits)(batch)
        if not np.isfinite(logits).all():  # loading refuses NaN weights; this catches an overflow
            raise ModelError("the model's answer is NaN or infinite: it cannot be used")
        probabilities = softmax(logits.astype(np.float64), 1)
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


def torch_model(path: str | Path | None, threads: int, task: str, default: Path) -> tuple[Callable, dict, object]:
    """A saved model of `task` on torch (see `checkpoint.load`): its forward function (numpy in, float32
    numpy out, no gradients), its info, and the module itself."""
    import torch

    from digitrec import checkpoint, models

    if threads:
        torch.set_num_threads(threads)
    loaded = checkpoint.load(path, task=task, default=default)
    model = loaded.model

    @torch.inference_mode()
    def forward(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(batch)).float().numpy()

    return forward, model_info(loaded.config, loaded.metrics, models.parameter_count(model), loaded.weights_path, "torch"), model


def load_torch(path: str | Path | None, threads: int = 0) -> tuple[Callable, dict, Callable]:
    import torch

    from digitrec import models

    logits, info, model = torch_model(path, threads, "digits", DEFAULT_MODEL)

    @torch.inference_mode()
    def outputs(batch: np.ndarray) -> dict[str, np.ndarray]:
        return {name: value.float().numpy() for name, value in models.inside_outputs(model, torch.from_numpy(batch)).items()}

    return logits, info, outputs


def load_reader(path: str | Path | None, threads: int = 0) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """The number reader at `path` (run directory, .safetensors or .onnx file; None: the bundled one, on
    onnxruntime when installed): its scores function, (B, 1, 32, W) -> (B, 11, W/2), and its info."""
    if path is None and onnxruntime_installed():
        path = DEFAULT_READER_ONNX
    if path is not None and Path(path).suffix == ".onnx":
        from digitrec.deploy import load_reader_onnx

        return load_reader_onnx(Path(path), threads)
    scores, info, _ = torch_model(path, threads, "numbers", DEFAULT_READER)
    return scores, info
