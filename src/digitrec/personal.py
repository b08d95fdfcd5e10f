"""Learning a personal model: a trained digit model taught one person's stored corrections.

The `personal` recipe (models.py) starts from the trained model's weights and takes a few hundred steps
whose batches are CORRECTION_SHARE corrections (drawn with replacement) and the rest replayed MNIST
training digits, all varied as the recipe says (shifts, rotations, scale, pen width). The replay keeps
what the model knew (its MNIST test accuracy), the variations keep a handful of corrections from being
learned by heart. The steps run in train.py's one loop (`Training`, `prepare`, `loop`, `finish`), so a
personal run is an ordinary run folder (weights, config, metrics, log, curves) that `--model RUN`, serve,
evaluate, explain and export accept, and the page's Train panel shows its live curve.

`learn` also measures, before and after: the accuracy on held-out corrections (a held-out share:
HOLDOUT_SHARE of each digit's corrections, drawn at random with a fixed seed, learned without them by a
separate measuring run) and on the MNIST test set (of the model it saves). The run is saved in place of
the previous one only once it is complete (train's `--overwrite` path), so a learn killed halfway leaves
the previous personal model, and the corrections are only ever read. The saved run gets its confidence
calibration (confidence.py) fitted on the MNIST validation digits, as any model needs one.
"""

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from digitrec import checkpoint, confidence, data, evaluate, models, rundir, tasks, train
from digitrec.config import TrainConfig
from digitrec.corrections import Store
from digitrec.errors import ConfigError, TrainingStopped
from digitrec.tasks import DIGITS

CORRECTION_SHARE = 0.25  # of each batch at most; the rest are replayed MNIST training digits (bench/teach.py)
FULL_SHARE_FROM = 100  # corrections: fewer take a proportionally smaller share, so that each is drawn about as
# often as one of 100 is (one correction per digit drawn ~1,000 times was learned by heart)
HOLDOUT_SHARE = 0.2  # of each digit's corrections, held out to measure (only digits with at least MIN_HELD_IN + 1)
MIN_HELD_IN = 2  # a digit keeps at least this many corrections to learn from when some are held out
HOLDOUT_SEED = 0
PERSONAL_DIR_NAME = "personal"
CPU = torch.device("cpu")  # the default run folder, beside the corrections database


def personal_config(start: dict, **overrides) -> TrainConfig:
    """The personal recipe for the model that `start` (a weights file's config) describes, at its size."""
    spec = models.spec(start["model"])
    if not tasks.named(spec.task).single_digits:
        raise ConfigError(f"model {start['model']!r} reads whole numbers; a personal model starts from a digit model")
    if models.PERSONAL_RECIPE not in spec.recipes:
        having = [name for name, entry in models.REGISTRY.items() if models.PERSONAL_RECIPE in entry.recipes]
        raise ConfigError(f"model {start['model']!r} has no personal recipe (models with one: {', '.join(having)})")
    size = {name: start.get(name) for name in models.size_names(spec)}
    return train.resolve_config(start["model"], models.PERSONAL_RECIPE, from_weights=True, **size, **overrides)


def correction_share(corrections: int) -> float:
    """The share of each batch drawn from `corrections` corrections."""
    return CORRECTION_SHARE * min(1.0, corrections / FULL_SHARE_FROM)


def default_out(store: Store) -> Path:
    return store.path.parent / PERSONAL_DIR_NAME


