"""Person-style variation of training digits: what a person's image still looks like after preprocess.py
has found its ink and framed it, made from MNIST digits as batched tensors on the training device.

preprocess.py turns a photo or scan into MNIST's framing, but it cannot undo everything: a digit written
8-16 px tall is enlarged into a soft, blocky 20 px one (scikit-learn's 8x8 digits are the extreme); a
blurred photo stays blurred when the digit was small; uneven light or a pencil leaves some strokes
fainter than others; a printed line taken away leaves a dimmer band where it crossed a stroke, and
paper noise leaves faint dots beside the strokes. Each variation is applied to a random share of each
batch, set by its TrainConfig field (0: never; the `person` recipe in models.py sets them); pen width is
`augment_stroke` (data.augment). The random numbers come in as a (B, `columns(config)`) tensor of
draws uniform in [-1, 1) (tasks/digits.py draws them from the training's augmentation generator on the
CPU), and every image goes through the same arithmetic, chosen or not, with no data-dependent Python:
the same steps run eagerly or inside a CUDA graph, and a seeded run is reproducible. The renderings that measure the same styles on
real images are digitrec.person_style'; they are never trained on.
"""

import torch
import torch.nn.functional as F

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


NOISE_COLUMNS = FIELD * FIELD  # paper: one draw per pixel
VARIATIONS = ("augment_low_resolution", "augment_blur", "augment_lighting", "augment_paper")
# per variation: one draw choosing the image, then its own parameters
COLUMNS = {"augment_low_resolution": 2, "augment_blur": 2, "augment_lighting": 4, "augment_paper": 6 + NOISE_COLUMNS}


def columns(config) -> int:
    """How many draws per image `person_style` takes for `config`: those of each variation it uses."""
    return sum(COLUMNS[name] for name in VARIATIONS if getattr(config, name) > 0)


def person_style(images: torch.Tensor, draws: torch.Tensor, config) -> torch.Tensor:
    """`images` (B, 1, 28, 28) in 0..1 with each variation applied to its configured share of them;
    `draws` (B, columns(config)) uniform in [-1, 1), on the images' device."""
    unit = (draws + 1) / 2  # -> [0, 1)
    for name, vary in zip(VARIATIONS, (low_resolution, blur, lighting, paper)):
        share = getattr(config, name)
        if share > 0:
            taken, unit = unit[:, : COLUMNS[name]], unit[:, COLUMNS[name] :]
            chosen = taken[:, 0] < share
            images = torch.where(chosen[:, None, None, None], vary(images, taken[:, 1:]), images)
    return images


def between(unit: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * unit


def peak_to_one(images: torch.Tensor) -> torch.Tensor:
    """Each image divided by its brightest pixel, as preprocess.frame leaves every digit."""
    return images / images.amax((1, 2, 3), keepdim=True).clamp(min=1e-6)


def low_resolution(images: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Each digit as if written with its box 8-16 px tall (`unit[:, 0]` picks the size) and enlarged back
    to 20 px: averaged down, then bilinear up (preprocess enlarges with Lanczos; bilinear is its softer
    neighbour, and what a phone's zoom does). Every size is made for every image and one kept: fixed shapes."""
    sizes = list(SMALL_BOXES)
    pick = (unit[:, 0] * len(sizes)).long().clamp(max=len(sizes) - 1)  # (B,)
    varied = torch.zeros_like(images)
    for index, box in enumerate(sizes):
        side = round(FIELD * box / BOX)  # the whole field shrinks with the box: 28 -> 11..22
        small = F.interpolate(images, size=(side, side), mode="area")  # (B, 1, s, s)
        large = F.interpolate(small, size=(FIELD, FIELD), mode="bilinear", align_corners=False)
        varied = varied + (pick == index).to(images.dtype)[:, None, None, None] * large
    return peak_to_one(varied.clamp(min=0))


def blur(images: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Each image blurred by a Gaussian of its own sigma in BLUR_SIGMA: one grouped separable convolution."""
    count = len(images)
    sigma = between(unit[:, 0], BLUR_SIGMA)
    taps = torch.arange(BLUR_TAPS, device=images.device, dtype=images.dtype) - BLUR_TAPS // 2
    kernels = torch.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
    kernels = (kernels / kernels.sum(1, keepdim=True)).to(images.dtype)  # (B, K)
    grouped = images.reshape(1, count, FIELD, FIELD)  # each image its own channel
    grouped = F.conv2d(grouped, kernels[:, None, None, :], padding=(0, BLUR_TAPS // 2), groups=count)
    grouped = F.conv2d(grouped, kernels[:, None, :, None], padding=(BLUR_TAPS // 2, 0), groups=count)
    return peak_to_one(grouped.reshape(count, 1, FIELD, FIELD))


def lighting(images: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Ink brighter at one side of the digit than the other (a linear gradient in a random direction down
    to FAINT_END), and its profile bent by a gamma in GAMMA."""
    angle = between(unit[:, 0], (0, 2 * torch.pi))
    faint_end, gamma = between(unit[:, 1], FAINT_END), between(unit[:, 2], GAMMA)
    position = torch.linspace(-0.5, 0.5, FIELD, device=images.device)
    along = (
        torch.cos(angle)[:, None, None] * position[None, :, None]
        + torch.sin(angle)[:, None, None] * position[None, None, :]
    )  # (B, 28, 28), -0.7..0.7
    light = 1 - (1 - faint_end)[:, None, None] * (along - along.amin((1, 2), keepdim=True)) / 1.5
    return peak_to_one(images.clamp(min=0) ** gamma[:, None, None, None] * light[:, None])


def paper(images: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """What paper leaves after preprocess: faint noise dots near and on the strokes (noise above the
    floor), and a dimmer band where a printed line, taken away, crossed the strokes (a row or a column)."""
    count = len(images)
    sigma = between(unit[:, 0], NOISE_SIGMA)
    position = (unit[:, 1] * FIELD).floor()
    width = LINE_WIDTH[0] + (unit[:, 2] * (LINE_WIDTH[1] - LINE_WIDTH[0] + 1)).floor()
    across = unit[:, 3] < 0.5  # a column (vertical line), else a row
    dimming = between(unit[:, 4], LINE_DIMMING)
    # uniform noise of standard deviation sigma (a uniform on [-1, 1) has 1/sqrt(3))
    noise = (unit[:, 5:] * 2 - 1).reshape(count, 1, FIELD, FIELD) * (3**0.5) * sigma[:, None, None, None]
    near_strokes = F.max_pool2d(images, 5, stride=1, padding=2) > NOISE_FLOOR  # within 2 px: farther, it is a speck
    noise = torch.where((noise > NOISE_FLOOR) & near_strokes, noise - NOISE_FLOOR, torch.zeros_like(noise))
    index = torch.arange(FIELD, device=images.device, dtype=images.dtype)
    in_band = (index[None, :] >= position[:, None]) & (index[None, :] < (position + width)[:, None])  # (B, 28)
    band = torch.where(across[:, None, None], in_band[:, None, :], in_band[:, :, None])  # (B, 28, 28)
    dim = torch.where(band, dimming[:, None, None], torch.ones_like(band, dtype=images.dtype))
    return peak_to_one((images * dim[:, None] + noise).clamp(0, 1))
