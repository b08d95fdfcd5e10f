"""ONNX export and the torch-free onnxruntime path."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from digitrec import number_strings, runtime
from digitrec.confidence import Calibration
from digitrec.deploy import PARITY_TOLERANCE, export_onnx
from digitrec.errors import ModelError
from digitrec.files import BUNDLED_MODEL, BUNDLED_ONNX, BUNDLED_READER, BUNDLED_READER_ONNX
from digitrec.person_style import number_image
from digitrec.reading import read
from digitrec.recognizer import Recognizer
from digitrec.tasks import NUMBERS

from helpers import assert_one_line_error, run, seven_png, without_torch


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mnist):
    path = tmp_path_factory.mktemp("onnx") / "default.onnx"
    parity = export_onnx(None, path, check_images=mnist.test.images.numpy())
    return path, parity


@pytest.mark.slow
def test_export_matches_torch_on_the_whole_test_set(exported):
    _, parity = exported
    assert parity["images"] == 10000 and parity["same_digits"] == 10000
    assert parity["max_logit_difference"] <= PARITY_TOLERANCE


@pytest.mark.slow
def test_onnx_recognizer_gives_the_torch_answers(exported, mnist):
    path, _ = exported
    digits = mnist.test.images[:200, 0].numpy()
    torch_digits = [p.digit for p in Recognizer.load(BUNDLED_MODEL).predict_arrays(digits)]
    onnx_recognizer = Recognizer.load(path)
    assert [p.digit for p in onnx_recognizer.predict_arrays(digits)] == torch_digits
    assert onnx_recognizer.info["runtime"] == "onnxruntime" and onnx_recognizer.info["name"] == "fast"


@pytest.mark.slow
def test_bundled_onnx_copy_is_the_bundled_model(mnist):
    """The default Recognizer runs the bundled .onnx when onnxruntime is installed: it must not go stale."""
    images = mnist.test.images.numpy()
    onnx_logits = Recognizer.load().logits(images)
    torch_logits = Recognizer.load(BUNDLED_MODEL).logits(images)
    assert Recognizer.load().info["weights"] == str(BUNDLED_ONNX)
    assert (onnx_logits.argmax(1) == torch_logits.argmax(1)).all()
    assert np.abs(onnx_logits - torch_logits).max() <= PARITY_TOLERANCE


@pytest.mark.slow
def test_onnx_path_runs_where_torch_cannot_be_imported(exported, mnist, tmp_path):
    path, _ = exported
    image = seven_png(mnist, tmp_path)
    output = without_torch(
        f"result = CliRunner().invoke(main, ['predict', {str(image)!r}, '--model', {str(path)!r}, '--json'])\n"
        "print(result.stdout)\n"  # the export has no calibration: its warning goes to stderr
        "result = CliRunner().invoke(main, ['evaluate'])\n"
        "print(json.dumps({'exit_code': result.exit_code, 'output': result.output}))\n"
    )
    lines = output.strip().splitlines()
    assert json.loads(lines[0])["digit"] == 7
    evaluated = json.loads(lines[-1])
    assert evaluated["exit_code"] == 1
    assert evaluated["output"].strip() == (
        "error: this needs torch, which is not installed: pip install 'digitrec[train]' "
        "(predict and serve run an .onnx model without it)"
    )


def test_the_bundled_models_read_digits_and_numbers_where_torch_cannot_be_imported(mnist, tmp_path):
    images, labels = mnist.test.images[:, 0].numpy(), mnist.test.labels.numpy()
    picture, text = number_image(images, labels, 4, "separate", np.random.default_rng(7))
    (tmp_path / "number.jpg").write_bytes(picture)
    seven = seven_png(mnist, tmp_path)
    output = without_torch(
        f"for command in (['predict', {str(seven)!r}, '--json'], ['read', {str(tmp_path / 'number.jpg')!r}, '--json']):\n"
        "    result = CliRunner().invoke(main, command)\n"
        "    print(json.dumps({'exit_code': result.exit_code, 'output': result.stdout}))\n"
    )
    predicted, read = (json.loads(line) for line in output.strip().splitlines())
    assert predicted["exit_code"] == 0 and json.loads(predicted["output"])["digit"] == 7
    assert read["exit_code"] == 0 and json.loads(read["output"])["text"] == text


@pytest.mark.slow
def test_export_command_reports_parity_and_replaces_a_file_only_with_overwrite(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"an older export")
    refused = run("export", "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert_one_line_error(refused, f"{tmp_path / 'm.onnx'} exists; add --overwrite to replace it")
    assert (tmp_path / "m.onnx").read_bytes() == b"an older export"
    result = run("export", "--format", "onnx", "--out", tmp_path / "m.onnx", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "same digit on 10000/10000 test images" in result.output
    assert f"wrote {tmp_path / 'calibration.json'}: the model's calibration" in result.output
    assert (tmp_path / "calibration.json").read_bytes() == (BUNDLED_MODEL / "calibration.json").read_bytes()
    exported = Recognizer.load(tmp_path / "m.onnx")
    assert exported.info["runtime"] == "onnxruntime" and exported.calibration == Recognizer.load().calibration


def test_an_export_never_replaces_another_models_calibration_without_overwrite(softmax_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(softmax_run.run_dir, run_dir)
    (run_dir / "calibration.json").write_text(Calibration(temperature=1.5, calibrated=True).as_json())
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "calibration.json").write_text("another model's calibration")
    refused = run("export", run_dir, "--out", other / "m.onnx")
    assert_one_line_error(refused, f"{other / 'calibration.json'} exists and is not {run_dir}'s calibration")
    assert not (other / "m.onnx").exists() and (other / "calibration.json").read_text() == "another model's calibration"
    assert run("export", run_dir, "--out", other / "m.onnx", "--overwrite").exit_code == 0
    assert (other / "calibration.json").read_bytes() == (run_dir / "calibration.json").read_bytes()
    assert Recognizer.load(other / "m.onnx").calibration.temperature == 1.5


@pytest.mark.parametrize("name", ["weights.safetensors", "metrics.json", "config.json", "log.jsonl"])
@pytest.mark.parametrize("quantize", [(), ("--quantize", "int8")])
def test_export_never_writes_over_a_file_of_the_run_it_exports(softmax_run, tmp_path, name, quantize):
    run_dir = tmp_path / "run"
    shutil.copytree(softmax_run.run_dir, run_dir)
    before = (run_dir / name).read_bytes()
    for overwrite in ((), ("--overwrite",)):
        result = run("export", run_dir, "--out", run_dir / name, *quantize, *overwrite)
        assert_one_line_error(result, f"{run_dir / name}: a file of the run being exported", "never replaces it")
    assert (run_dir / name).read_bytes() == before
    bare = run("export", run_dir / "weights.safetensors", "--out", run_dir / "weights.safetensors", "--overwrite")
    assert_one_line_error(bare, "a file of the run being exported")


def test_corrupt_onnx_file_is_refused(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Recognizer.load(tmp_path / "bad.onnx")


class TwoOutputs(torch.nn.Module):
    """The bundled softmax's shape with a second output, like the activations an explaining export adds."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.linear = torch.nn.Linear(28 * 28, classes)

    def forward(self, images):
        flat = images.flatten(1)
        return self.linear(flat), flat.relu()


