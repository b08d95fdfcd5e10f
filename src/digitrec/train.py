"""One training loop for every model: resolving a recipe, device and precision, optimiser and schedule,
the log, progress, the run directory.

A run's settings are a frozen `TrainConfig` (config.py): a model's recipe (declared beside the model in
models.py; the tutorial's settings for `softmax` and `cnn`) with command-line flags overriding single
fields. `Training` owns the state of a run and advances it step by step; `train` drives it in three
steps — `prepare` (restore a resumed run, choose its folder), `loop` (steps, the log, checkpoints,
stopping) and `finish` (measure, save) — and leaves the files of the run directory to rundir.py.
"""

import contextlib
import copy
import json
import math
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path

import torch

from digitrec import checkpoint, data, models, provenance, rundir, tasks
from digitrec.config import TrainConfig
from digitrec.errors import ConfigError, DigitrecError, ModelError, OutputError, TrainingDiverged, TrainingStopped

DRY_RUN_STEPS = 3
GRAPH_WARMUP_STEPS = 3  # steps run eagerly on a side stream before a CUDA graph is captured (as torch's docs advise)


def resolve_config(model: str, recipe: str | None = None, from_weights: bool = False, **overrides) -> TrainConfig:
    """The named recipe of `model` (its default when None) with the given fields replaced (None values
    are ignored); every value and the model's size are checked here, before anything is created.
    The personal recipe starts from a trained model's weights (`from_weights`: personal.py) only."""
    spec = models.spec(model)
    recipe = recipe or spec.default_recipe
    if recipe not in spec.recipes:
        raise ConfigError(f"model {model!r} has no recipe {recipe!r} (choose from {', '.join(spec.recipes)})")
    if recipe == models.PERSONAL_RECIPE and not from_weights:
        raise ConfigError(f"recipe {recipe!r} teaches a trained model your corrections: digitrec teach learn")
    known = {f.name for f in fields(TrainConfig)}
    chosen = {key: value for key, value in overrides.items() if value is not None and key in known}
    config = TrainConfig(**{**spec.recipes[recipe], **chosen, "model": model, "recipe": recipe})
    models.size_of(asdict(config))
    tasks.named(spec.task).check_config(config)
    return config


def dry_run(config: TrainConfig, mnist: data.MNIST) -> tuple[TrainConfig, data.MNIST]:
    """A few steps of `config`, logged every step, on just enough of the data (for `--dry-run`)."""
    steps = min(config.steps, DRY_RUN_STEPS)
    images = config.batch_size * steps

    def head(split: data.Split, count: int) -> data.Split:
        return data.Split(split.images[:count], split.labels[:count])

    sliced = data.MNIST(head(mnist.train, images), head(mnist.validation, 500), head(mnist.test, 500), mnist.directory)
    return replace(config, steps=steps, log_every=1, eval_every=steps, checkpoint_every=0), sliced


CHECKPOINT_KEYS = (
    "config",
    "step",
    "world_size",
    "model",
    "optimizer",
    "scheduler",
    "random_states",
    "log",
    "train_seconds",
)


def config_from_checkpoint(state: dict, run_dir: Path) -> TrainConfig:
    """The training config of a checkpoint, once the checkpoint is known to be a digitrec training checkpoint."""
    try:
        config = TrainConfig.from_dict(state["config"])
    except (KeyError, TypeError, ConfigError):
        raise ModelError(f"{run_dir}: the checkpoint's training config is not one this digitrec understands") from None
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ModelError(
            f"{run_dir}: the checkpoint is not a digitrec training checkpoint (it has no {', '.join(missing)})"
        )
    return config