class PersonalTraining(train.Training):
    """A `Training` that starts from trained weights and mixes `corrections` into every batch."""

    def __init__(
        self,
        config: TrainConfig,
        mnist: data.MNIST,
        device: torch.device,
        start: dict[str, torch.Tensor],
        corrections: data.Split,
        share: float | None = None,
    ):
        self.corrections = corrections.to(device)  # before Training's __init__, which starts the batch stream
        self.correction_share = correction_share(len(corrections)) if share is None else share
        super().__init__(config, mnist, device)
        self.model.load_state_dict(start)

    def batch_stream(self):
        taken = max(1, round(self.correction_share * self.config.batch_size))
        replayed = data.batches(self.mnist.train, self.config.batch_size - taken, self.config.seed, start=self.step)
        generator = torch.Generator().manual_seed(self.config.seed + 2)
        for _ in range(self.step):  # a resumed stream draws what the steps before it drew
            torch.randint(len(self.corrections), (taken,), generator=generator)
        while True:
            chosen = torch.randint(len(self.corrections), (taken,), generator=generator).to(
                self.corrections.labels.device
            )
            images, labels = next(replayed)
            yield (
                torch.cat([self.corrections.images[chosen], images]),
                torch.cat([self.corrections.labels[chosen], labels]),
            )


def as_split(images: np.ndarray, labels: np.ndarray) -> data.Split:
    return data.Split(
        torch.from_numpy(np.ascontiguousarray(images, np.float32)).unsqueeze(1),  # (N, 28, 28) -> (N, 1, 28, 28)
        torch.from_numpy(np.asarray(labels, np.int64)),
    )


def held_out(labels: np.ndarray, share: float = HOLDOUT_SHARE, seed: int = HOLDOUT_SEED) -> np.ndarray:
    """A mask of the corrections held out to measure: `share` of each digit's (rounded down), drawn with
    `seed`, from digits with more than MIN_HELD_IN corrections only, so every digit keeps some to learn."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for digit in range(models.CLASSES):
        members = np.flatnonzero(labels == digit)
        count = min(int(share * len(members)), len(members) - MIN_HELD_IN)
        if count > 0:
            mask[rng.choice(members, count, replace=False)] = True
    return mask


def accuracy(model: torch.nn.Module, split: data.Split) -> float:
    return evaluate.accuracy(models.logits_in_batches(model, split.images), split.labels)


def fine_tune(
    config: TrainConfig,
    mnist: data.MNIST,
    start: dict[str, torch.Tensor],
    corrections: data.Split,
    device: torch.device = CPU,
    run_dir: Path | None = None,
    overwrite: bool = False,
    print_line: Callable[[str], None] = print,
    show_progress: bool = False,
    draw_curves: Callable[[list[dict]], bytes] | None = None,
    share: float | None = None,
) -> train.TrainResult:
    """One personal run through train.py's loop; with `run_dir`, saved as an ordinary run folder. `share`:
    the corrections' share of each batch (None: `correction_share`)."""
    training = PersonalTraining(config, mnist, device, start, corrections, share)
    with train.stop_on_signals(training, print_line):
        run = train.prepare(training, run_dir, None, overwrite, print_line)
        run.save_checkpoint = lambda _training: None  # a run of seconds keeps no checkpoint: stopped, it starts again
        try:
            train.loop(training, run, print_line, show_progress, tensorboard=False)
        except TrainingStopped:
            kept = f"; {run_dir} still holds the previous personal model" if overwrite and run_dir.is_dir() else ""
            raise TrainingStopped(f"stopped at step {training.step} of {config.steps}: nothing saved{kept}") from None
        return train.finish(training, run, draw_curves)


def prepare_out(out: Path) -> bool:
    """Check that `out` may take a personal run; whether it replaces one there (a finished run, or one a
    killed learn left without weights). A killed learn's replacement folder (OUT.new, never with a
    checkpoint: personal runs keep none) is removed; a resumable run or other files in `out` are refused."""
    found = rundir.status(out)
    if found not in (rundir.MISSING, rundir.EMPTY, rundir.FINISHED, rundir.STARTED):
        rundir.check_new_run_dir(out, overwrite=False)  # says why, and what to do
    leftover = rundir.replacement_dir(out)
    if leftover.is_dir() and rundir.status(leftover) in (rundir.STARTED, rundir.EMPTY):
        shutil.rmtree(leftover)
    overwrite = found in (rundir.FINISHED, rundir.STARTED)
    rundir.check_new_run_dir(out, overwrite)
    return overwrite


