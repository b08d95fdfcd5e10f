"""What a model computed for one image: saliency that points at the ink that decided, activations and
weights that are the model's own on either runtime, and `digitrec explain`."""

import numpy as np
import pytest
import torch
from PIL import Image

from digitrec import checkpoint, models
from digitrec.deploy import export_onnx
from digitrec.explain import explain, explain_array
from digitrec.files import BUNDLED_DIR, BUNDLED_MODEL, BUNDLED_ONNX
from digitrec.preprocess import dilate
from digitrec.recognizer import Recognizer
from digitrec.tasks.base import softmax

from helpers import run

DIGITS = 50


@pytest.fixture(scope="module")
def bundled():
    recognizer = Recognizer.load()  # the default install's path: model.onnx on onnxruntime
    assert recognizer.info["weights"] == str(BUNDLED_ONNX)
    return recognizer


@pytest.fixture(scope="module")
def test_explanations(bundled, mnist):
    digits = mnist.test.images[:DIGITS, 0].numpy()
    return digits, [explain_array(bundled, digit) for digit in digits]


def test_saliency_of_the_answer_lies_on_the_ink(test_explanations):
    digits, explanations = test_explanations
    for digit, explanation in zip(digits, explanations):
        positive = np.clip(explanation.saliency[explanation.prediction.digit], 0, None)
        ink = dilate((digit > 0.5).astype(np.float32), 1) > 0  # the strokes' core, one pixel wider
        assert positive[ink].sum() > 0.8 * positive.sum()


def test_blanking_the_reddest_ink_costs_the_answer_more_than_blanking_random_ink(bundled, test_explanations):
    """The saliency ranks ink by what it does for the answer: the top 15 % of the ink by saliency, blanked,
    takes far more from the predicted digit's probability than as many ink pixels drawn at random."""
    digits, explanations = test_explanations
    generator = np.random.default_rng(0)
    ranked_losses, random_losses = [], []
    for digit, explanation in zip(digits, explanations):
        answer = explanation.prediction.digit
        # the model's own probability, before and after: the prediction's confidence is calibrated
        before = softmax(bundled.logits(digit.reshape(1, 1, 28, 28)).astype(np.float64), 1)[0, answer]
        ink = np.flatnonzero(digit.ravel() > 0)
        count = int(0.15 * len(ink))
        reddest = ink[np.argsort(explanation.saliency[answer].ravel()[ink])[::-1][:count]]
        for blanked, losses in ((reddest, ranked_losses), (generator.choice(ink, count, replace=False), random_losses)):
            copy = digit.copy().ravel()
            copy[blanked] = 0
            probability = softmax(bundled.logits(copy.reshape(1, 1, 28, 28)).astype(np.float64), 1)[0, answer]
            losses.append(before - probability)
    assert np.mean(ranked_losses) > 0.25 and np.mean(ranked_losses) > 3 * np.mean(random_losses)


def test_saliency_differs_per_class_and_sums_the_classes_evidence(test_explanations):
    digits, explanations = test_explanations
    explanation = explanations[0]  # a 7
    assert explanation.prediction.digit == 7 and explanation.saliency.shape == (10, 28, 28)
    assert explanation.saliency[7].sum() > 0 > explanation.saliency[1].sum()
    assert (explanation.saliency[:, digits[0] == 0] == 0).all()  # background was never changed: no share


def test_bundled_onnx_activations_equal_torch_hooks_on_the_same_weights(bundled, mnist):
    images = mnist.test.images[:100].numpy()
    exported = bundled.outputs(images)
    with torch.no_grad():
        hooked = models.inside_outputs(checkpoint.load(BUNDLED_MODEL).model, torch.from_numpy(images))
    assert list(exported) == ["logits", "activation:conv1", "activation:conv2", "activation:conv3", "filters:conv1"]
    assert list(hooked) == list(exported)
    assert [exported[f"activation:conv{i}"].shape[1:] for i in (1, 2, 3)] == [
        (32, 14, 14),
        (64, 7, 7),
        (128, 3, 3),
    ]  # pool first
    for name, value in hooked.items():
        assert np.abs(exported[name] - value.numpy()).max() <= 1e-4, name


