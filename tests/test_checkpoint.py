import json

import numpy as np
import pytest
import torch

from digitrec import checkpoint, files, models
from digitrec.errors import ModelError


def test_float16_storage_round_trips_closely(tmp_path):
    model = models.create("fast")
    files.write_atomic(
        tmp_path / "weights.safetensors",
        checkpoint.weights_bytes(model, {"model": "fast"}, {"test_accuracy": 0.5}, dtype=torch.float16),
    )
    loaded = checkpoint.load(tmp_path / "weights.safetensors")
    assert loaded.metrics == {"test_accuracy": 0.5}
    for name, tensor in model.state_dict().items():
        assert torch.allclose(loaded.model.state_dict()[name].float(), tensor.float(), atol=1e-3, rtol=1e-3), name


def test_missing_weights_are_reported(tmp_path):
    with pytest.raises(ModelError, match="no such weights file"):
        checkpoint.load(tmp_path)


def test_corrupt_weights_are_reported(tmp_path, softmax_run):
    damaged = tmp_path / "weights.safetensors"
    damaged.write_bytes((softmax_run.run_dir / "weights.safetensors").read_bytes()[:100])
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        checkpoint.load(damaged)


def test_weights_of_another_architecture_are_reported(tmp_path, softmax_run):
    from safetensors.torch import save_file

    weights = {"linear.weight": torch.zeros(10, 100), "linear.bias": torch.zeros(10)}
    save_file(weights, tmp_path / "w.safetensors", metadata={"config": '{"model": "softmax"}'})
    with pytest.raises(ModelError, match=r"do not fit model 'softmax': linear.weight has shape \(10, 100\)"):
        checkpoint.load(tmp_path / "w.safetensors")
    save_file(weights, tmp_path / "x.safetensors", metadata={"config": '{"model": "cnn"}'})
    with pytest.raises(ModelError, match="do not fit model 'cnn': missing"):
        checkpoint.load(tmp_path / "x.safetensors")


def test_file_without_digitrec_metadata_is_reported(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ModelError, match="no digitrec model config"):
        checkpoint.load(tmp_path / "plain.safetensors")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    files.write_atomic(target, "old")
    with pytest.raises(TypeError):
        files.write_atomic(target, 12345)  # not bytes or str: fails before anything is replaced
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize(
    "width, message",
    [
        (-1, "width must be in 1..256, not -1"),
        (10**6, "width must be in 1..256, not 1000000"),
        ("16", "width must be a whole number, not '16'"),
    ],
)
def test_a_size_asked_for_by_a_small_file_is_bounded_before_building(tmp_path, width, message):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, path, metadata={"config": json.dumps({"model": "fast", "width": width})})
    assert path.stat().st_size < 200
    with pytest.raises(ModelError, match=f"{path}: {message}"):
        checkpoint.load(path)


def test_non_finite_weights_are_refused(tmp_path):
    model = models.create("fast", width=4)
    with torch.no_grad():
        model.layers[-1].weight[0, 0] = float("nan")
    files.write_atomic(
        tmp_path / "weights.safetensors", checkpoint.weights_bytes(model, {"model": "fast", "width": 4}, {})
    )
    with pytest.raises(
        ModelError,
        match=r"the weights hold NaN or infinite values \(layers.7.weight\): the training that wrote them diverged",
    ):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"config": "[1, 2]"}, "not a digitrec model config"),
        ({"config": '{"model": "fast"}', "metrics": '{"test_accuracy": NaN}'}, "no digitrec model config"),
    ],
)
def test_metadata_that_is_not_a_config_object_or_holds_nan_is_refused(tmp_path, metadata, message):
    from safetensors.torch import save_file

    save_file(models.create("fast").state_dict(), tmp_path / "w.safetensors", metadata=metadata)
    with pytest.raises(ModelError, match=message):
        checkpoint.load(tmp_path / "w.safetensors")


def test_a_model_that_overflows_to_nan_is_an_error_not_a_nan_answer(tmp_path):
    from digitrec.recognizer import Recognizer

    model = models.create("softmax")
    with torch.no_grad():
        model.linear.weight.fill_(3e38)  # finite, but the sum over 784 pixels is not
    files.write_atomic(tmp_path / "weights.safetensors", checkpoint.weights_bytes(model, {"model": "softmax"}, {}))
    recognizer = Recognizer.load(tmp_path)
    with pytest.raises(ModelError, match="the model's answer is NaN or infinite"):
        recognizer.predict_arrays(np.ones((1, 28, 28), np.float32))