@dataclass
class Learned:
    """What `learn` measured and where it saved the personal model."""

    run_dir: Path
    corrections: int
    held_out: int  # corrections held out to measure (0: too few to hold any out)
    held_out_before: float | None  # accuracy on them of the starting model
    held_out_after: float | None  # of a model learned from the other corrections
    test_before: float  # MNIST test accuracy of the starting model
    test_after: float  # of the saved personal model
    train_seconds: float  # of the saved personal model's steps
    metrics: dict


def learn(
    store: Store,
    start_from: str | Path | None = None,
    out: Path | None = None,
    data_dir: str | Path | None = None,
    device: torch.device = CPU,
    print_line: Callable[[str], None] = print,
    show_progress: bool = False,
    draw_curves: Callable[[list[dict]], bytes] | None = None,
    holdout: bool = True,
    **overrides,
) -> Learned:
    """Teach the model at `start_from` (None: the bundled default) every correction in `store`, measure it
    (see the module's docstring), and save it as the run folder `out` (default: `personal` beside the
    database), replacing the run there only once the new one is complete."""
    images, labels, _ = store.training_set()
    if not len(labels):
        raise ConfigError(
            f"{store.path} holds no corrections to learn from: add some with digitrec teach add, "
            f'or the page\'s "Wrong? It was"'
        )
    loaded = checkpoint.load(start_from, task=DIGITS)
    config = personal_config(loaded.config, **overrides)
    start = {name: tensor.clone() for name, tensor in loaded.model.state_dict().items()}
    out = Path(out) if out is not None else default_out(store)
    overwrite = prepare_out(out)
    mnist = data.load(data_dir)
    test_before = accuracy(loaded.model, mnist.test)
    mask = held_out(labels) if holdout else np.zeros(len(labels), bool)
    before = after = None
    if mask.any():
        print_line(f"measuring: learning {int((~mask).sum())} corrections, {int(mask.sum())} held out")
        kept = as_split(images[mask], labels[mask])
        # measured on the held-out corrections as its test set, validated once at its end: it is not saved
        measuring = data.MNIST(mnist.train, mnist.validation, kept, mnist.directory)
        measured = fine_tune(
            replace(config, eval_every=config.steps),
            measuring,
            start,
            as_split(images[~mask], labels[~mask]),
            device,
            print_line=lambda line: None,
        )
        before, after = accuracy(loaded.model, kept), measured.metrics["test_accuracy"]
    print_line(f"learning {len(labels)} corrections: {config.steps} steps from {loaded.weights_path.parent}")
    result = fine_tune(
        config,
        mnist,
        start,
        as_split(images, labels),
        device,
        out,
        overwrite=overwrite,
        print_line=print_line,
        show_progress=show_progress,
        draw_curves=draw_curves,
    )
    validation_logits = models.logits_in_batches(result.model, mnist.validation.images).numpy()
    confidence.save(
        confidence.fit(
            validation_logits,
            mnist.validation.labels.numpy(),
            {"fitted_on": "the 5,000 MNIST validation digits, by digitrec teach learn"},
        ),
        out,
    )
    return Learned(
        out,
        len(labels),
        int(mask.sum()),
        before,
        after,
        test_before,
        result.metrics["test_accuracy"],
        result.metrics["train_seconds"],
        result.metrics,
    )


def learn_arrays(
    config: TrainConfig,
    mnist: data.MNIST,
    start: dict[str, torch.Tensor],
    images: np.ndarray,
    labels: np.ndarray,
    share: float | None = None,
    device: torch.device = CPU,
) -> train.TrainResult:
    """A personal model from corrections given as arrays, saved nowhere: bench/teach.py's measuring runs."""
    return fine_tune(config, mnist, start, as_split(images, labels), device, print_line=lambda line: None, share=share)
