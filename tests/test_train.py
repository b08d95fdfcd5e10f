import json
from dataclasses import asdict, replace

import pytest
import torch

from digitrec import checkpoint, data, files, rundir, train
from digitrec.config import TrainConfig
from digitrec.errors import ConfigError, TrainingDiverged
from digitrec.tasks import DIGITS, NUMBERS


def test_tutorial_recipes_resolve_to_the_tutorial_settings():
    softmax = train.resolve_config("softmax")
    assert (softmax.steps, softmax.batch_size, softmax.optimizer, softmax.lr) == (1000, 100, "sgd", 0.5)
    cnn = train.resolve_config("cnn")
    assert (cnn.steps, cnn.batch_size, cnn.optimizer, cnn.lr) == (20000, 50, "adam", 1e-4)
    assert train.resolve_config("cnn", steps=10, lr=None).steps == 10  # None means "not overridden"


def test_unknown_recipe_and_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="no recipe 'long'"):
        train.resolve_config("softmax", "long")
    with pytest.raises(ConfigError, match=r"steps must be in 1\.\.10,000,000, not 0"):
        train.resolve_config("softmax", steps=0)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("lr", float("nan"), "lr must be a finite number, not nan"),
        ("lr", float("inf"), "lr must be a finite number, not inf"),
        ("lr", 1e300, r"lr must be in \(0, 10\], not 1e\+300"),
        ("lr", 0.0, r"lr must be in \(0, 10\], not 0.0"),
        ("weight_decay", -0.1, r"weight_decay must be in \[0, 1\]"),
        ("label_smoothing", 1.0, r"label_smoothing must be in \[0, 1\)"),
        ("batch_size", 60000, r"batch_size must be in 1\.\.55,000, not 60000"),
        ("seed", 2**70, r"seed must be in 0\.\.9,223,372,036,854,775,807"),
        ("seed", -1, r"seed must be in 0\.\."),
        ("steps", 10**8, r"steps must be in 1\.\.10,000,000"),
        ("width", 100000, r"width must be in 1\.\.256, not 100000"),
        ("width", 0, r"width must be in 1\.\.256, not 0"),
        ("optimizer", "rmsprop", "unknown optimizer 'rmsprop'"),
        ("augment_scale", 1.0, r"augment_scale must be in \[0, 1\)"),
    ],
)
def test_out_of_range_settings_are_refused_with_their_bounds(setting, value, message):
    with pytest.raises(ConfigError, match=message):
        train.resolve_config("fast", **{setting: value})


def test_a_config_read_from_a_file_is_held_to_the_same_bounds():
    with pytest.raises(ConfigError, match="lr must be a finite number, not 'fast'"):
        TrainConfig.from_dict({"model": "fast", "lr": "fast"})
    with pytest.raises(ConfigError, match="unknown training settings: colour"):
        TrainConfig.from_dict({"model": "fast", "colour": "red"})


def test_softmax_with_tutorial_defaults_passes_90_percent_on_the_real_test_set(softmax_run):
    assert softmax_run.metrics["test_accuracy"] >= 0.90
    assert softmax_run.metrics["steps"] == 1000


def test_run_directory_holds_weights_config_metrics_and_log(softmax_run):
    run_dir = softmax_run.run_dir
    assert json.loads((run_dir / "config.json").read_text()) == asdict(softmax_run.config)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test_accuracy", "validation_accuracy", "train_seconds", "steps"} <= metrics.keys()
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == list(range(100, 1001, 100))
    assert log[-1]["validation_accuracy"] == metrics["validation_accuracy"]


def test_weights_written_by_a_run_load_and_reproduce_its_accuracy(softmax_run, mnist):
    loaded = checkpoint.load(softmax_run.run_dir)
    errors = int((loaded.model(mnist.test.images).argmax(1) != mnist.test.labels).sum())
    assert softmax_run.metrics["test_accuracy"] == (10000 - errors) / 10000  # an exact ratio, not float32's 0.91039997


def test_same_seed_gives_identical_weights_on_cpu(mnist):
    config = train.resolve_config("fast", steps=20, log_every=10, eval_every=20)
    runs = [
        train.train(config, mnist, torch.device("cpu"), show_progress=False, print_line=lambda _: None)
        for _ in range(2)
    ]
    for (name, first), second in zip(runs[0].model.state_dict().items(), runs[1].model.state_dict().values()):
        assert torch.equal(first, second), name


def test_warmup_cosine_schedule_warms_up_then_decays_to_zero():
    factor = train.lr_factor(train.TrainConfig(steps=100, schedule="warmup_cosine", warmup_fraction=0.2))
    assert factor(0) == pytest.approx(1 / 20) and factor(19) == pytest.approx(1.0)
    assert factor(60) < factor(40) and factor(100) == pytest.approx(0.0)