def onnx_file(path, module, input_name="images", output_names=("logits", "pixels"), config='{"model": "softmax"}'):
    """Write `module` as an ONNX file, as the export does, with the given names and metadata."""
    import io
    import warnings

    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            (torch.zeros(1, 1, 28, 28),),
            buffer,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes={name: {0: "batch"} for name in (input_name, *output_names)},
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    if config is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "config", config
    path.write_bytes(proto.SerializeToString())
    return path


def test_an_onnx_model_with_extra_outputs_beside_its_logits_is_accepted(tmp_path):
    recognizer = Recognizer.load(onnx_file(tmp_path / "m.onnx", TwoOutputs()))
    assert recognizer.info["name"] == "softmax"
    assert len(recognizer.predict_arrays(np.zeros((3, 28, 28), np.float32))) == 3


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda path: onnx_file(path, TwoOutputs(), input_name="pixels_in"),
            "expected one input 'images' of float (batch, 1, 28, 28)",
        ),
        (
            lambda path: onnx_file(path, TwoOutputs(classes=5)),
            "expected an output 'logits' of float (batch, 10), found logits",
        ),
        (lambda path: onnx_file(path, TwoOutputs(), output_names=("scores", "pixels")), "expected an output 'logits'"),
        (
            lambda path: onnx_file(path, TwoOutputs(), config="[1, 2]"),
            "the file's metadata is not a digitrec model config",
        ),
        (lambda path: onnx_file(path, TwoOutputs(), config=None), "no digitrec model config in the file's metadata"),
    ],
)
def test_onnx_files_that_are_not_digitrec_models_are_one_clear_error(tmp_path, make, message):
    path = make(tmp_path / "m.onnx")
    with pytest.raises(ModelError, match=re.escape(message)):
        Recognizer.load(path)
    assert_one_line_error(run("predict", "-", "--model", path), message)
    assert_one_line_error(run("serve", "--model", path, "--port", 1), message)  # refused before it binds


