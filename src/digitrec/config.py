"""Every setting of a training run, in one frozen dataclass, with its unit, default and allowed range.

`TrainConfig` is what a run directory's `config.json` records and what `digitrec train`'s flags are
generated from (one flag per field, its help text from the field's `help`). Every instance is checked
when it is made, so a config read from a file is held to the same bounds as one typed on the command
line. Imports neither torch nor the models: the CLI builds its flags from it without loading torch.
Recipes (named sets of values for one model) live beside each model in `models.py`.
"""

import math
from dataclasses import dataclass, field, fields

from digitrec.errors import ConfigError

TRAIN_IMAGES = 55000  # MNIST's training split, after the 5,000 validation images
MAX_STEPS = 10**7  # about 23,000 epochs at batch 128: far past any useful run
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit; seed + process rank must still fit
RENAMED_SCHEDULES = {"onecycle": "warmup_cosine"}  # older run folders record the old name


def setting(default, help: str, low=None, high=None, low_open=False, high_open=False, choices=None):
    """A TrainConfig field with its help text and bounds (inclusive unless `*_open`)."""
    return field(
        default=default,
        metadata={
            "help": help,
            "low": low,
            "high": high,
            "low_open": low_open,
            "high_open": high_open,
            "choices": choices,
        },
    )


