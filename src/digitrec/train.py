"""One training loop for every model: recipes, optimiser and schedule, the log, progress, the run directory.

A recipe is a frozen `TrainConfig`; `RECIPES` holds the documented ones (the tutorial's settings for
`softmax` and `cnn`) and command-line flags override single fields. `Training` owns the state of a run
and advances it step by step; `train` drives it with logging and writes the run directory.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from digitrec import checkpoint, data, evaluate, models
from digitrec.errors import ConfigError
from digitrec.files import write_atomic


@dataclass(frozen=True)
class TrainConfig:
    model: str = "softmax"
    recipe: str = "default"
    width: int | None = None  # channels of the first conv block, for models with a size (fast); None = default
    steps: int = 1000
    batch_size: int = 100
    optimizer: str = "sgd"  # "sgd", "nesterov" (SGD with momentum 0.9) or "adam"
    lr: float = 0.5  # the peak learning rate under a one-cycle schedule
    schedule: str = "constant"  # "constant" or "onecycle" (linear warm-up, then cosine decay to zero)
    warmup_fraction: float = 0.0  # share of the steps spent warming up (one-cycle only)
    weight_decay: float = 0.0  # L2 penalty, per step, as torch applies it
    label_smoothing: float = 0.0
    augment_degrees: float = 0.0  # random rotation up to ± this many degrees; 0 disables augmentation
    augment_shift: float = 0.0  # random shift up to ± this fraction of the image size
    augment_scale: float = 0.0  # random scale within 1 ± this
    channels_last: bool = False  # NHWC activations: faster convolutions on CPUs (measured in bench/)
    seed: int = 0
    log_every: int = 100  # steps between training-batch accuracy lines (the tutorial's 100)
    eval_every: int = 1000  # steps between validation evaluations

    @property
    def augments(self) -> bool:
        return self.augment_degrees > 0 or self.augment_shift > 0 or self.augment_scale > 0


RECIPES: dict[str, dict[str, TrainConfig]] = {
    "softmax": {"default": TrainConfig(model="softmax")},
    "cnn": {
        "default": TrainConfig(
            model="cnn", steps=20000, batch_size=50, optimizer="adam", lr=1e-4, channels_last=True, eval_every=2000
        )
    },
    "fast": {
        # about 0.93 epochs; batch size, steps, rate and width chosen on validation accuracy
        "quick": TrainConfig(
            model="fast", recipe="quick", width=16, steps=400, batch_size=128, optimizer="nesterov", lr=0.2,
            schedule="onecycle", warmup_fraction=0.2, weight_decay=5e-4, label_smoothing=0.1,
            channels_last=True, log_every=50, eval_every=200,
        ),
        # about 14 epochs of randomly rotated, shifted and scaled digits at twice the width
        "full": TrainConfig(
            model="fast", recipe="full", width=32, steps=6000, batch_size=128, optimizer="nesterov", lr=0.1,
            schedule="onecycle", warmup_fraction=0.1, weight_decay=5e-4, label_smoothing=0.1,
            augment_degrees=10, augment_shift=0.1, augment_scale=0.1, channels_last=True, eval_every=1000,
        ),
    },
}
DEFAULT_RECIPE = {"softmax": "default", "cnn": "default", "fast": "quick"}


def resolve_config(model: str, recipe: str | None = None, **overrides) -> TrainConfig:
    """The named recipe of `model` with the given fields replaced (None values are ignored)."""
    if model not in RECIPES:
        raise ConfigError(f"unknown model {model!r} (choose from {', '.join(RECIPES)})")
    recipe = recipe or DEFAULT_RECIPE[model]
    if recipe not in RECIPES[model]:
        raise ConfigError(f"model {model!r} has no recipe {recipe!r} (choose from {', '.join(RECIPES[model])})")
    known = {f.name for f in fields(TrainConfig)}
    chosen = {key: value for key, value in overrides.items() if value is not None and key in known}
    config = replace(RECIPES[model][recipe], **chosen)
    if config.steps < 1 or config.batch_size < 1 or config.lr <= 0:
        raise ConfigError("steps, batch size and learning rate must be positive")
    return config


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (auto, cpu, cuda or cuda:N)") from None


def make_optimizer(config: TrainConfig, parameters) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "nesterov":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    raise ConfigError(f"unknown optimizer {config.optimizer!r} (sgd, nesterov or adam)")


def lr_factor(config: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each step."""
    if config.schedule == "constant":
        return lambda step: 1.0
    if config.schedule == "onecycle":
        warmup_steps = max(1, round(config.warmup_fraction * config.steps))

        def onecycle(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            progress = (step - warmup_steps) / max(1, config.steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return onecycle
    raise ConfigError(f"unknown schedule {config.schedule!r} (constant or onecycle)")


class Training:
    """The state of one run: model, optimiser, schedule, batch stream and step counter."""

    def __init__(self, config: TrainConfig, mnist: data.MNIST, device: torch.device):
        self.config = config
        self.device = device
        torch.manual_seed(config.seed)  # initial weights and dropout masks
        self.model = models.create(config.model, config.width).to(device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(config, self.model.parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(config))
        self.mnist = mnist.to(device)
        self.batches = data.batches(self.mnist.train, config.batch_size, config.seed)
        self.augment_generator = torch.Generator().manual_seed(config.seed + 1)
        self.step = 0

    def advance(self, steps: int) -> tuple[float, float]:
        """Run up to `steps` optimisation steps; returns the last batch's loss and accuracy."""
        config = self.config
        self.model.train()
        for _ in range(min(steps, config.steps - self.step)):
            images, labels = next(self.batches)
            if config.augments:
                images = data.random_affine(
                    images, self.augment_generator, config.augment_degrees, config.augment_shift, config.augment_scale
                )
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
        return loss.item(), (logits.argmax(1) == labels).float().mean().item()

    def accuracy(self, split: data.Split) -> float:
        return evaluate.accuracy(models.logits_in_batches(self.model, split.images), split.labels)

    @property
    def done(self) -> bool:
        return self.step >= self.config.steps


@dataclass
class TrainResult:
    model: torch.nn.Module
    config: TrainConfig
    metrics: dict
    log: list[dict] = field(default_factory=list)
    run_dir: Path | None = None


LOG_COLUMNS = ("step", "loss", "train_accuracy", "validation_accuracy", "seconds")


def format_row(record: dict) -> str:
    """One fixed-width row of the training log table."""
    cells = []
    for column in LOG_COLUMNS:
        value = record.get(column)
        if value is None:
            cells.append(f"{'':>10}")
        elif column == "step":
            cells.append(f"{value:>10d}")
        elif column.endswith("accuracy"):
            cells.append(f"{100 * value:>9.2f}%")
        else:
            cells.append(f"{value:>10.3f}")
    return " ".join(cells)


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.model}-{config.recipe}-{datetime.now():%Y%m%d-%H%M%S}"


def tensorboard_writer(run_dir: Path | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str((run_dir or Path("runs")) / "tensorboard"))


def train(
    config: TrainConfig,
    mnist: data.MNIST,
    device: torch.device,
    run_dir: Path | None = None,
    print_line: Callable[[str], None] = print,
    show_progress: bool = True,
    tensorboard: bool = False,
) -> TrainResult:
    """Train `config` on `mnist`, logging as the tutorial does, and write the run directory if given.

    With `tensorboard`, the log records also go to TensorBoard event files in `run_dir/tensorboard`.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    board = tensorboard_writer(run_dir) if tensorboard else None
    training = Training(config, mnist, device)
    log: list[dict] = []
    train_seconds = 0.0
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "config.json", checkpoint.to_json(asdict(config)))
        log_file = (run_dir / "log.jsonl").open("w")
    print_line(" ".join(f"{column.replace('_accuracy', ''):>10}" for column in LOG_COLUMNS))
    progress = Progress(
        TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), disable=not show_progress
    )
    with progress:
        task = progress.add_task("train", total=config.steps)
        while not training.done:
            started = time.perf_counter()
            loss, batch_accuracy = training.advance(config.log_every - training.step % config.log_every)
            train_seconds += time.perf_counter() - started
            record = {"step": training.step, "loss": loss, "train_accuracy": batch_accuracy, "seconds": train_seconds}
            if training.step % config.eval_every == 0 or training.done:
                record["validation_accuracy"] = training.accuracy(training.mnist.validation)
            log.append(record)
            if run_dir is not None:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if board is not None:
                for key, value in record.items():
                    if key != "step":
                        board.add_scalar(key, value, record["step"])
            if show_progress:
                progress.console.print(format_row(record))  # above the bar
            else:
                print_line(format_row(record))
            progress.update(task, completed=training.step)
    if run_dir is not None:
        log_file.close()
    if board is not None:
        board.close()
    metrics = {
        "model": config.model,
        "recipe": config.recipe,
        "parameters": models.parameter_count(training.model),
        "steps": training.step,
        "train_seconds": round(train_seconds, 3),
        "validation_accuracy": log[-1]["validation_accuracy"],
        "test_accuracy": training.accuracy(training.mnist.test),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    model = training.model.to("cpu", memory_format=torch.contiguous_format).eval()
    if run_dir is not None:
        checkpoint.save_run(run_dir, model, asdict(config), metrics)
    return TrainResult(model, config, metrics, log, run_dir)
