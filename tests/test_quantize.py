"""int8 copies of an exported model: the logits-only cut, the accuracy gate, the bundled copy that
`predict_many` runs, and `digitrec export --quantize int8`."""

import json
import re

import numpy as np
import onnx
import pytest

from digitrec import runtime
from digitrec.errors import ModelError
from digitrec.files import BUNDLED_INT8, BUNDLED_ONNX
from digitrec.quantize import TEST_POINTS, accuracy, logits_only, quantize_int8
from digitrec.recognizer import Recognizer
from digitrec.tasks import DIGITS

from helpers import run


def test_the_logits_only_cut_gives_the_exported_models_logits_exactly(mnist):
    model = onnx.load(str(BUNDLED_ONNX))
    logits_only(model)
    assert [output.name for output in model.graph.output] == ["logits"]
    cut = runtime.from_source(model.SerializeToString(), "cut", DIGITS).forward
    full = runtime.load_onnx(BUNDLED_ONNX, DIGITS).forward
    images = mnist.test.images[:1000].numpy()
    assert np.array_equal(cut(images), full(images))


def test_the_bundled_int8_copy_is_as_accurate_as_the_float_model_on_the_whole_test_set(mnist):
    images, labels = mnist.test.images.numpy(), mnist.test.labels.numpy()
    int8_model = runtime.load_onnx(BUNDLED_INT8, DIGITS)
    int8, stored = int8_model.forward, int8_model.metadata
    float_logits = runtime.load_onnx(BUNDLED_ONNX, DIGITS).forward
    on_int8, on_float = accuracy(int8, images, labels), accuracy(float_logits, images, labels)
    assert on_float == 0.9971 and on_int8 >= on_float - TEST_POINTS / 100
    recorded = json.loads(stored["quantization"])
    assert recorded["accuracy"]["test"] == {"float": on_float, "int8": on_int8, "allowed_points": TEST_POINTS}
    assert recorded["accuracy"].keys() > {"test", "thin pen"}  # the bundled copy was gated on person-style sets too
    assert json.loads(stored["config"])["model"] == "fast"


def test_predict_many_reads_with_the_int8_copy_and_predict_with_the_float_model(mnist):
    recognizer = Recognizer.load()
    digit = (mnist.test.images[0, 0].numpy() * 255).round().astype(np.uint8)
    batched = recognizer.predict_many([("seven", digit)])[0]
    one = recognizer.predict(digit)
    assert batched.digit == one.digit == 7 and np.array_equal(batched.preprocessed, one.preprocessed)
    assert (
        batched.probabilities == recognizer.predict_arrays([one.preprocessed], recognizer.batch_logits)[0].probabilities
    )
    assert batched.probabilities != one.probabilities  # close, not equal: the int8 copy rounds


def test_an_int8_copy_that_loses_accuracy_is_refused_and_nothing_is_written(mnist, tmp_path):
    out = tmp_path / "int8.onnx"
    too_bright = mnist.train.images[:256].numpy() * 100  # ranges 100 times too wide: too coarse for real digits
    checks = {"test": (mnist.test.images.numpy(), mnist.test.labels.numpy(), TEST_POINTS)}
    with pytest.raises(ModelError) as refusal:
        quantize_int8(BUNDLED_ONNX, out, too_bright, checks)
    assert re.fullmatch(
        r"the int8 copy loses \d+\.\d\d points of test accuracy \(\d+\.\d\d % against 99\.71 %\), "
        r"more than the 0\.05 allowed; nothing written",
        str(refusal.value),
    )
    assert not out.exists()


@pytest.mark.slow
def test_export_quantize_int8_writes_a_checked_copy_that_predict_reads(mnist, tmp_path):
    out = tmp_path / "int8.onnx"
    result = run("export", "--quantize", "int8", "--out", out)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        rf"wrote {re.escape(str(out))}: int8, test accuracy 99\.(6[6-9]|7\d) % against the float model's "
        r"99\.71 % \(at most 0\.05 points lower allowed\)",
        result.output.splitlines()[-2],
    )
    assert result.output.splitlines()[-1].startswith(f"wrote {tmp_path / 'calibration.json'}: the model's calibration")
    recognizer = Recognizer.load(out)
    assert recognizer.calibration.calibrated  # the default's calibration, carried beside the copy
    assert recognizer.info["name"] == "fast" and recognizer.info["runtime"] == "onnxruntime"
    images = mnist.test.images[:1000].numpy()
    bundled = runtime.load_onnx(BUNDLED_INT8, DIGITS).forward
    assert np.array_equal(recognizer.logits(images).argmax(1), bundled(images).argmax(1))