def pick_device(name: str = "auto") -> torch.device:
    """The device named `name`: auto, cpu, cuda or cuda:N (other torch devices are not supported)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ConfigError(f"unknown device {name!r} (auto, cpu, cuda or cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    return device


def choose_precision(requested: str, device: torch.device | str, flags: set[str] | None = None) -> str:
    """ "fp32" or "bf16" for a run's `precision` setting on `device` (a device or its kind; CPU flags: `flags`,
    default this CPU's): a pure function of the device's kind and the CPU's flags, so any device's choice
    can be checked on any machine.

    auto picks what measured faster on each kind of device:
    - CUDA: float32. On an H200 (torch 2.11 + CUDA 13) `fast` quick trained in 1.44 s in float32 against
      1.56-2.27 s in bf16: these models are too small for bf16's matmul speed to outweigh autocast's casts.
    - CPUs with bf16 arithmetic (AMX or AVX-512 BF16): bf16. bench/precision.py, fast quick: on a 2-core
      AMD EPYC Zen 4 (AVX-512 BF16, no AMX) 400 steps took 6.2 s against 8.0 s (medians of 3 seeds) at the
      same accuracy; issue 14 saw 6.5-8.6 s -> 5.7-6.2 s on a 2-core Xeon with AMX.
    - other CPUs: float32 (on an AVX2-only EPYC bf16 was 10x slower, README).
    """
    if requested != "auto":
        return requested
    if torch.device(device).type == "cuda":
        return "fp32"
    flags = set(provenance.cpu()[1]) if flags is None else flags
    return "bf16" if flags & {"amx_bf16", "avx512_bf16"} else "fp32"


def uses_cuda_graph(config: TrainConfig, device: torch.device | str, processes: int = 1) -> bool:
    """Whether a run's steps are captured as a CUDA graph (`cuda_graph` setting): on CUDA, for a model of a
    graphable task (`Task.graphable`: the digit models) in one process, unless turned off. Ignored on the
    CPU, where there are no graphs to capture. A graph replays a whole step (batch gather, augmentation,
    forward, backward, optimizer, EMA) in one launch: a `fast` step on an H200 went from 2.0-2.3 ms eager,
    nearly all launch overhead, to 0.37-0.49 ms."""
    if config.cuda_graph == "off" or torch.device(device).type != "cuda":
        return False
    task = tasks.of(config.model)
    reason = (
        task.not_graphable
        if not task.graphable
        else f"it runs in {processes} processes (DistributedDataParallel)"
        if processes > 1
        else None
    )
    if reason is None:
        return True
    if config.cuda_graph == "on":
        raise ConfigError(f"--cuda-graph on cannot be honoured: {reason}; use --cuda-graph auto or off")
    return False


def make_optimizer(config: TrainConfig, parameters, graphed: bool = False) -> torch.optim.Optimizer:
    """The optimiser of `config`; `graphed`: one whose step can be captured in a CUDA graph with its learning
    rate read from a tensor (fused SGD, capturable Adam), as the graph replays it with each step's rate."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=graphed or None)
    if config.optimizer == "nesterov":
        return torch.optim.SGD(
            parameters,
            lr=config.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=config.weight_decay,
            fused=graphed or None,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay, capturable=graphed)
    raise ConfigError(f"unknown optimizer {config.optimizer!r} (sgd, nesterov or adam)")


def lr_factor(config: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each step."""
    if config.schedule == "constant":
        return lambda step: 1.0
    if config.schedule == "warmup_cosine":
        warmup_steps = max(1, round(config.warmup_fraction * config.steps))

        def warmup_cosine(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            progress = (step - warmup_steps) / max(1, config.steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        return warmup_cosine
    raise ConfigError(f"unknown schedule {config.schedule!r} (constant or warmup_cosine)")


@dataclass(frozen=True)
class World:
    """This process's place among the processes `torchrun` started (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "World":
        environ = os.environ
        return cls(int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1)), int(environ.get("LOCAL_RANK", 0)))

    @property
    def leader(self) -> bool:  # the one process that logs, evaluates and writes
        return self.rank == 0


