import pytest
import torch

from digitrec import checkpoint, files, models
from digitrec.errors import ModelError


def test_float16_storage_round_trips_closely(tmp_path):
    model = models.create("fast")
    files.write_atomic(tmp_path / "weights.safetensors",
                       checkpoint.weights_bytes(model, {"model": "fast"}, {"test_accuracy": 0.5}, dtype=torch.float16))
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
