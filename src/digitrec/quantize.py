"""int8 copies of an exported ONNX model, for batched prediction: calibrate, check accuracy, write.

`quantize_int8` cuts an exported file down to its `logits` (the Inside view's extra outputs cost batched
prediction about a fifth of its time: onnxruntime converts every activation out of its blocked layout on
every run, asked for or not), quantizes it statically with onnxruntime.quantization (QDQ, int8 weights per
output channel, uint8 activations, ranges calibrated on training digits, never test digits), and keeps the
copy only if its accuracy on each check set is within that set's allowance of the float model's. The test
set's allowance is 0.05 points (`TEST_POINTS`); bench/inference.py also gates on person-style renderings
(0.1 points, `PERSON_STYLE_POINTS`).

Three choices measured on the bundled models (bench/inference.py; README, "int8 for batched prediction"):
- The first block (convolution, ReLU, pool; or pooling first: convolution, pool, batch norm, ReLU) stays
  float. Its convolution reads one channel through a 5x5 kernel: 25 products per output are too few for
  the int8 matrix kernels; onnxruntime's int8 version of it took 4.5 times its float time, as long as the
  two other int8 convolutions together.
- Weights use 7 of their 8 bits (`reduce_range`). CPUs without AVX-512 VNNI multiply uint8 by int8 with
  VPMADDUBSW, which can saturate a pair of full-range products; with 7-bit weights no pair can, so the
  integer sums are exact there too and the accuracy checked here should hold on them (this CPU has VNNI:
  not checked on one without). On the previous bundled model full 8-bit weights measured 99.58 % on the test
  set, 7-bit 99.60 %.
- A pool-first model's batch norms (after the pool, so not folded into the convolution) stay float: with
  them quantized the copy lost 0.10 points on thin-pen digits, the gate's limit.

Needs the `onnx` package and onnxruntime (the `onnx` extra), not torch. The runtime path
(`runtime.load_onnx`) runs the copy like any other ONNX file.
"""

import json
import tempfile
from pathlib import Path

import numpy as np

from digitrec.errors import ModelError

TEST_POINTS = 0.05  # the most test accuracy, in percentage points, an int8 copy may lose
PERSON_STYLE_POINTS = 0.1  # the most accuracy on person-style renderings it may lose (bench/inference.py)
CALIBRATION_DIGITS = 2048  # training digits whose activations set the int8 ranges
CALIBRATION_BATCH = 256

Checks = dict[str, tuple[np.ndarray, np.ndarray, float]]  # name -> (images (N, 1, 28, 28), labels (N,), points allowed)


def quantize_int8(source: Path, out: Path, calibration_images: np.ndarray, checks: Checks) -> dict:
    """Write an int8 copy of the ONNX model at `source` to `out` if, on every check set, its accuracy is
    within the set's allowance of the float model's; otherwise raise `ModelError` and write nothing.
    Returns the accuracies, per check set, of both models."""
    import onnx

    from digitrec import runtime
    from digitrec.files import write_atomic
    from digitrec.tasks import DIGITS

    model = onnx.load(str(source))
    logits_only(model)
    with tempfile.TemporaryDirectory() as folder:
        float_path, int8_path = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        onnx.save(model, str(float_path))
        quantize_file(float_path, int8_path, calibration_images, float_nodes(model))
        quantized = onnx.load(str(int8_path))
    float_logits = runtime.from_source(model.SerializeToString(), str(source), DIGITS).forward
    int8_logits = runtime.from_source(quantized.SerializeToString(), f"{out} (int8)", DIGITS).forward
    report = {
        name: {
            "float": accuracy(float_logits, images, labels),
            "int8": accuracy(int8_logits, images, labels),
            "allowed_points": points,
        }
        for name, (images, labels, points) in checks.items()
    }
    for name, entry in report.items():
        lost = 100 * (entry["float"] - entry["int8"])
        if not lost <= entry["allowed_points"]:  # written so that NaN fails
            raise ModelError(
                f"the int8 copy loses {lost:.2f} points of {name} accuracy ({100 * entry['int8']:.2f} % "
                f"against {100 * entry['float']:.2f} %), more than the {entry['allowed_points']:g} allowed; "
                f"nothing written"
            )
    entry = quantized.metadata_props.add()
    entry.key, entry.value = (
        "quantization",
        json.dumps({"precision": "int8", "calibration_digits": len(calibration_images), "accuracy": report}),
    )
    write_atomic(out, quantized.SerializeToString())
    return report


def logits_only(model) -> None:
    """Cut `model` (an onnx ModelProto) down, in place, to what its `logits` output needs."""
    outputs = [output for output in model.graph.output if output.name == "logits"]
    needed, nodes = {"logits"}, []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            nodes.append(node)
            needed.update(node.input)
    initializers = [tensor for tensor in model.graph.initializer if tensor.name in needed]
    for field, kept in (
        (model.graph.output, outputs),
        (model.graph.node, nodes[::-1]),
        (model.graph.initializer, initializers),
    ):
        del field[:]
        field.extend(kept)


def float_nodes(model) -> list[str]:
    """The names of the nodes that stay float: the first block (up to its pool, and after a pool-first block's
    pool its batch norm and ReLU, up to the second convolution) and every batch norm left unfolded (a
    pool-first model's: quantizing their per-channel scales cost 0.1 points on thin-pen digits)."""
    names, pooled = [], False
    for node in model.graph.node:
        if pooled and node.op_type in ("Conv", "Gemm", "MatMul"):
            break
        names.append(node.name)
        pooled = pooled or node.op_type in ("MaxPool", "AveragePool")
    if not pooled:
        return []  # no pooling (the softmax model): everything is quantized
    return names + [
        node.name for node in model.graph.node if node.op_type == "BatchNormalization" and node.name not in names
    ]


def quantize_file(source: Path, out: Path, calibration_images: np.ndarray, kept_float: list[str]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(range(0, len(calibration_images), CALIBRATION_BATCH))

        def get_next(self):
            start = next(self.batches, None)
            return None if start is None else {"images": calibration_images[start : start + CALIBRATION_BATCH]}

    prepared = out.with_name("prepared.onnx")
    quant_pre_process(
        str(source), str(prepared), skip_symbolic_shape=True
    )  # shapes and constants, as the quantizer asks
    quantize_static(
        str(prepared),
        str(out),
        Batches(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=kept_float,
    )


def accuracy(logits, images: np.ndarray, labels: np.ndarray) -> float:
    predicted = np.concatenate([logits(images[i : i + 1000]).argmax(1) for i in range(0, len(images), 1000)])
    return float((predicted == labels).mean())