def test_both_runtimes_give_one_explanation(bundled, mnist):
    digit = mnist.test.images[0, 0].numpy()
    on_onnx, on_torch = explain_array(bundled, digit), explain_array(Recognizer.load(BUNDLED_MODEL), digit)
    assert on_onnx.prediction.digit == on_torch.prediction.digit
    assert np.abs(on_onnx.saliency - on_torch.saliency).max() < 1e-3
    for exported, hooked in zip(on_onnx.stages, on_torch.stages):
        assert exported.name == hooked.name and np.abs(exported.maps - hooked.maps).max() <= 1e-4
    assert np.array_equal(on_onnx.filters, on_torch.filters)


def test_softmax_templates_are_its_weights(softmax_run, mnist, tmp_path):
    export_onnx(softmax_run.run_dir, tmp_path / "softmax.onnx")
    weights = softmax_run.model.linear.weight.detach().numpy().reshape(10, 28, 28)
    digit = mnist.test.images[0, 0].numpy()
    for recognizer in (Recognizer.load(tmp_path / "softmax.onnx"), Recognizer.load(softmax_run.run_dir)):
        explanation = explain_array(recognizer, digit)
        assert np.array_equal(explanation.templates, weights)
        assert explanation.stages == [] and explanation.filters is None


def test_tutorial_cnn_has_two_stages_and_its_filters(mnist):
    explanation = explain(Recognizer.load(BUNDLED_DIR / "cnn"), mnist.test.images[0, 0].numpy())
    assert [(stage.name, stage.maps.shape) for stage in explanation.stages] == [
        ("conv1", (32, 28, 28)),
        ("conv2", (64, 14, 14)),
    ]
    assert explanation.filters.shape == (32, 5, 5) and explanation.templates is None


def test_explain_command_writes_a_picture_per_image_and_prints_the_digit(mnist, softmax_run, tmp_path):
    seven = tmp_path / "seven.png"
    Image.fromarray(255 - (mnist.test.images[0, 0].numpy() * 255).astype(np.uint8)).resize((200, 200)).save(seven)
    (tmp_path / "blank.png").write_bytes(b"not an image")
    result = run("explain", seven, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    picture = tmp_path / "out" / f"{str(seven).strip('/').replace('/', '_')}.explain.png"
    assert result.stdout.split()[:2] == [str(seven), "7"] and str(picture) in result.stdout
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width >= 500 and image.height >= 500
    from_run = run("explain", seven, "--model", softmax_run.run_dir, "--out", tmp_path / "softmax")
    assert from_run.exit_code == 0 and from_run.stdout.split()[1] == "7"  # stderr: the run has no calibration
    with Image.open(tmp_path / "softmax" / picture.name) as image:  # no feature maps, but ten templates
        assert image.format == "PNG" and image.width >= 500
    failed = run("explain", tmp_path / "blank.png", "--model", BUNDLED_DIR / "cnn", "--out", tmp_path / "out")
    assert failed.exit_code == 1 and "error:" in failed.output and "1 of 1 images failed" in failed.output


def test_an_onnx_file_exported_before_the_inside_outputs_still_gets_saliency(bundled, mnist, tmp_path):
    import onnx

    model = onnx.load(str(BUNDLED_ONNX))
    logits_output = [output for output in model.graph.output if output.name == "logits"]
    del model.graph.output[:]
    model.graph.output.extend(logits_output)
    onnx.save(model, str(tmp_path / "logits-only.onnx"))
    digit = mnist.test.images[0, 0].numpy()
    explanation = explain_array(Recognizer.load(tmp_path / "logits-only.onnx"), digit)
    assert explanation.stages == [] and explanation.filters is None and explanation.templates is None
    assert np.abs(explanation.saliency - explain_array(bundled, digit).saliency).max() < 1e-6


def test_explain_runs_where_torch_cannot_be_imported(mnist, tmp_path):
    from helpers import seven_png, without_torch

    seven = seven_png(mnist, tmp_path)
    output = without_torch(
        f"result = CliRunner().invoke(main, ['explain', {str(seven)!r}, '--out', {str(tmp_path)!r}])\n"
        "print(result.exit_code, result.output)\n"
    )
    assert output.split()[:3] == ["0", str(seven), "7"]
    assert len(list(tmp_path.glob("*.explain.png"))) == 1
