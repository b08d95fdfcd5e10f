"""ONNX: export a checkpoint (torch side), and run an exported file with onnxruntime without torch.

`load_onnx` imports only numpy and onnxruntime, so a deployment that serves or predicts from an `.onnx`
file needs neither torch nor the training code. The export stores the model's config and metrics in the
file's metadata; given test images (`digitrec export` always gives the whole test set), it is kept only
if onnxruntime agrees with torch on them. Next to `logits` it writes what the Inside view shows
(`models.inside_outputs`: `activation:convN`, `filters:conv1`, `templates`) as extra outputs; plain
prediction asks for `logits` alone. Loading checks that a file is a digitrec model: its input, its
`logits` output, its metadata, and finite answers. The number reader exports the same way, as input
`strips` (batch, 1, 32, width) and output `scores` (batch, 11, width / 2), width free.
"""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from digitrec import metadata
from digitrec.errors import ModelError

CLASSES = 10  # models.CLASSES, which this torch-free module cannot import
PARITY_TOLERANCE = 1e-4  # the largest logit difference allowed between torch and onnxruntime
PARITY_STRINGS = 200  # a number reader's export is checked on this many strings of the check images' digits


def check_export_out(source: str | Path | None, out: Path, overwrite: bool = False) -> None:
    """Refuse an export to `out` that would destroy something: any existing file unless `overwrite`, and
    always a file of the source run (its weights, config, metrics, log, curves, checkpoints, report), which
    an export must never replace. `source` is what `export_onnx` is given (None: the bundled model)."""
    import os

    from digitrec import rundir
    from digitrec.errors import OutputError
    from digitrec.files import DEFAULT_MODEL

    source = Path(source) if source is not None else DEFAULT_MODEL
    run_dir = source if source.is_dir() else source.parent
    own = {rundir.WEIGHTS_FILE, rundir.OUTPUT_FILE, "report.json", "report.html", *rundir.RUN_FILES}
    protected = [source] if source.is_file() else []
    if run_dir.is_dir():
        protected += [path for path in run_dir.iterdir() if path.name in own or rundir.CHECKPOINT_NAME.fullmatch(path.name)]
    target = os.path.realpath(out)
    if any(os.path.realpath(path) == target for path in protected):
        raise OutputError(f"{out}: a file of the run being exported ({run_dir}); the export never replaces it: "
                          "choose another --out")
    if os.path.lexists(out) and not overwrite:
        raise OutputError(f"{out} exists; add --overwrite to replace it, or choose another --out")
    if os.path.isdir(out):
        raise OutputError(f"{out}: a folder; --out names the file to write")


def export_onnx(weights: str | Path | None, out: Path, check_images: np.ndarray | None = None,
                check_labels: np.ndarray | None = None) -> dict:
    """Export the model at `weights` to `out` (dynamic batch size, and width for the number reader); with
    `check_images` (and, for the reader, `check_labels`: it is checked on strings made of them), compare
    torch's and onnxruntime's answers and refuse the export unless they agree."""
    import io
    import warnings

    import torch

    from digitrec import checkpoint, models, strings
    from digitrec.files import write_atomic

    loaded = checkpoint.load(weights)
    reader = models.spec(loaded.config["model"]).task == "numbers"
    if reader:
        model, example = loaded.model, torch.zeros(1, 1, strings.STRIP_HEIGHT, 64)
        input_name, names = "strips", ["scores"]
        axes = {"strips": {0: "batch", 3: "width"}, "scores": {0: "batch", 2: "columns"}}
    else:
        model, example = models.InsideOutputs(loaded.model), torch.zeros(1, 1, 28, 28)
        input_name, names = "images", list(models.inside_outputs(loaded.model, example))
        batched = ["images"] + [name for name in names if name == "logits" or name.startswith("activation:")]
        axes = {name: {0: "batch"} for name in batched}
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter works offline; the newer one needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buffer, input_names=[input_name], output_names=names,
                          dynamic_axes=axes, dynamo=False)
    import onnx

    model_proto = onnx.load_from_string(buffer.getvalue())
    for output, name in zip(model_proto.graph.output, names):
        if output.name != name:  # a weight output folded into a bare initializer keeps the initializer's name
            model_proto.graph.node.append(onnx.helper.make_node("Identity", [output.name], [name]))
            output.name = name
    for key, value in (("config", loaded.config), ("metrics", loaded.metrics)):
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    exported = model_proto.SerializeToString()
    parity = {}
    if check_images is not None and reader:
        made = strings.fixed_set(check_images[:, 0], check_labels, PARITY_STRINGS)
        expected = models.logits_in_batches(loaded.model, torch.from_numpy(made.pixels), batch_size=100).numpy()
        scores, _ = session_scores(exported, "export")
        got = scores(made.pixels)
        parity = {
            "strings": len(made.lengths),
            "same_readings": sum(a == b for a, b in zip(strings.texts(softmax(got, 1), made.columns),
                                                          strings.texts(softmax(expected, 1), made.columns))),
            "max_logit_difference": float(np.abs(got - expected).max()),
        }
        if parity["same_readings"] != parity["strings"] or not parity["max_logit_difference"] <= PARITY_TOLERANCE:
            raise ModelError(f"the ONNX export disagrees with torch: {parity}; nothing written")
    elif check_images is not None:
        expected = models.logits_in_batches(loaded.model, torch.from_numpy(check_images)).numpy()
        logits, _, _ = session_logits(exported, "export")
        got = np.concatenate([logits(check_images[i : i + 1000]) for i in range(0, len(check_images), 1000)])
        parity = {
            "images": len(check_images),
            "same_digits": int((got.argmax(1) == expected.argmax(1)).sum()),
            "max_logit_difference": float(np.abs(got - expected).max()),
        }
        # written so that NaN (which compares false with everything) fails
        if parity["same_digits"] != len(check_images) or not parity["max_logit_difference"] <= PARITY_TOLERANCE:
            raise ModelError(f"the ONNX export disagrees with torch: {parity}; nothing written")
    write_atomic(out, exported)
    return parity


