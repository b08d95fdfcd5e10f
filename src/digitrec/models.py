"""Every model digitrec trains: (B, 1, 28, 28) pixels in [0, 1] -> (B, 10) logits.

Owns the architectures, their initialisation and the name -> model registry; nothing about
optimisers, data files or checkpoints.
"""

import torch
from torch import nn

from digitrec.errors import ConfigError

IMAGE_PIXELS = 28 * 28
CLASSES = 10


class Softmax(nn.Module):
    """The tutorial's softmax regression: one linear layer, weights and biases starting at zero."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(IMAGE_PIXELS, CLASSES)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))  # (B, 1, 28, 28) -> (B, 784) -> (B, 10)


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


def conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FastCNN(nn.Module):
    """A small batch-norm CNN sized for a laptop CPU: three conv blocks, each followed by a 2x2 max pool,
    and a linear layer over the remaining 3x3 map (keeping where features are, which a global pool loses).

    `width` is the first block's channels; the others have 2x and 4x. 16 trains to 99 % in seconds.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.layers = nn.Sequential(
            conv_block(1, width, 5),  # (B, 1, 28, 28) -> (B, w, 28, 28)
            nn.MaxPool2d(2),  # -> (B, w, 14, 14)
            conv_block(width, 2 * width, 3),  # -> (B, 2w, 14, 14)
            nn.MaxPool2d(2),  # -> (B, 2w, 7, 7)
            conv_block(2 * width, 4 * width, 3),  # -> (B, 4w, 7, 7)
            nn.MaxPool2d(2),  # -> (B, 4w, 3, 3), the odd 7th row and column dropped
            nn.Flatten(),  # -> (B, 36w)
            nn.Linear(4 * width * 3 * 3, CLASSES),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


REGISTRY: dict[str, type[nn.Module]] = {"softmax": Softmax, "cnn": TutorialCNN, "fast": FastCNN}


def create(name: str, width: int | None = None) -> nn.Module:
    """A fresh model; `width` sets the size of models that have one (fast)."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown model {name!r} (choose from {', '.join(REGISTRY)})")
    if width is None:
        return REGISTRY[name]()
    if name != "fast":
        raise ConfigError(f"model {name!r} has a fixed size: --width applies to fast only")
    return REGISTRY[name](width)


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
