"""ONNX export: a checkpoint (torch side) written as an `.onnx` file, checked, and optionally quantized.

The export stores the model's config and metrics in the file's metadata; given test images (`digitrec
export` always gives the whole test set), it is kept only if onnxruntime agrees with torch on them (its
task says how: the same digits, or the same readings of strings). A digit model's file carries, next to
`logits`, what the Inside view shows (`models.inside_outputs`: `activation:convN`, `filters:conv1`,
`templates`) as extra outputs; the number reader exports as input `strips` (batch, 1, 32, width) and
output `scores` (batch, 11, width / 2), width free. `export` is the whole pipeline the CLI runs: export,
check, and with `quantize="int8"` an int8 copy (quantize.py), with the model's calibration.json carried
beside the file (its confidences and `unsure` stay the source's). Running an exported file is runtime.py's.
"""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitrec import runtime
from digitrec.errors import ModelError
from digitrec.tasks.base import PARITY_TOLERANCE  # noqa: F401  (the CLI prints it)


def check_export_out(source: str | Path | None, out: Path, overwrite: bool = False) -> None:
    """Refuse an export to `out` that would destroy something: any existing file unless `overwrite`, and
    always a file of the source run (its weights, config, metrics, log, curves, checkpoints, report), which
    an export must never replace. `source` is what `export_onnx` is given (None: the bundled model)."""
    import os

    from digitrec import rundir
    from digitrec.errors import OutputError
    from digitrec.files import BUNDLED_MODEL

    source = Path(source) if source is not None else BUNDLED_MODEL
    run_dir = source if source.is_dir() else source.parent
    own = {rundir.OUTPUT_FILE, rundir.REPORT_JSON_FILE, rundir.REPORT_HTML_FILE, *rundir.RUN_FILES}
    protected = [source] if source.is_file() else []
    if run_dir.is_dir():
        protected += [
            path for path in run_dir.iterdir() if path.name in own or rundir.CHECKPOINT_NAME.fullmatch(path.name)
        ]
    target = os.path.realpath(out)
    if any(os.path.realpath(path) == target for path in protected):
        raise OutputError(
            f"{out}: a file of the run being exported ({run_dir}); the export never replaces it: choose another --out"
        )
    if os.path.lexists(out) and not overwrite:
        raise OutputError(f"{out} exists; add --overwrite to replace it, or choose another --out")
    carried = calibration_to_carry(source, out)
    if carried and os.path.lexists(carried[1]) and not overwrite:
        raise OutputError(
            f"{carried[1]} exists and is not {source}'s calibration; add --overwrite to replace it, "
            "or choose another folder for --out"
        )
    if os.path.isdir(out):
        raise OutputError(f"{out}: a folder; --out names the file to write")


def calibration_to_carry(source: str | Path | None, out: Path) -> tuple[Path, Path] | None:
    """The source model's calibration file and where it goes beside `out`; None when it has none, or the
    same file is already there (an export into the model's own folder)."""
    import os

    from digitrec.confidence import calibration_path
    from digitrec.files import BUNDLED_MODEL

    there = calibration_path(Path(source) if source is not None else BUNDLED_MODEL)
    here = calibration_path(out)
    if not there.is_file() or os.path.realpath(there) == os.path.realpath(here):
        return None
    if here.is_file() and here.read_bytes() == there.read_bytes():
        return None
    return there, here


def export_onnx(
    weights: str | Path | None,
    out: Path,
    check_images: np.ndarray | None = None,
    check_labels: np.ndarray | None = None,
) -> dict:
    """Export the model at `weights` to `out` (dynamic batch size, and width for the number reader); with
    `check_images` (and, for the reader, `check_labels`: it is checked on strings made of them), compare
    torch's and onnxruntime's answers and refuse the export unless they agree."""
    import io
    import warnings

    import onnx
    import torch

    from digitrec import checkpoint
    from digitrec.files import write_atomic

    class TaskOutputs(torch.nn.Module):
        """The model returning all its task's export outputs as a tuple in their order: what the export traces."""

        def __init__(self, model: torch.nn.Module, task):
            super().__init__()
            self.model, self.task = model, task

        def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(self.task.export_outputs(self.model, inputs).values())

    loaded = checkpoint.load(weights)
    task = loaded.task
    example = task.export_example()
    names = list(task.export_outputs(loaded.model, example))
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter works offline; the newer one needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            TaskOutputs(loaded.model, task),
            (example,),
            buffer,
            input_names=[task.input_name],
            output_names=names,
            dynamic_axes=task.dynamic_axes(names),
            dynamo=False,
        )
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
    if check_images is not None:
        parity = task.export_parity(
            loaded.model, runtime.from_source(exported, "export", task).forward, check_images, check_labels
        )
    write_atomic(out, exported)
    return parity


@dataclass(frozen=True)
class Exported:
    parity: dict  # export_onnx's comparison of torch and onnxruntime
    quantized: dict | None  # quantize_int8's test accuracies of the float and int8 models, when asked for
    calibration: Path | None  # the calibration file written beside the export, if the source has one


def export(weights: str | Path | None, out: Path, mnist, quantize: str | None = None) -> Exported:
    """The model at `weights` (None: the bundled default) exported to `out`, checked on `mnist`'s test set;
    with `quantize="int8"`, `out` is instead its int8 copy, calibrated on training digits and refused if
    it loses more than quantize.TEST_POINTS of test accuracy (digit models only). The source's calibration
    file is copied beside `out`."""
    from digitrec import checkpoint
    from digitrec.files import write_atomic
    from digitrec.tasks import DIGITS

    test_images, test_labels = mnist.test.images.numpy(), mnist.test.labels.numpy()
    if quantize and checkpoint.load(weights).task is not DIGITS:
        raise ModelError("--quantize int8 applies to digit models, not the number reader")
    carried = calibration_to_carry(weights, out)
    if not quantize:
        parity, quantized = export_onnx(weights, out, test_images, test_labels), None
    else:
        from digitrec.quantize import CALIBRATION_DIGITS, TEST_POINTS, quantize_int8

        with tempfile.TemporaryDirectory() as folder:
            float_out = Path(folder) / "float.onnx"
            parity = export_onnx(weights, float_out, test_images, test_labels)
            ranges = mnist.train.images[:CALIBRATION_DIGITS].numpy()
            quantized = quantize_int8(float_out, out, ranges, {"test": (test_images, test_labels, TEST_POINTS)})["test"]
    if carried:
        write_atomic(carried[1], carried[0].read_bytes())
    return Exported(parity, quantized, carried[1] if carried else None)
