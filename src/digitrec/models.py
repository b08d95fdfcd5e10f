"""Every model digitrec trains. Digit models: (B, 1, 28, 28) pixels in [0, 1] -> (B, 10) logits. The
number reader: a strip of digits (B, 1, 32, W) -> (B, 11, W/2) per-column scores over blank and ten digits.

Owns the architectures, their initialisation, and one `ModelSpec` per model declared beside its class:
its task, its size parameters and its training recipes. The registry of specs is what training, the CLI's
choices, checkpoint loading and the ONNX export read; adding a model is one class and one `register`
call. Nothing here about optimisers, data files or checkpoints.
"""

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import nn

from digitrec.config import TrainConfig, check_fields, setting
from digitrec.errors import ConfigError
from digitrec.shapes import CLASSES

IMAGE_PIXELS = 28 * 28


@dataclass(frozen=True)
class ModelSpec:
    """One model, declared once: how to build it, its size parameters and its training recipes."""

    build: Callable[..., nn.Module]  # the class: called with a `size` instance, or with nothing if fixed-size
    recipes: dict[str, dict]  # recipe name -> the TrainConfig values it sets; the rest keep TrainConfig's defaults
    default_recipe: str = "default"
    size: type | None = None  # frozen dataclass of the size parameters (TrainConfig fields of the same names)
    task: str = "digits"  # a name in tasks.TASKS: what the model reads and answers, so what it trains on, is
    # measured by and exports as


REGISTRY: dict[str, ModelSpec] = {}
PERSONAL_RECIPE = "personal"  # starts from a trained model's weights, so `digitrec teach learn` runs it, not `train`
PERSONAL = dict(
    steps=300,
    batch_size=64,
    optimizer="nesterov",
    lr=0.03,
    schedule="warmup_cosine",
    warmup_fraction=0.1,
    weight_decay=5e-4,
    label_smoothing=0.1,
    augment_degrees=10,
    augment_shift=0.1,
    augment_scale=0.1,
    augment_stroke=1.0,
    channels_last=True,
    log_every=25,
    eval_every=100,
    cuda_graph="off",  # its batches mix the corrections in (personal.py): not the graph's batches of training indices
)
DEFAULT_MODEL = "fast"  # what `digitrec train` trains without --model


def register(name: str, spec: ModelSpec) -> None:
    """Make model `name` known to training, the CLI, checkpoint loading and export."""
    if spec.default_recipe not in spec.recipes:
        raise ConfigError(f"model {name!r}: default recipe {spec.default_recipe!r} is not one of its recipes")
    unsettable = size_names(spec) - {field.name for field in fields(TrainConfig)}
    if unsettable:  # a run's config (and so a flag and a weights file) must be able to record each size
        raise ConfigError(f"model {name!r}: size parameters {', '.join(sorted(unsettable))} are not TrainConfig fields")
    REGISTRY[name] = spec


def spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ConfigError(f"unknown model {name!r} (choose from {', '.join(REGISTRY)})")
    return REGISTRY[name]


def size_names(model: ModelSpec | None = None) -> set[str]:
    """The size parameters of `model`, or of every registered model (today: width)."""
    chosen = [model] if model is not None else list(REGISTRY.values())
    return {field.name for entry in chosen if entry.size is not None for field in fields(entry.size)}