@dataclass(frozen=True)
class TrainConfig:
    model: str = setting("softmax", "Architecture (a registered model name).")
    recipe: str = setting("default", "Named recipe of the model: its preset values for every other setting.")
    width: int | None = setting(
        None, "Channels of the first layer, for models with a width (fast: 1..256, reader: 1..128); none: the recipe's."
    )
    pool_first: bool | None = setting(
        None,
        "Models with it (fast): max-pool each conv block's output before its batch "
        "norm and ReLU, which then do a quarter of the work (bench/floor.py).",
    )
    steps: int = setting(1000, "Optimisation steps.", low=1, high=MAX_STEPS)
    batch_size: int = setting(
        100, "Images per step (under torchrun: in all processes together).", low=1, high=TRAIN_IMAGES
    )
    optimizer: str = setting(
        "sgd", "sgd, nesterov (SGD with momentum 0.9) or adam.", choices=("sgd", "nesterov", "adam")
    )
    lr: float = setting(
        0.5, "Learning rate (the peak under warmup_cosine), per step of one batch.", low=0, high=10, low_open=True
    )
    schedule: str = setting(
        "constant",
        "constant, or warmup_cosine: linear warm-up, then cosine decay to zero.",
        choices=("constant", "warmup_cosine"),
    )
    warmup_fraction: float = setting(0.0, "Share of the steps spent warming up (warmup_cosine only).", low=0, high=1)
    weight_decay: float = setting(0.0, "L2 penalty per step, as torch's optimisers apply it.", low=0, high=1)
    label_smoothing: float = setting(
        0.0, "Share of each target spread evenly over the ten digits.", low=0, high=1, high_open=True
    )
    augment_degrees: float = setting(0.0, "Random rotation up to ± this many degrees; 0: none.", low=0, high=180)
    augment_shift: float = setting(0.0, "Random shift up to ± this fraction of the image size; 0: none.", low=0, high=1)
    augment_scale: float = setting(0.0, "Random scale within 1 ± this; 0: none.", low=0, high=1, high_open=True)
    augment_stroke: float = setting(
        0.0, "Random stroke thickening/thinning, up to this share of a 3x3 dilation/erosion.", low=0, high=1
    )
    augment_elastic: float = setting(
        0.0,
        "Random elastic distortion: a smooth field moving each pixel by at most this many pixels (a hand's "
        "wobble: strokes bend, never break); 0: none.",
        low=0,
        high=8,
    )
    # person-style variation (augment.py): each the share of a batch's images given it; pen width is augment_stroke
    augment_low_resolution: float = setting(
        0.0, "Share of images written small: the digit box 8-16 px, enlarged back to 20.", low=0, high=1
    )
    augment_blur: float = setting(0.0, "Share of images blurred (Gaussian, sigma 0.3-1.2 px).", low=0, high=1)
    augment_lighting: float = setting(
        0.0, "Share of images lit unevenly (ink fading across the digit, a gamma).", low=0, high=1
    )
    augment_paper: float = setting(
        0.0, "Share of images with paper left in them (noise beside the strokes, a line's dim band).", low=0, high=1
    )
    strings: str = setting(
        "plain",
        "Number reader: what its training strings are made of (number_strings.MIXTURES): plain (neat "
        "MNIST strings), or people (also hard overlaps, uneven heights and baselines, slant, photos).",
        choices=("plain", "people"),
    )
    string_workers: int = setting(
        0,
        "Number reader: processes making training strings ahead of the steps (for a GPU); "
        "0: made between steps. The strings are the same either way.",
        low=0,
        high=64,
    )
    channels_last: bool = setting(False, "NHWC activations: faster convolutions on CPUs (measured in bench/).")
    precision: str = setting(
        "auto",
        "fp32, bf16 (autocast), or auto: fp32 on CUDA (faster there, measured on an H200), "
        "bf16 on CPUs with AMX or AVX-512 BF16, else fp32.",
        choices=("auto", "fp32", "bf16"),
    )
    ema: float = setting(
        0.0,
        "Decay per step of an exponential moving average of the weights, which is what is evaluated "
        "and saved (0.999: about the last 1,000 steps; step t uses at most (1 + t) / (10 + t)); "
        "0: none.",
        low=0,
        high=1,
        high_open=True,
    )
    cuda_graph: str = setting(
        "auto",
        "CUDA only: capture a digit model's training step as a CUDA graph and replay it "
        "(auto: with one process; on: refuse where it cannot; off); ignored on the CPU.",
        choices=("auto", "on", "off"),
    )
    seed: int = setting(0, "Seed for weights, batches and augmentation.", low=0, high=MAX_SEED)
    log_every: int = setting(100, "Steps between log rows (training-batch loss and accuracy).", low=1, high=MAX_STEPS)
    eval_every: int = setting(1000, "Steps between validation evaluations (on log rows).", low=1, high=MAX_STEPS)
    checkpoint_every: int = setting(
        0, "Steps between resumable checkpoints in the run directory; 0: only when stopped.", low=0, high=MAX_STEPS
    )

    def __post_init__(self):
        check_fields(self)

    @property
    def uses_affine(self) -> bool:
        return self.augment_degrees > 0 or self.augment_shift > 0 or self.augment_scale > 0

    @property
    def uses_person_style(self) -> bool:
        return any(
            share > 0
            for share in (self.augment_low_resolution, self.augment_blur, self.augment_lighting, self.augment_paper)
        )

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A config as recorded in a run folder or checkpoint; old schedule names are mapped to today's."""
        if not isinstance(values, dict):
            raise ConfigError("a training config must be a JSON object")
        unknown = values.keys() - {spec.name for spec in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown training settings: {', '.join(sorted(unknown))}")
        schedule = values.get("schedule")
        if isinstance(schedule, str):
            values = {**values, "schedule": RENAMED_SCHEDULES.get(schedule, schedule)}
        return cls(**values)


def check_fields(instance) -> None:
    """Check every field of a dataclass declared with `setting` (a TrainConfig, a model's size)."""
    for spec in fields(instance):
        check(spec, getattr(instance, spec.name))


def is_switch(spec) -> bool:
    """Whether a field is on/off (bool, or bool | None for a model's size that only some models have)."""
    return spec.type in (bool, bool | None)


def check(spec, value) -> None:
    """Raise ConfigError unless `value` has the field's type and lies within its bounds."""
    meta, name = spec.metadata, spec.name
    if value is None and spec.default is None:
        return
    if spec.type is float:
        valid_type = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        expected = "a finite number"
    elif is_switch(spec):
        valid_type, expected = isinstance(value, bool), "true or false"
    elif spec.type is str:
        valid_type, expected = isinstance(value, str), "a name"
    else:  # int, or int | None
        valid_type, expected = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    if not valid_type:
        raise ConfigError(f"{name} must be {expected}, not {value!r}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"unknown {name} {value!r} (choose from {', '.join(meta['choices'])})")
    low, high = meta["low"], meta["high"]
    too_low = low is not None and (value <= low if meta["low_open"] else value < low)
    too_high = high is not None and (value >= high if meta["high_open"] else value > high)
    if too_low or too_high:
        raise ConfigError(f"{name} must be in {describe_range(spec)}, not {value!r}")


def describe_range(spec) -> str:
    """The field's bounds as an interval, e.g. (0, 10] or 1..55,000."""
    meta = spec.metadata
    low, high = meta["low"], meta["high"]
    if spec.type is float:
        return f"{'(' if meta['low_open'] else '['}{low:g}, {high:g}{')' if meta['high_open'] else ']'}"
    return f"{low:,}..{high:,}"