def test_run_folders_that_name_the_old_onecycle_schedule_still_read():
    recorded = json.loads((files.BUNDLED_MODEL / "config.json").read_text())
    older = {key: value for key, value in recorded.items() if key not in ("pool_first", "precision")}
    config = TrainConfig.from_dict({**older, "schedule": "onecycle"})  # as runs recorded it before the rename
    assert config.schedule == "warmup_cosine" and config.width == 32 and config.precision == "auto"
    assert config.pool_first is None  # nor did they know pool_first: their model is built as before


CPU = torch.device("cpu")
AVX2 = {"sse4_2", "avx2", "fma"}
ZEN4 = AVX2 | {"avx512f", "avx512bw", "avx512_bf16"}  # AVX-512 BF16, no AMX
SAPPHIRE_RAPIDS = ZEN4 | {"amx_tile", "amx_bf16", "amx_int8"}


def test_auto_precision_is_float32_on_gpus_bf16_on_cpus_with_bf16_arithmetic_and_float32_elsewhere():
    assert train.choose_precision("auto", CPU, AVX2) == "fp32"
    assert train.choose_precision("auto", CPU, ZEN4) == "bf16"
    assert train.choose_precision("auto", CPU, SAPPHIRE_RAPIDS) == "bf16"
    # on an H200 float32 trained fast quick faster than bf16: the CPU's flags do not matter on a GPU
    assert train.choose_precision("auto", torch.device("cuda"), SAPPHIRE_RAPIDS) == "fp32"
    assert train.choose_precision("auto", "cuda:1", ZEN4) == "fp32"
    assert train.choose_precision("fp32", CPU, SAPPHIRE_RAPIDS) == "fp32"
    assert train.choose_precision("bf16", CPU, AVX2) == "bf16"  # asked for: honoured, however slow
    assert train.choose_precision("bf16", "cuda", AVX2) == "bf16"


def test_cuda_graphs_are_chosen_on_cuda_for_one_process_training_a_digit_model_and_never_on_the_cpu():
    quick = train.resolve_config("fast", "quick")
    assert train.uses_cuda_graph(quick, "cuda") and train.uses_cuda_graph(replace(quick, cuda_graph="on"), "cuda:0")
    assert not train.uses_cuda_graph(replace(quick, cuda_graph="off"), "cuda")
    for setting in ("auto", "on"):  # ignored on the CPU: no graphs to capture there
        assert not train.uses_cuda_graph(replace(quick, cuda_graph=setting), CPU)
    assert not train.uses_cuda_graph(quick, "cuda", processes=2)  # auto: DistributedDataParallel runs eagerly
    with pytest.raises(ConfigError, match="--cuda-graph on cannot be honoured: it runs in 2 processes"):
        train.uses_cuda_graph(replace(quick, cuda_graph="on"), "cuda", processes=2)
    assert not train.uses_cuda_graph(train.resolve_config("reader"), "cuda")
    with pytest.raises(ConfigError, match="--cuda-graph on applies to digit models only"):
        train.resolve_config("reader", cuda_graph="on")


def test_whether_a_task_can_be_graphed_is_the_tasks_own_answer():
    assert DIGITS.graphable and not NUMBERS.graphable
    reader = replace(train.resolve_config("reader"), cuda_graph="on")  # past resolve_config's own refusal
    with pytest.raises(ConfigError, match="cannot be honoured: the number reader's strips change width"):
        train.uses_cuda_graph(reader, "cuda")


def test_a_graphed_step_sees_the_batches_and_augmentation_of_an_eager_one(mnist):
    """What the graph gathers by index, and varies by drawn numbers, is what an eager step gets: the
    same batches, and the same images as the stroke and affine augmentation drawing their own numbers."""
    config = train.resolve_config("fast", "full")
    split = mnist.validation
    eager, indexed = DIGITS.batches(split, 32, 5, 0, 1, 3), DIGITS.batch_indices(split, 32, 5, 0, 1, 3)
    for _ in range(3):
        images, labels = next(eager)
        picked = DIGITS.indexed_batch(split, next(indexed))
        assert torch.equal(images, picked[0]) and torch.equal(labels, picked[1])
    draws = DIGITS.augmentation_draws(torch.Generator().manual_seed(7), len(images), config)
    assert draws.shape == (len(images), 5) and draws.min() >= -1 and draws.max() < 1
    generator = torch.Generator().manual_seed(7)
    stroked = data.random_stroke(images, generator, config.augment_stroke)
    expected = data.random_affine(
        stroked, generator, config.augment_degrees, config.augment_shift, config.augment_scale
    )
    assert torch.equal(DIGITS.augment(images, draws, config), expected)
    plain = replace(config, augment_stroke=0.0, augment_degrees=0.0, augment_shift=0.0, augment_scale=0.0)
    assert DIGITS.augmentation_draws(generator, 4, plain) is None and DIGITS.augment(images, None, plain) is images
    assert NUMBERS.augmentation_draws(generator, 4, train.resolve_config("reader")) is None