class Softmax(nn.Module):
    """The tutorial's softmax regression: one linear layer, weights and biases starting at zero."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(IMAGE_PIXELS, CLASSES)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))  # (B, 1, 28, 28) -> (B, 784) -> (B, 10)


# TrainConfig's defaults are the tutorial's; float32 as the tutorial, 7,850 weights gain nothing from bf16
register("softmax", ModelSpec(Softmax, recipes={"default": dict(precision="fp32")}))


class TutorialCNN(nn.Module):
    """The tutorial's "deep MNIST" network, layer for layer, with its initialisation."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5, padding=2),  # (B, 1, 28, 28) -> (B, 32, 28, 28)
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> (B, 32, 14, 14)
            nn.Conv2d(32, 64, kernel_size=5, padding=2),  # -> (B, 64, 14, 14)
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> (B, 64, 7, 7)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # -> (B, 3136)
            nn.Linear(64 * 7 * 7, 1024),  # 28 -> 14 -> 7 after two 2x2 pools
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(1024, CLASSES),
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                # tf.truncated_normal(stddev=0.1) redraws values beyond two standard deviations
                nn.init.trunc_normal_(module.weight, std=0.1, a=-0.2, b=0.2)
                nn.init.constant_(module.bias, 0.1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


register(
    "cnn",
    ModelSpec(
        TutorialCNN,
        recipes={
            "default": dict(steps=20000, batch_size=50, optimizer="adam", lr=1e-4, channels_last=True, eval_every=2000),
        },
    ),
)


def conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@dataclass(frozen=True)
class FastSize:
    # 256 keeps a batch of 128 within a few GB (the model has 90 x width^2 weights, 5.9 M at 256)
    width: int = setting(16, "Channels of the first conv block; the others have 2x and 4x.", low=1, high=256)
    # off in weights saved before it existed (their metadata has no pool_first), on in both recipes
    pool_first: bool = setting(False, "Max-pool each conv block's output before its batch norm and ReLU.")

    def __post_init__(self):
        check_fields(self)  # a weights file's metadata can ask for any size: bound it before building


class FastCNN(nn.Module):
    """A small batch-norm CNN sized for a laptop CPU: three conv blocks, each with a 2x2 max pool, and a
    linear layer over the remaining 3x3 map (keeping where features are, which a global pool loses).

    `width` is the first block's channels; the others have 2x and 4x. 16 trains to 99 % in seconds.
    `pool_first` pools each convolution's output before its batch norm and ReLU instead of after them:
    they then see a quarter of the pixels, which made a training step 23 % shorter and, measured on
    validation digits, the `quick` recipe more accurate (bench/floor.py, README).
    """

    def __init__(self, size: FastSize = FastSize()):
        super().__init__()
        width = size.width
        blocks = [(1, width, 5), (width, 2 * width, 3), (2 * width, 4 * width, 3)]  # 28 -> 14 -> 7 -> 3 pixels square
        if size.pool_first:
            stages = [pooled_block(*block) for block in blocks]
        else:
            stages = [layer for block in blocks for layer in (conv_block(*block), nn.MaxPool2d(2))]
        self.layers = nn.Sequential(
            *stages,  # (B, 1, 28, 28) -> (B, 4w, 3, 3), the odd 7th row and column dropped by the last pool
            nn.Flatten(),  # -> (B, 36w)
            nn.Linear(4 * width * 3 * 3, CLASSES),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def pooled_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """conv_block with a 2x2 max pool between the convolution and the batch norm."""
    convolution, norm, relu = conv_block(in_channels, out_channels, kernel_size)
    return nn.Sequential(convolution, nn.MaxPool2d(2), norm, relu)


FULL_RECIPE = dict(
    width=32,
    pool_first=True,
    steps=16000,
    batch_size=128,
    optimizer="nesterov",
    lr=0.1,
    schedule="warmup_cosine",
    warmup_fraction=0.1,
    weight_decay=5e-4,
    label_smoothing=0.1,
    augment_degrees=10,
    augment_shift=0.1,
    augment_scale=0.1,
    augment_stroke=1.0,
    channels_last=True,
    eval_every=1000,
)
register(
    "fast",
    ModelSpec(
        FastCNN,
        size=FastSize,
        default_recipe="quick",
        recipes={
            # about 0.93 epochs; batch size, steps, rate and width chosen on validation accuracy
            "quick": dict(
                width=16,
                pool_first=True,
                steps=400,
                batch_size=128,
                optimizer="nesterov",
                lr=0.2,
                schedule="warmup_cosine",
                warmup_fraction=0.2,
                weight_decay=5e-4,
                label_smoothing=0.1,
                channels_last=True,
                log_every=50,
                eval_every=200,
            ),
            # about 37 epochs of randomly rotated, shifted, scaled and thickened or thinned digits at twice the width
            "full": FULL_RECIPE,
            # the candidate for the next default: `full` at width 48, with person-style variation (augment.py) on a
            # share of each batch; the width chosen on validation (docs/speed.md: 99.72 against 99.65 % at width 32)
            "person": dict(
                FULL_RECIPE,
                width=48,
                augment_low_resolution=0.15,
                augment_blur=0.15,
                augment_lighting=0.2,
                augment_paper=0.15,
            ),
            # a trained model taught one person's corrections (digitrec teach learn, personal.py): its size is the trained
            # model's; each batch half corrections, half replayed training digits, all varied; chosen in bench/teach.py
            PERSONAL_RECIPE: PERSONAL,
        },
    ),
)


@dataclass(frozen=True)
class ReaderSize:
    width: int = setting(16, "Channels of the first conv block; the others have 2x, 3x and 4x.", low=1, high=128)

    def __post_init__(self):
        check_fields(self)


class NumberReader(nn.Module):
    """Reads a whole number without cutting it into digits: a CNN that slides along the strip and scores,
    for each 2-px column step, blank or one of ten digits; trained with CTC, so touching and overlapping
    digits need no segmentation. Its height is pooled away (32 -> 2) while the width keeps one column per
    2 px, enough for two narrow 1s side by side to get a blank between them; the 1-D convolutions then
    see about 40 px along the row, two digits' width."""

    def __init__(self, size: ReaderSize = ReaderSize()):
        super().__init__()
        width = size.width
        self.columns = nn.Sequential(
            conv_block(1, width, 3),  # (B, 1, 32, W) -> (B, w, 32, W)
            nn.MaxPool2d(2),  # -> (B, w, 16, W/2)
            conv_block(width, 2 * width, 3),
            nn.MaxPool2d((2, 1)),  # -> (B, 2w, 8, W/2)
            conv_block(2 * width, 3 * width, 3),
            conv_block(3 * width, 3 * width, 3),
            nn.MaxPool2d((2, 1)),  # -> (B, 3w, 4, W/2)
            conv_block(3 * width, 4 * width, 3),
            nn.MaxPool2d((2, 1)),  # -> (B, 4w, 2, W/2)
        )
        features = 4 * width * 2  # channels x the 2 rows left after four halvings of 32
        self.along = nn.Sequential(
            nn.Conv1d(features, 12 * width, 3, padding=1, bias=False),
            nn.BatchNorm1d(12 * width),
            nn.ReLU(inplace=True),
            nn.Conv1d(12 * width, 12 * width, 3, padding=2, dilation=2, bias=False),
            nn.BatchNorm1d(12 * width),
            nn.ReLU(inplace=True),
            nn.Conv1d(12 * width, CLASSES + 1, 1),  # blank + ten digits
        )

    def forward(self, strips: torch.Tensor) -> torch.Tensor:
        return self.along(self.columns(strips).flatten(1, 2))  # (B, 4w, 2, W/2) -> (B, 8w, W/2) -> (B, 11, W/2)


register(
    "reader",
    ModelSpec(
        NumberReader,
        size=ReaderSize,
        task="numbers",
        recipes={
            # each step: 64 random strings of training digits (number_strings.random_batch); chosen on validation strings
            "default": dict(
                width=16,
                steps=10000,
                batch_size=64,
                optimizer="adam",
                lr=2e-3,
                schedule="warmup_cosine",
                warmup_fraction=0.1,
                weight_decay=1e-4,
                channels_last=True,
                log_every=100,
                eval_every=1000,
            ),
            # the same on strings written as people write them (number_strings.MIXTURES["people"]): hard overlaps, uneven
            # heights and baselines, one slant per number, photos; meant for a GPU, with string_workers set to its cores
            "robust": dict(
                width=16,
                steps=10000,
                batch_size=64,
                optimizer="adam",
                lr=2e-3,
                schedule="warmup_cosine",
                warmup_fraction=0.1,
                weight_decay=1e-4,
                strings="people",
                channels_last=True,
                log_every=100,
                eval_every=1000,
            ),
        },
    ),
)


def size_of(config: dict):
    """The checked size (an instance of the model's size class) that a config asks for; None for a
    fixed-size model. `config` holds TrainConfig fields, from a run or a weights file's metadata: any
    size is bounded here, before anything is allocated."""
    model = spec(config["model"])
    given = {key: config[key] for key in size_names() if config.get(key) is not None}
    foreign = sorted(given.keys() - size_names(model))
    if foreign:
        flags = ", ".join(f"--{key.replace('_', '-')}" for key in foreign)
        users = [name for name, entry in REGISTRY.items() if set(foreign) <= size_names(entry)]
        problem = "a fixed size" if model.size is None else f"no {flags}"
        raise ConfigError(
            f"model {config['model']!r} has {problem}: {flags} applies to {', '.join(users) or 'no model'} only"
        )
    return model.size(**given) if model.size is not None else None


def from_config(config: dict) -> nn.Module:
    """A fresh model as a config (TrainConfig fields, or a weights file's metadata) describes it."""
    size = size_of(config)
    return spec(config["model"]).build(size) if size is not None else spec(config["model"]).build()


def create(name: str, **size) -> nn.Module:
    """A fresh model `name`; `size` sets its size parameters (e.g. width=32; None: the default)."""
    return from_config({"model": name, **size})


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def logits_in_batches(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's logits for many images, in eval mode, without holding every activation at once."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i : i + batch_size]).float() for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def inside_outputs(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the Inside view shows, by the names the ONNX export gives them: `logits`; each convolution
    stage's feature maps after its ReLU, `activation:conv1`, `activation:conv2`, ... (B, C, H, W); the first
    layer's filters, `filters:conv1` (C, 1, k, k); and for `softmax` its ten 28x28 weight templates,
    `templates` (10, 28, 28). The weights come back as they are (not folded into a batch norm)."""
    stages: list[torch.Tensor] = []
    hooks, first_conv, after_conv = [], None, False
    for module in model.modules():  # a stage ends at the first ReLU after each Conv2d
        if isinstance(module, nn.Conv2d):
            first_conv = first_conv or module
            after_conv = True
        elif isinstance(module, nn.ReLU) and after_conv:
            hooks.append(module.register_forward_hook(lambda _module, _input, output: stages.append(output)))
            after_conv = False
    try:
        logits = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    outputs = {"logits": logits}
    outputs.update((f"activation:conv{i}", maps) for i, maps in enumerate(stages, 1))
    if first_conv is not None:
        outputs["filters:conv1"] = first_conv.weight.detach()
    if isinstance(model, Softmax):
        outputs["templates"] = model.linear.weight.detach().view(CLASSES, 28, 28)  # (10, 784) -> (10, 28, 28)
    return outputs


class InsideOutputs(nn.Module):
    """`model` returning all of `inside_outputs` as a tuple in its order: what the ONNX export traces."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(inside_outputs(self.model, images).values())
