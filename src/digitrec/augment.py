"""Person-style variation of training digits: what a person's image still looks like after preprocess.py
has found its ink and framed it, made from MNIST digits as batched tensors on the training device.

preprocess.py turns a photo or scan into MNIST's framing, but it cannot undo everything: a digit written
8-16 px tall is enlarged into a soft, blocky 20 px one (scikit-learn's 8x8 digits are the extreme); a
blurred photo stays blurred when the digit was small; uneven light or a pencil leaves some strokes
fainter than others; a printed line taken away leaves a dimmer band where it crossed a stroke, and
paper noise leaves faint dots beside the strokes. Each variation is applied to a random share of each
batch, set by its TrainConfig field (0: never; the `person` recipe in models.py sets them); pen width is
`augment_stroke` (data.random_stroke). All random numbers come from the training's augmentation
generator (on the CPU), so a seeded run is reproducible. The renderings that measure the same styles on
real images are digitrec.styles'; they are never trained on.
"""

import torch
import torch.nn.functional as F

from digitrec.config import TrainConfig

FIELD = 28  # px: MNIST's image side
BOX = 20  # px: MNIST's digit box
SMALL_BOXES = range(8, 17)  # px: the digit box sizes a low-resolution digit is written at
BLUR_SIGMA = (0.3, 1.2)  # px at MNIST's scale: the range of Gaussian blurs
BLUR_TAPS = 7  # the blur kernel's length (covers 2.5 sigma of the largest blur)
FAINT_END = (0.35, 1.0)  # lighting: the ink's brightness at the dim end of a linear gradient across the digit
GAMMA = (0.6, 1.6)  # lighting: the ink profile's exponent (a pencil's faint strokes, a marker's saturated ones)
NOISE_SIGMA = (0.02, 0.12)  # paper: noise left beside the strokes, before the floor below
NOISE_FLOOR = 0.1  # paper: noise below this is paper (preprocess's floor does the same)
LINE_DIMMING = (0.3, 0.85)  # paper: the ink's brightness where a printed line was taken away from it
LINE_WIDTH = (1, 2)  # px at MNIST's scale


def person_style(images: torch.Tensor, generator: torch.Generator, config: TrainConfig) -> torch.Tensor:
    """`images` (B, 1, 28, 28) in 0..1 with each variation applied to its configured share of them."""
    for share, vary in ((config.augment_low_resolution, low_resolution), (config.augment_blur, blur),
                        (config.augment_lighting, lighting), (config.augment_paper, paper)):
        if share > 0:
            chosen = (torch.rand(len(images), generator=generator) < share).to(images.device)
            varied = vary(images, generator)
            images = torch.where(chosen[:, None, None, None], varied, images)
    return images


def uniform(count: int, bounds: tuple[float, float], generator: torch.Generator, device) -> torch.Tensor:
    low, high = bounds
    return (low + (high - low) * torch.rand(count, generator=generator)).to(device)


def peak_to_one(images: torch.Tensor) -> torch.Tensor:
    """Each image divided by its brightest pixel, as preprocess.frame leaves every digit."""
    return images / images.amax((1, 2, 3), keepdim=True).clamp(min=1e-6)


def low_resolution(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each digit as if written with its box 8-16 px tall and enlarged back to 20 px: averaged down, then
    bilinear up (preprocess enlarges with Lanczos; bilinear is its softer neighbour, and what a phone's
    zoom does)."""
    boxes = torch.tensor(list(SMALL_BOXES))[torch.randint(len(SMALL_BOXES), (len(images),), generator=generator)]
    varied = images.clone()
    for box in SMALL_BOXES:
        chosen = (boxes == box).to(images.device)
        if chosen.any():
            side = round(FIELD * box / BOX)  # the whole field shrinks with the box: 28 -> 11..22
            small = F.interpolate(images[chosen], size=(side, side), mode="area")  # (n, 1, s, s)
            varied[chosen] = F.interpolate(small, size=(FIELD, FIELD), mode="bilinear", align_corners=False)
    return peak_to_one(varied)


def blur(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image blurred by a Gaussian of its own sigma in BLUR_SIGMA: one grouped separable convolution."""
    count = len(images)
    sigma = uniform(count, BLUR_SIGMA, generator, images.device)
    taps = torch.arange(BLUR_TAPS, device=images.device, dtype=images.dtype) - BLUR_TAPS // 2
    kernels = torch.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
    kernels = (kernels / kernels.sum(1, keepdim=True)).to(images.dtype)  # (B, K)
    grouped = images.reshape(1, count, FIELD, FIELD)  # each image its own channel
    grouped = F.conv2d(grouped, kernels[:, None, None, :], padding=(0, BLUR_TAPS // 2), groups=count)
    grouped = F.conv2d(grouped, kernels[:, None, :, None], padding=(BLUR_TAPS // 2, 0), groups=count)
    return peak_to_one(grouped.reshape(count, 1, FIELD, FIELD))


def lighting(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Ink brighter at one side of the digit than the other (a linear gradient in a random direction down
    to FAINT_END), and its profile bent by a gamma in GAMMA."""
    count, device = len(images), images.device
    angle = uniform(count, (0, 2 * torch.pi), generator, device)
    faint_end = uniform(count, FAINT_END, generator, device)
    gamma = uniform(count, GAMMA, generator, device)
    position = torch.linspace(-0.5, 0.5, FIELD, device=device)
    along = (torch.cos(angle)[:, None, None] * position[None, :, None]
             + torch.sin(angle)[:, None, None] * position[None, None, :])  # (B, 28, 28), -0.7..0.7
    light = 1 - (1 - faint_end)[:, None, None] * (along - along.amin((1, 2), keepdim=True)) / 1.5
    varied = images.clamp(min=0) ** gamma[:, None, None, None] * light[:, None]
    return peak_to_one(varied)


def paper(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """What paper leaves after preprocess: faint noise dots near and on the strokes (noise above the
    floor), and a dimmer band where a printed line, taken away, crossed the strokes (a row or a column)."""
    count, device = len(images), images.device
    sigma = uniform(count, NOISE_SIGMA, generator, device)
    noise = torch.randn(images.shape, generator=generator).to(device) * sigma[:, None, None, None]
    near_strokes = F.max_pool2d(images, 5, stride=1, padding=2) > NOISE_FLOOR  # within 2 px: farther, it is a speck
    noise = torch.where((noise > NOISE_FLOOR) & near_strokes, noise - NOISE_FLOOR, torch.zeros_like(noise))
    position = torch.randint(FIELD, (count,), generator=generator).to(device)
    width = torch.randint(LINE_WIDTH[0], LINE_WIDTH[1] + 1, (count,), generator=generator).to(device)
    across = torch.rand(count, generator=generator).to(device) < 0.5  # a column (vertical line), else a row
    dimming = uniform(count, LINE_DIMMING, generator, device)
    index = torch.arange(FIELD, device=device)
    in_band = (index[None, :] >= position[:, None]) & (index[None, :] < (position + width)[:, None])  # (B, 28)
    band = torch.where(across[:, None, None], in_band[:, None, :], in_band[:, :, None])  # (B, 28, 28)
    varied = images * torch.where(band, dimming[:, None, None], torch.ones_like(dimming)[:, None, None])[:, None]
    return peak_to_one((varied + noise).clamp(0, 1))