def test_cuda_graph_on_is_ignored_on_the_cpu_the_weights_are_those_of_an_eager_run(mnist):
    config = train.resolve_config("fast", "quick", width=4, steps=12, log_every=6, eval_every=12)
    quiet = {"print_line": lambda _: None, "show_progress": False}
    eager = train.train(replace(config, cuda_graph="off"), mnist, CPU, **quiet)
    asked = train.train(replace(config, cuda_graph="on"), mnist, CPU, **quiet)
    assert asked.metrics["provenance"]["cuda_graph"] is False
    for name, tensor in eager.model.state_dict().items():
        assert torch.equal(tensor, asked.model.state_dict()[name]), name


def test_ema_is_what_is_evaluated_and_saved_and_trails_the_trained_weights(mnist):
    config = train.resolve_config("fast", "quick", width=4, steps=20, log_every=10, eval_every=20, ema=0.9)
    training = train.Training(config, mnist, CPU)
    first = training.model.state_dict()["layers.0.0.weight"].clone()
    training.advance(20)
    trained = training.model.state_dict()["layers.0.0.weight"]
    averaged = training.evaluated_model.state_dict()["layers.0.0.weight"]
    assert training.evaluated_model is training.ema_model and not torch.equal(averaged, trained)
    assert (averaged - trained).abs().max() < (first - trained).abs().max()  # between the start and now, nearer now
    assert torch.equal(training.ema_model.state_dict()["layers.0.2.num_batches_tracked"], torch.tensor(20))


def test_bf16_training_runs_and_records_its_precision(tmp_path):
    from helpers import run

    out = tmp_path / "run"
    result = run(
        "train",
        "--model",
        "fast",
        "--width",
        4,
        "--steps",
        30,
        "--log-every",
        10,
        "--precision",
        "bf16",
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "on cpu, precision bf16" in result.output
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["provenance"]["precision"] == "bf16" and metrics["test_accuracy"] > 0.5
    )  # 30 steps: far above chance (fp32: 76 %, bf16: 79 % here)


def test_a_non_finite_loss_stops_training_naming_the_step(mnist):
    training = train.Training(train.resolve_config("fast", width=4, steps=50), mnist, CPU)
    training.advance(5)
    with torch.no_grad():
        training.model.layers[-1].bias.fill_(float("inf"))  # what an overflowing step leaves behind
    with pytest.raises(
        TrainingDiverged, match=r"training diverged: the loss was nan at step 6 \(lr 0.2\); try a lower --lr"
    ):
        training.advance(10)


def test_a_diverged_run_exits_with_one_error_line(mnist, tmp_path):
    from helpers import run

    training = train.Training(train.resolve_config("fast", width=4, steps=40, log_every=10), mnist, CPU)
    training.advance(10)
    with torch.no_grad():
        training.model.layers[0][0].weight.fill_(float("nan"))  # as a step with too high a rate leaves them
    rundir.save_checkpoint(tmp_path, {**training.state_dict(), "log": [], "train_seconds": 0.0})
    result = run("train", "--resume", tmp_path, "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[1] == "resuming at step 10 of 40"
    assert lines[-1].startswith("error: training diverged: the loss was nan at step 11 (lr 0.2); try a lower --lr")
    assert not (tmp_path / "weights.safetensors").exists()


def test_the_number_reader_trains_on_strings_and_records_their_accuracy(tmp_path):
    from helpers import run

    out = tmp_path / "reader"
    result = run(
        "train",
        "--model",
        "reader",
        "--width",
        4,
        "--steps",
        6,
        "--batch-size",
        8,
        "--log-every",
        3,
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "training reader (default) for 6 steps of 8" in result.output
    assert "whole strings read right of 1,000 made from test digits" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "reader" and 0 <= metrics["test_accuracy"] <= 1
    loaded = checkpoint.load(out, NUMBERS)
    assert loaded.config["model"] == "reader" and loaded.config["width"] == 4


def test_digit_augmentations_are_refused_for_the_number_reader():
    with pytest.raises(
        ConfigError, match="reads whole numbers: --augment-degrees, --label-smoothing apply to digit models only"
    ):
        train.resolve_config("reader", augment_degrees=5, label_smoothing=0.1)


def test_a_resumed_reader_sees_the_same_strings_and_ends_with_the_same_weights(mnist):
    config = train.resolve_config("reader", width=4, steps=6, batch_size=8, precision="fp32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same order of arithmetic in both runs
    try:
        straight = train.Training(config, mnist, CPU)
        straight.advance(6)
        first = train.Training(config, mnist, CPU)
        first.advance(3)
        state = first.state_dict()
        resumed = train.Training(config, mnist, CPU)
        resumed.load_state_dict(state)
        resumed.advance(3)
    finally:
        torch.set_num_threads(threads)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