Outputs = Callable[[np.ndarray], dict[str, np.ndarray]]


def softmax(values: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(values - values.max(axis, keepdims=True))
    return shifted / shifted.sum(axis, keepdims=True)


def open_session(source: bytes | str, name: str, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # idle worker threads sleep instead of spinning: spinning steals the core that decodes the next image
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    try:
        # an int8 copy (digitrec.quantize) keeps its first block float, quantizing after the pool; propagating
        # that quantization up through the pool would run the pool on uint8 in the slow NCHW layout
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=["QDQPropagationTransformer"])
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        raise ModelError(f"{name}: not a loadable ONNX model ({str(error).splitlines()[0]})") from None


def session_logits(source: bytes | str, name: str, threads: int = 0) -> tuple[Callable[[np.ndarray], np.ndarray], Outputs, dict]:
    """A logits function over an ONNX model, a function giving all its outputs by name (logits, and in files
    exported since the Inside view: activations, filters, templates), and its metadata; `threads` per
    call (0: one per core). Plain prediction asks for the logits only."""
    session = open_session(source, name, threads)
    check_signature(session, name)

    def logits(batch: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"images": batch})[0]

    try:
        probe = logits(np.zeros((2, 1, 28, 28), np.float32))  # a batch of two: the batch size must be free
    except Exception as error:  # onnxruntime's own types, e.g. a fixed batch size
        raise ModelError(f"{name}: the model cannot run on a batch of images ({str(error).splitlines()[0]})") from None
    if probe.shape != (2, CLASSES) or not np.isfinite(probe).all():
        raise ModelError(f"{name}: the model's logits for blank images are not {CLASSES} finite numbers each "
                         f"(shape {probe.shape}); the weights may hold NaN")
    names = [output.name for output in session.get_outputs()]

    def outputs(batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, {"images": batch})))

    return logits, outputs, session.get_modelmeta().custom_metadata_map


def session_scores(source: bytes | str, name: str, threads: int = 0) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """A number reader's scores function over an ONNX model ((B, 1, 32, W) strips -> (B, 11, W/2)), and its metadata."""
    session = open_session(source, name, threads)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    described = ", ".join(f"{node.name} {node.type} {node.shape}" for node in [*inputs, *outputs])
    if ([node.name for node in inputs], [node.name for node in outputs]) != (["strips"], ["scores"]):
        raise ModelError(f"{name}: not a digitrec number reader: expected input 'strips' and output 'scores', found {described}")

    def scores(strips: np.ndarray) -> np.ndarray:
        return session.run(["scores"], {"strips": strips})[0]

    try:
        probe = scores(np.zeros((2, 1, 32, 64), np.float32))  # batch and width must be free
    except Exception as error:  # onnxruntime's own types, e.g. a fixed width
        raise ModelError(f"{name}: the reader cannot run on a batch of strips ({str(error).splitlines()[0]})") from None
    if probe.shape != (2, CLASSES + 1, 32) or not np.isfinite(probe).all():
        raise ModelError(f"{name}: the reader's scores for blank strips are not finite (batch, {CLASSES + 1}, width / 2) "
                         f"(shape {probe.shape}); the weights may hold NaN")
    return scores, session.get_modelmeta().custom_metadata_map


def check_signature(session, name: str) -> None:
    """A digitrec model takes one float input `images` of shape (batch, 1, 28, 28) and gives `logits` of
    shape (batch, 10); other outputs (intermediate activations) may come beside it."""
    inputs, outputs = session.get_inputs(), {output.name: output for output in session.get_outputs()}
    found = ", ".join(f"{node.name} {node.type} {node.shape}" for node in inputs)
    if len(inputs) != 1 or inputs[0].name != "images" or inputs[0].type != "tensor(float)" or inputs[0].shape[1:] != [1, 28, 28]:
        raise ModelError(f"{name}: not a digitrec model: expected one input 'images' of float (batch, 1, 28, 28), found {found}")
    logits = outputs.get("logits")
    if logits is None or logits.type != "tensor(float)" or len(logits.shape) != 2 or logits.shape[1] != CLASSES:
        found = ", ".join(f"{node.name} {node.type} {node.shape}" for node in outputs.values())
        raise ModelError(f"{name}: not a digitrec model: expected an output 'logits' of float (batch, {CLASSES}), found {found}")


def load_onnx(path: Path, threads: int = 0) -> tuple[Callable[[np.ndarray], np.ndarray], dict, Outputs]:
    """A logits function, model info and an all-outputs function for an exported file, for `Recognizer`."""
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    logits, outputs, stored = session_logits(str(path), str(path), threads)
    config, metrics = metadata.read(stored, path)
    return logits, metadata.model_info(config, metrics, metrics.get("parameters"), path, "onnxruntime"), outputs


def load_reader_onnx(path: Path, threads: int = 0) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """A number reader's scores function and model info for an exported file, for `Recognizer.read`."""
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    scores, stored = session_scores(str(path), str(path), threads)
    config, metrics = metadata.read(stored, path)
    return scores, metadata.model_info(config, metrics, metrics.get("parameters"), path, "onnxruntime")
