"""ONNX export and the torch-free onnxruntime path."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from digitrec.deploy import PARITY_TOLERANCE, export_onnx
from digitrec.errors import ModelError
from digitrec.recognizer import Recognizer

from test_cli import run


@pytest.fixture(scope="module")
def exported(tmp_path_factory, mnist):
    path = tmp_path_factory.mktemp("onnx") / "default.onnx"
    parity = export_onnx(None, path, check_images=mnist.test.images.numpy())
    return path, parity


def test_export_matches_torch_on_the_whole_test_set(exported):
    _, parity = exported
    assert parity["images"] == 10000 and parity["same_digits"] == 10000
    assert parity["max_logit_difference"] <= PARITY_TOLERANCE


def test_onnx_recognizer_gives_the_torch_answers(exported, mnist):
    path, _ = exported
    digits = mnist.test.images[:200, 0].numpy()
    torch_digits = [p.digit for p in Recognizer.load().predict_arrays(digits)]
    onnx_recognizer = Recognizer.load(path)
    assert [p.digit for p in onnx_recognizer.predict_arrays(digits)] == torch_digits
    assert onnx_recognizer.info["runtime"] == "onnxruntime" and onnx_recognizer.info["name"] == "fast"


def test_onnx_path_imports_no_torch(exported, mnist, tmp_path):
    path, _ = exported
    image = tmp_path / "seven.png"
    Image.fromarray(255 - (mnist.test.images[0, 0].numpy() * 255).astype(np.uint8)).resize((100, 100)).save(image)
    script = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from digitrec.cli import main\n"
        f"result = CliRunner().invoke(main, ['predict', {str(image)!r}, '--model', {str(path)!r}, '--json'])\n"
        "print(result.output)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules}))\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    lines = output.strip().splitlines()
    assert json.loads(lines[0])["digit"] == 7
    assert json.loads(lines[-1]) == {"torch": False}


def test_export_command_reports_parity(tmp_path):
    result = run("export", "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert "same digit on 10000/10000 test images" in result.output


def test_corrupt_onnx_file_is_refused(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Recognizer.load(tmp_path / "bad.onnx")