def test_onnx_weights_that_give_nan_are_refused(tmp_path):
    module = TwoOutputs()
    with torch.no_grad():
        module.linear.bias.fill_(float("nan"))
    with pytest.raises(ModelError, match="logits for blank images are not 10 finite numbers"):
        Recognizer.load(onnx_file(tmp_path / "m.onnx", module))


def test_the_export_parity_check_fails_on_nan(tmp_path, mnist):
    images = mnist.test.images[:10].numpy().copy()
    images[3, 0, 5, 5] = np.nan
    with pytest.raises(ModelError, match="the ONNX export disagrees with torch"):
        export_onnx(None, tmp_path / "m.onnx", check_images=images)
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def exported_reader(tmp_path_factory, mnist):
    path = tmp_path_factory.mktemp("onnx") / "reader.onnx"
    parity = export_onnx(
        BUNDLED_READER, path, check_images=mnist.test.images.numpy(), check_labels=mnist.test.labels.numpy()
    )
    return path, parity


def test_the_number_reader_exports_with_a_free_width_and_reads_as_torch_does(exported_reader, mnist):
    path, parity = exported_reader
    assert parity["strings"] == parity["same_readings"] == 200 and parity["max_logit_difference"] <= PARITY_TOLERANCE
    images, labels = mnist.test.images[:, 0].numpy(), mnist.test.labels.numpy()
    rng = np.random.default_rng(4)
    pictures = [number_image(images, labels, length, "touching", rng)[0] for length in (1, 3, 7)]  # three widths
    recognizer = Recognizer.load()
    on_torch, on_onnx = runtime.load(BUNDLED_READER, NUMBERS), runtime.load(path, NUMBERS)
    assert [read(on_onnx, recognizer, p).text for p in pictures] == [
        read(on_torch, recognizer, p).text for p in pictures
    ]


def test_the_bundled_reader_onnx_copy_is_the_bundled_reader(mnist):
    """`read` runs the bundled reader's .onnx when onnxruntime is installed: it must not go stale."""
    made = number_strings.fixed_set(mnist.test.images[:, 0].numpy(), mnist.test.labels.numpy(), 50)
    on_onnx, on_torch = runtime.load(None, NUMBERS), runtime.load(BUNDLED_READER, NUMBERS)
    assert on_onnx.info["weights"] == str(BUNDLED_READER_ONNX)
    assert np.abs(on_onnx.forward(made.pixels) - on_torch.forward(made.pixels)).max() <= PARITY_TOLERANCE


def test_a_reader_given_as_the_digit_model_and_a_digit_model_given_as_the_reader_are_refused(tmp_path):
    with pytest.raises(ModelError, match="model 'reader' reads numbers, not digits: give it as --reader"):
        Recognizer.load(BUNDLED_READER)
    with pytest.raises(ModelError, match="model 'fast' reads digits, not numbers: give it as --model"):
        runtime.load(BUNDLED_MODEL, NUMBERS)
    with pytest.raises(ModelError, match="not a digitrec number reader"):
        runtime.load(BUNDLED_ONNX, NUMBERS)
    with pytest.raises(ModelError, match="not a digitrec model"):
        Recognizer.load(BUNDLED_READER_ONNX)
    picture = tmp_path / "n.png"
    Image.new("L", (60, 28), 255).save(picture)
    assert_one_line_error(run("read", "--reader", BUNDLED_MODEL, picture), "give it as --model")