class Training:
    """The state of one run: model, optimiser, schedule, batch stream, random states and step counter.

    With several processes (`world.size` > 1) the model is wrapped in DistributedDataParallel and each
    process takes its share of every batch of `config.batch_size`, so the processes together take the
    same steps on the same images as one process would. With `config.ema`, a second copy of the model
    holds the moving average of the weights: that copy is what is evaluated and saved. On CUDA the
    steps are replayed from a CUDA graph (`uses_cuda_graph`); the arithmetic is the same as eager steps'.
    """

    def __init__(self, config: TrainConfig, mnist: data.MNIST, device: torch.device, world: World = World()):
        if config.batch_size % world.size:
            raise ConfigError(f"batch size {config.batch_size} does not split evenly over {world.size} processes")
        self.config = config
        self.device = device
        self.world = world
        torch.manual_seed(config.seed)  # initial weights and dropout masks
        self.model = models.from_config(asdict(config)).to(device)  # what is evaluated and saved
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.stepped_model = self.model  # what the steps run: the model, or its DDP wrapper over several processes
        if world.size > 1:
            torch.manual_seed(config.seed + world.rank)  # each process its own dropout masks
            self.stepped_model = torch.nn.parallel.DistributedDataParallel(self.model)  # averages gradients
        self.graphed = uses_cuda_graph(config, device, world.size)
        self.optimizer = make_optimizer(config, self.stepped_model.parameters(), self.graphed)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(config))
        self.ema_model = None  # the moving average of the weights, when config.ema is set
        if config.ema > 0:
            self.ema_model = copy.deepcopy(self.model).requires_grad_(False)
            self.ema_decay = torch.zeros((), device=device)  # this step's decay and 1 - decay, as tensors so that
            self.ema_share = torch.zeros((), device=device)  # a CUDA graph reads each step's values
        self.mnist = mnist.to(device)
        self.augment_generator = torch.Generator().manual_seed(config.seed + 1 + world.rank)
        self.precision = choose_precision(config.precision, device)
        self.task = tasks.of(config.model)  # what the model reads: its batches, loss and accuracy
        self.evaluation_cache: dict = {}  # what the task makes once per split to measure on (a reader's strings)
        self.step = 0
        self.stop_requested = False
        self.batches = self.batch_stream()
        self.graph = None  # the captured step, made at the first step after GRAPH_WARMUP_STEPS eager ones
        self.graph_warmup_steps = 0

    @property
    def evaluated_model(self) -> torch.nn.Module:
        """What is measured and saved: the moving average of the weights if there is one, else the model."""
        return self.ema_model if self.ema_model is not None else self.model

    def batch_stream(self):
        """Batches from step `self.step` on: (images, labels) for eager steps, indices for graphed ones."""
        share = self.config.batch_size // self.world.size
        if self.graphed:
            return self.task.batch_indices(
                self.mnist.train, share, self.config.seed, self.world.rank, self.world.size, self.step
            )
        return self.task.batches(
            self.mnist.train, share, self.config.seed, self.world.rank, self.world.size, self.step, config=self.config
        )

    def autocast(self):
        # no cache of cast weights: a CUDA graph would replay a cast made once (each weight is cast once a step anyway)
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16", cache_enabled=False
        )

    def forward_loss(
        self, batch: tuple[torch.Tensor, ...], draws: torch.Tensor | None
    ) -> tuple[torch.Tensor, Callable[[], float]]:
        """A batch's loss and a function giving its accuracy, its inputs varied by `draws` (the task's
        `augmentation_draws`, on the device): the same arithmetic eagerly or inside a CUDA graph."""
        config = self.config
        inputs = self.task.augment(batch[0], draws, config)
        if config.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            outputs = self.stepped_model(inputs)
        return self.task.loss(outputs, batch, config)

    def loss(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, Callable[[], float]]:
        """One batch's loss, and a function giving the batch's accuracy (asked for only at log rows)."""
        draws = self.task.augmentation_draws(self.augment_generator, len(batch[0]), self.config)
        if draws is not None:  # drawn on the CPU: the same numbers on every device
            draws = draws.to(self.device, non_blocking=True)
        return self.forward_loss(batch, draws)

    def advance(self, steps: int) -> tuple[float, float]:
        """Run up to `steps` optimisation steps (fewer when a stop is requested); returns the last batch's loss and accuracy.

        Raises `TrainingDiverged` when a step's loss was not finite (checked once, at the end, so a GPU
        is not made to wait every step: about 0.15 ms per 50 steps on the CPU); the weights are then
        no longer usable.
        """
        config = self.config
        self.stepped_model.train()
        first_step, losses = self.step, []
        for _ in range(min(steps, config.steps - self.step)):
            if (
                self.ema_model is not None
            ):  # the first steps' average forgets faster, as TensorFlow's EMA with num_updates
                decay = min(config.ema, (1 + self.step) / (10 + self.step))
                self.ema_decay.fill_(decay)
                self.ema_share.fill_(1 - decay)
            if self.graphed:
                loss, batch_accuracy = self.graphed_step()
            else:
                loss, batch_accuracy = self.loss(next(self.batches))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.update_ema()
            self.scheduler.step()
            self.step += 1
            losses.append(loss.detach())
            if self.should_stop():
                break
        finite = torch.isfinite(torch.stack(losses))
        if not finite.all():
            diverged_at = int((~finite).nonzero()[0])
            raise TrainingDiverged(
                f"training diverged: the loss was {losses[diverged_at].item()} at step {first_step + diverged_at + 1} "
                f"(lr {config.lr:g}); try a lower --lr"
            )
        return loss.item(), batch_accuracy()

    def update_ema(self) -> None:
        """Move the average toward the model by this step's share: floating tensors (weights and batch-norm
        statistics) as ema = decay * ema + (1 - decay) * model; integer ones (batches counted) copied."""
        if self.ema_model is None:
            return
        averaged, current = self.ema_model.state_dict(), self.model.state_dict()
        floating = [name for name, tensor in averaged.items() if tensor.is_floating_point()]
        torch._foreach_mul_([averaged[name] for name in floating], self.ema_decay)
        torch._foreach_add_(
            [averaged[name] for name in floating],
            torch._foreach_mul([current[name] for name in floating], self.ema_share),
        )
        for name in averaged.keys() - set(floating):
            averaged[name].copy_(current[name])

    def graph_step(self) -> tuple[torch.Tensor, Callable[[], float]]:
        """One whole step on the batch that `static_index` and `static_draws` name, with nothing that waits
        for the GPU or depends on values computed on it: capturable. Returns the loss and the accuracy's function."""
        loss, batch_accuracy = self.forward_loss(
            self.task.indexed_batch(self.mnist.train, self.static_index), self.static_draws
        )
        loss.backward()
        self.optimizer.step()
        self.update_ema()
        return loss, batch_accuracy

    def graphed_step(self) -> tuple[torch.Tensor, Callable[[], float]]:
        """The next step through the CUDA graph: its inputs copied into the graph's static tensors, then
        GRAPH_WARMUP_STEPS eager steps on a side stream (cuDNN chooses its kernels, the optimizer makes
        its state), the capture, and from then on a replay. The learning rate is read from a tensor in
        all of them, so an eager step does the same arithmetic as a replayed one."""
        indices = next(self.batches)
        draws = self.task.augmentation_draws(self.augment_generator, len(indices), self.config)
        if self.graph is None and self.graph_warmup_steps == 0:
            self.static_index = torch.zeros_like(indices, device=self.device)
            self.static_draws = None if draws is None else torch.zeros(draws.shape, device=self.device)
            self.learning_rate = torch.zeros((), device=self.device)
        self.static_index.copy_(indices)
        if self.static_draws is not None:
            self.static_draws.copy_(draws, non_blocking=True)
        group = self.optimizer.param_groups[0]
        self.learning_rate.fill_(group["lr"])
        if self.graph is None:
            rate, group["lr"] = group["lr"], self.learning_rate
            try:
                if self.graph_warmup_steps < GRAPH_WARMUP_STEPS:
                    side = torch.cuda.Stream(self.device)
                    side.wait_stream(torch.cuda.current_stream(self.device))
                    with torch.cuda.stream(side):
                        self.optimizer.zero_grad(set_to_none=True)
                        loss, batch_accuracy = self.graph_step()
                    torch.cuda.current_stream(self.device).wait_stream(side)
                    self.graph_warmup_steps += 1
                    return loss.detach(), batch_accuracy
                self.optimizer.zero_grad(set_to_none=True)  # the graph's backward makes the gradients in its own memory
                self.graph = torch.cuda.CUDAGraph()
                try:
                    with torch.cuda.graph(self.graph):
                        self.static_loss, self.static_accuracy = self.graph_step()
                except RuntimeError as error:
                    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    raise ConfigError(
                        f"the training step could not be captured as a CUDA graph ({first_line}); "
                        "train with --cuda-graph off"
                    ) from None
            finally:
                group["lr"] = rate  # the scheduler and checkpoints keep a plain number
        self.graph.replay()  # capturing recorded the step without running it
        # the accuracy reads the graph's own outputs and labels: it is asked for only of the last step of
        # `advance`, before the next replay overwrites them
        return self.static_loss.detach().clone(), self.static_accuracy

    def should_stop(self) -> bool:
        """Whether any process was asked to stop; all processes must agree, or the others would wait forever."""
        if self.world.size == 1:
            return self.stop_requested
        flag = torch.tensor([float(self.stop_requested)], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self.stop_requested = bool(flag.item())
        return self.stop_requested

    def accuracy(self, split: data.Split, model: torch.nn.Module | None = None) -> float:
        """The evaluated model's accuracy on `split` (or `model`'s: the plain weights beside their average),
        as its task measures it (a digit model: images read right; a number reader: whole strings read
        right, of fixed strings made of the split's digits)."""
        return self.task.accuracy(self.evaluated_model if model is None else model, split, self.evaluation_cache)

    @property
    def done(self) -> bool:
        return self.step >= self.config.steps

    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this run is, for `rundir.save_checkpoint`.

        Random states are gathered from every process; the leader saves them all.
        """
        random_states = {"torch": torch.get_rng_state(), "augment": self.augment_generator.get_state()}
        if self.device.type == "cuda":
            random_states["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world.size > 1:
            gathered = [None] * self.world.size
            torch.distributed.all_gather_object(gathered, random_states)
        else:
            gathered = [random_states]
        state = {
            "config": asdict(self.config),
            "step": self.step,
            "world_size": self.world.size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "random_states": gathered,
        }
        if self.ema_model is not None:
            state["ema"] = self.ema_model.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if state["world_size"] != self.world.size:
            raise ConfigError(
                f"the checkpoint was written by {state['world_size']} process(es); resume it with as many, not {self.world.size}"
            )
        try:
            self.model.load_state_dict(state["model"])
            if self.ema_model is not None:
                self.ema_model.load_state_dict(state["ema"])
            # how this run steps (fused or capturable on a CUDA graph, or not) is this device's, not the checkpoint's
            how = [
                {key: group[key] for key in ("fused", "capturable", "foreach") if key in group}
                for group in self.optimizer.param_groups
            ]
            self.optimizer.load_state_dict(state["optimizer"])
            for group, kept in zip(self.optimizer.param_groups, how):
                group.update(kept)
            self.scheduler.load_state_dict(state["scheduler"])
            self.step = int(state["step"])
            random_states = state["random_states"][self.world.rank]
            torch.set_rng_state(random_states["torch"])
            self.augment_generator.set_state(random_states["augment"])
            if "cuda" in random_states and self.device.type == "cuda":
                torch.cuda.set_rng_state(random_states["cuda"], self.device)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelError(f"the checkpoint does not fit its own config: {first_line}") from None
        self.batches = self.batch_stream()


@dataclass
class TrainResult:
    model: torch.nn.Module
    config: TrainConfig
    metrics: dict  # empty on every process but the leader
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


@contextlib.contextmanager
def process_group(world: World, device: torch.device):
    """Join the other processes `torchrun` started (gloo on the CPU, nccl on GPUs) for the duration."""
    if world.size == 1 or torch.distributed.is_initialized():
        yield
        return
    torch.distributed.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size
    )
    try:
        yield
        torch.distributed.barrier()  # all processes finish together
    finally:
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def stop_on_signals(training: Training, print_line: Callable[[str], None]):
    """Ctrl-C (or SIGTERM) asks `training` to stop after the current step; a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return

    def request_stop(signum, frame):
        if training.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        training.stop_requested = True
        print_line("stopping after this step (Ctrl-C again to abandon the run)")

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def train(
    config: TrainConfig,
    mnist: data.MNIST,
    device: torch.device,
    run_dir: Path | None = None,
    print_line: Callable[[str], None] = print,
    show_progress: bool = True,
    tensorboard: bool = False,
    resume_from: dict | None = None,
    overwrite: bool = False,
    draw_curves: Callable[[list[dict]], bytes] | None = None,
) -> TrainResult:
    """Train `config` on `mnist`, logging as the tutorial does, and save the run directory if given.

    `resume_from` is a checkpoint of this run (`rundir.load_checkpoint`): training continues from its
    step with its random states, so it ends exactly as the uninterrupted run would have. With
    `overwrite`, the run that `run_dir` holds is replaced only once this one is saved (it trains beside
    it, in `rundir.replacement_dir`). `draw_curves(log)` makes the run's `curves.png`. Under `torchrun`,
    every process calls this and only the leader logs and writes. With `tensorboard`, the log records
    also go to TensorBoard event files in the run directory's `tensorboard/`.
    """
    world = World.from_env()
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", world.local_rank)
    if not world.leader:
        run_dir, print_line, show_progress, tensorboard = None, lambda line: None, False, False
    with process_group(world, device):
        training = Training(config, mnist, device, world)
        with stop_on_signals(training, print_line):
            run = prepare(training, run_dir, resume_from, overwrite, print_line)
            loop(training, run, print_line, show_progress, tensorboard)
            return finish(training, run, draw_curves)


@dataclass
class Run:
    """Where a run is written and what it has logged so far."""

    run_dir: Path | None  # where the finished run is saved
    folder: Path | None  # where it trains (log, checkpoints): run_dir, or beside it when replacing another run
    log: list[dict]
    train_seconds: float = 0.0
    started_at_step: int = 0

    def save_checkpoint(self, training: Training) -> None:
        state = training.state_dict()  # on every process: it gathers their random states
        if self.folder is not None:
            rundir.save_checkpoint(self.folder, {**state, "log": self.log, "train_seconds": self.train_seconds})

    def resume_hint(self) -> str:
        """Where this run can be continued from, for an error message."""
        entries = rundir.checkpoint_entries(self.folder) if self.folder is not None else []
        if not entries:
            return "no checkpoint of it was saved"
        replaced = f"; {self.run_dir} still holds the run it was to replace" if self.folder != self.run_dir else ""
        return f"its checkpoint of step {entries[-1]['step']} is kept: digitrec train --resume {self.folder}{replaced}"


def prepare(training: Training, run_dir: Path | None, resume_from: dict | None, overwrite: bool, print_line) -> Run:
    """Restore a resumed run's state; choose the folder it trains in."""
    folder = rundir.replacement_dir(run_dir) if overwrite and run_dir is not None else run_dir
    run = Run(run_dir, folder, [])
    if resume_from is not None:
        training.load_state_dict(resume_from)
        run.log, run.train_seconds = resume_from["log"], resume_from["train_seconds"]
        print_line(f"resuming at step {training.step} of {training.config.steps}")
    run.started_at_step = training.step
    return run


def loop(training: Training, run: Run, print_line, show_progress: bool, tensorboard: bool) -> None:
    """Step until done, logging every `log_every` steps and checkpointing every `checkpoint_every`.

    A stop request saves a checkpoint and raises TrainingStopped; an error from a step (a diverged loss)
    keeps the checkpoints saved so far, saves none of the failed state, and says where to resume.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    config = training.config
    created = run.folder is not None and not run.folder.exists()
    with contextlib.ExitStack() as closing:  # log file, TensorBoard and progress bar, however training ends
        # TensorBoard first: without it installed, the run stops before it has made its folder
        board = closing.enter_context(contextlib.closing(tensorboard_writer(run.folder))) if tensorboard else None
        log_file = None
        if run.folder is not None:
            log_file = closing.enter_context(rundir.open_log(run.folder, asdict(config), run.log))
        print_line(" ".join(f"{column.replace('_accuracy', ''):>10}" for column in LOG_COLUMNS))
        progress = closing.enter_context(
            Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                disable=not show_progress,
            )
        )
        task = progress.add_task("train", total=config.steps, completed=training.step)
        while not training.done:
            boundaries = [config.log_every] + ([config.checkpoint_every] if config.checkpoint_every else [])
            started = time.perf_counter()
            try:
                loss, batch_accuracy = training.advance(min(every - training.step % every for every in boundaries))
            except DigitrecError as error:
                error.args = (f"{error}; {run.resume_hint()}",)
                raise
            except Exception:
                if created and training.step == run.started_at_step:  # refused at its first step: leave no folder
                    closing.close()
                    shutil.rmtree(run.folder, ignore_errors=True)
                raise
            run.train_seconds += time.perf_counter() - started
            progress.update(task, completed=training.step)
            # as every process agreed at the step's end; checkpointed after the step's log row, which the
            # checkpoint's log must hold for a resume
            stopping = training.stop_requested and not training.done
            if training.step % config.log_every == 0 or training.done:
                record = {
                    "step": training.step,
                    "loss": loss,
                    "train_accuracy": batch_accuracy,
                    "seconds": run.train_seconds,
                }
                if training.world.leader and (training.step % config.eval_every == 0 or training.done):
                    record["validation_accuracy"] = training.accuracy(training.mnist.validation)
                run.log.append(record)
                if log_file is not None:
                    rundir.append_log(log_file, record)
                if board is not None:
                    for key, value in record.items():
                        if key != "step":
                            board.add_scalar(key, value, record["step"])
                if show_progress:
                    progress.console.print(format_row(record))  # above the bar
                else:
                    print_line(format_row(record))
            due = config.checkpoint_every and training.step % config.checkpoint_every == 0 and not training.done
            if stopping or due:
                run.save_checkpoint(training)
            if stopping:
                where = f"; resume with: digitrec train --resume {run.folder}" if run.folder is not None else ""
                if run.folder != run.run_dir:
                    where += f" ({run.run_dir} still holds the run it was to replace)"
                raise TrainingStopped(f"stopped at step {training.step} of {config.steps}{where}")


def finish(training: Training, run: Run, draw_curves: Callable[[list[dict]], bytes] | None) -> TrainResult:
    """Measure the trained model and save the finished run: a checkpoint of the final state first, then
    the run directory all at once, so a failed save (a full disk) loses no training."""
    config = training.config
    metrics = {}
    if training.world.leader:
        metrics = {
            "model": config.model,
            "recipe": config.recipe,
            "parameters": models.parameter_count(training.model),
            "steps": training.step,
            "train_seconds": round(run.train_seconds, 3),
            "validation_accuracy": run.log[-1]["validation_accuracy"],
            "test_accuracy": training.accuracy(training.mnist.test),
            "provenance": provenance.provenance(
                device=str(training.device),
                torch_threads=torch.get_num_threads(),
                processes=training.world.size,
                precision=training.precision,
                cuda_graph=training.graphed,
            ),
        }
        if training.ema_model is not None:  # what the average gained, on the same run
            metrics["without_ema"] = {
                f"{name}_accuracy": training.accuracy(getattr(training.mnist, name), training.model)
                for name in ("validation", "test")
            }
    try:
        run.save_checkpoint(training)
    except OutputError:
        pass  # the save below says what failed; the checkpoints saved before this one are kept
    model = training.evaluated_model.to("cpu", memory_format=torch.contiguous_format).eval()
    if run.run_dir is not None:
        files = {
            rundir.WEIGHTS_FILE: checkpoint.weights_bytes(model, asdict(config), metrics),
            rundir.CONFIG_FILE: rundir.to_json(asdict(config)),
            rundir.METRICS_FILE: rundir.to_json(metrics),
            rundir.LOG_FILE: "".join(json.dumps(record) + "\n" for record in run.log),
        }
        if draw_curves is not None:
            files[rundir.CURVES_FILE] = draw_curves(run.log)
        try:
            rundir.save_run(run.run_dir, files, run.folder)
        except OutputError as error:
            raise OutputError(f"{error}; the training is not lost: {run.resume_hint()}", error.reason) from None
    return TrainResult(model, config, metrics, run.log, run.run_dir)
