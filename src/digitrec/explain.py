"""What a model computed for one image: its feature maps, first-layer filters, saliency and (softmax) weight
templates, and the pictures of them that the CLI, the API and the page show.

Numpy and Pillow only, over whatever runtime the `Recognizer` has: `Recognizer.outputs` gives the logits,
activations and weights by name (onnxruntime: extra outputs of the exported file; torch: forward hooks,
`models.inside_outputs`), and `Recognizer.logits` scores the occluded copies of the image.

Saliency is occlusion: the image is run again with each 4x4 patch (stride 3) blanked to MNIST's true
background, 0, all copies in one batch. What blanking a patch took from a class's score is shared among
the patch's pixels in proportion to the ink it removed there (a pixel that was already background changed
nothing, so it gets nothing), and each pixel's attribution is the mean over the patches that cover it.
A class's score is its logit minus the mean of the ten: softmax ignores a shift common to all ten, which
blanking any ink causes. Not guided backprop, whose maps barely depend on the model (Adebayo et al. 2018).
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from digitrec.preprocess import Source, preprocess
from digitrec.recognizer import Prediction, Recognizer
from digitrec.shapes import CLASSES

SIDE = 28
# On 100 validation digits, blanking the 15 % of ink the map ranks highest took 0.42 from the predicted
# class's probability (the same amount of random ink: 0.07) with 4x4 patches at stride 2 or 3; stride 3
# runs 81 copies at most instead of 169, half the time. 5x5 and 6x6 patches ranked worse (0.34).
PATCH = 4  # pixels blanked at once
STRIDE = 3  # 0, 3, ..., 24: the last patch ends on the last pixel
CORNERS = [(top, left) for top in range(0, SIDE - PATCH + 1, STRIDE) for left in range(0, SIDE - PATCH + 1, STRIDE)]
PATCHES = np.zeros((len(CORNERS), SIDE, SIDE), dtype=bool)  # (81, 28, 28): which pixels each copy blanks
for index, (top, left) in enumerate(CORNERS):
    PATCHES[index, top : top + PATCH, left : left + PATCH] = True
COVERAGE = PATCHES.sum(0)  # (28, 28): how many patches cover each pixel (1 to 4)

RED = np.array([0.84, 0.09, 0.11])  # positive: evidence for the class
BLUE = np.array([0.13, 0.38, 0.85])  # negative: evidence against it
FEATURE_MAP = "a feature map shows where one filter of the layer found its pattern in the digit: bright = strong"
SALIENCY = "red: ink that pushed the answer towards {digit}; blue: ink that pushed it away"


@dataclass(frozen=True)
class Stage:
    name: str  # conv1, conv2, ...: the convolution stages in order
    maps: np.ndarray  # (C, H, W) after the stage's ReLU


@dataclass(frozen=True)
class Explanation:
    prediction: Prediction  # its `preprocessed` is the (28, 28) input the model saw
    stages: list[Stage]  # empty for a model without convolutions (softmax)
    filters: np.ndarray | None  # (C, k, k): the first convolution's weights
    saliency: np.ndarray  # (10, 28, 28): each pixel's share of each class's score
    templates: np.ndarray | None  # (10, 28, 28): softmax's weights per class; None for other models


def explain(recognizer: Recognizer, image: Source, name: str = "image") -> Explanation:
    """Explain one image; raises `ImageError` like `Recognizer.predict`."""
    return explain_array(recognizer, preprocess(image, name))


def explain_array(recognizer: Recognizer, pixels: np.ndarray) -> Explanation:
    """Explain one preprocessed (28, 28) array in 0..1."""
    pixels = np.asarray(pixels, dtype=np.float32)
    outputs = recognizer.outputs(pixels[None, None])  # (28, 28) -> (1, 1, 28, 28)
    stages = [
        Stage(name.removeprefix("activation:"), maps[0])
        for name, maps in outputs.items()
        if name.startswith("activation:")
    ]
    filters = outputs.get("filters:conv1")
    return Explanation(
        prediction=recognizer.predict_arrays(pixels[None])[0],
        stages=stages,
        filters=None if filters is None else filters[:, 0],  # (C, 1, k, k) -> (C, k, k)
        saliency=occlusion(recognizer, pixels, outputs["logits"][0]),
        templates=outputs.get("templates"),
    )


def occlusion(recognizer: Recognizer, pixels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """(10, 28, 28): how much each pixel's ink adds to each class's centred logit."""
    removed = PATCHES * pixels  # (81, 28, 28): the ink each copy blanks
    ink = removed.sum((1, 2))
    touched = ink > 0  # a patch of background changes nothing: no need to run it
    if not touched.any():  # a blank array: nothing to blank, nothing to attribute
        return np.zeros((CLASSES, SIDE, SIDE))
    copies = pixels * ~PATCHES[touched]  # (P, 28, 28), P <= 81
    occluded = recognizer.logits(copies[:, None].astype(np.float32)).astype(np.float64)  # (P, 1, 28, 28) -> (P, 10)
    scores = occluded - occluded.mean(1, keepdims=True)
    lost = (logits - logits.mean()) - scores  # (P, 10): what blanking each patch took from each class
    shares = removed[touched] / ink[touched, None, None]  # (P, 28, 28): each pixel's part of its patch's ink
    return np.einsum("pk,pyx->kyx", lost, shares) / COVERAGE


def saliency_caption(digit: int) -> str:
    return SALIENCY.format(digit=digit)


# Pictures: float arrays in 0..1, (H, W) grey or (H, W, 3) RGB, for PNG encoding.


def tile(tiles: np.ndarray, columns: int, gap: float) -> np.ndarray:
    """(N, h, w[, 3]) tiles -> one grid image with a 1-pixel `gap`-coloured border between them."""
    count, height, width = tiles.shape[:3]
    rows = -(-count // columns)
    grid = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1, *tiles.shape[3:]), gap, dtype=np.float32)
    for index, picture in enumerate(tiles):
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        grid[top : top + height, left : left + width] = picture
    return grid


def grid_columns(count: int) -> int:
    """Twice as wide as tall, in a power of two: 32 maps -> 8 columns, 64 or 128 -> 16."""
    return 2 ** int(np.ceil(np.log2(np.sqrt(2 * count))))


def feature_grid(maps: np.ndarray) -> np.ndarray:
    """(C, H, W) activations -> a grey grid, white on black: the square root of each value's share of the
    layer's strongest response (deeper layers' weaker maps would be black on a linear scale)."""
    peak = maps.max()
    return tile(np.sqrt(maps / peak) if peak > 0 else maps, grid_columns(len(maps)), gap=1.0)


def diverging(values: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Signed values -> RGB: white at 0, red positive, blue negative, full colour at +-`scale` (default:
    the largest magnitude)."""
    scale = scale or float(np.abs(values).max()) or 1.0
    strength = np.clip(values / scale, -1, 1)[..., None]
    colour = np.where(strength > 0, RED, BLUE)
    return (1 - np.abs(strength)) + np.abs(strength) * colour


def filter_grid(filters: np.ndarray) -> np.ndarray:
    """(C, k, k) weights -> a red/blue grid on one common scale."""
    return tile(diverging(filters), grid_columns(len(filters)), gap=0.7)


def overlay(pixels: np.ndarray, attribution: np.ndarray) -> np.ndarray:
    """The input's ink in grey on white, coloured red where it adds to the class's score and blue where it
    takes away, in proportion to the share of the strongest pixel."""
    scale = float(np.abs(attribution).max()) or 1.0
    strength = np.clip(attribution / scale, -1, 1)[..., None]
    paper = (1 - 0.45 * pixels)[..., None]  # (28, 28) -> (28, 28, 1): ink a mid grey
    colour = np.where(strength > 0, RED, BLUE)
    return (1 - np.abs(strength)) * paper + np.abs(strength) * colour


def templates_rgb(templates: np.ndarray) -> np.ndarray:
    """(10, 28, 28) softmax weights -> (10, 28, 28, 3) red/blue on the scale of the largest weight of all
    ten, the tutorial's picture of what a linear model learned."""
    return diverging(templates, float(np.abs(templates).max()))


def picture(pixels: np.ndarray, zoom: int) -> Image.Image:
    """A float picture in 0..1 as a Pillow image, each pixel a `zoom` x `zoom` square."""
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))
    return image.resize((image.width * zoom, image.height * zoom), Image.Resampling.NEAREST)


def summary(explanation: Explanation) -> Image.Image:
    """The input, the saliency of the answer over it, and the ten probabilities as bars, side by side."""
    prediction = explanation.prediction
    strip = Image.new("RGB", (520, 136), "white")
    strip.paste(picture(prediction.preprocessed, 4), (0, 16))
    strip.paste(picture(overlay(prediction.preprocessed, explanation.saliency[prediction.digit]), 4), (124, 16))
    draw = ImageDraw.Draw(strip)
    draw.text((0, 0), "input (28x28)", fill="black")
    draw.text((124, 0), f"saliency for {prediction.digit}", fill="black")
    for digit, probability in enumerate(prediction.probabilities):
        y = 16 + 11 * digit
        draw.text((250, y - 1), str(digit), fill="black")
        colour = (37, 99, 235) if digit == prediction.digit else (152, 162, 179)
        draw.rectangle((262, y, 262 + round(200 * probability), y + 8), fill=colour)
        draw.text((468, y - 1), f"{100 * probability:.1f}%", fill="black")
    return strip


def sheet(explanation: Explanation, title: str = "") -> Image.Image:
    """One picture of everything, a labelled block under another: the summary with the saliency's caption,
    each stage's feature maps, the first layer's filters, and softmax's templates."""
    prediction = explanation.prediction
    unsure = " (unsure)" if prediction.unsure else ""
    heading = f"{title}: {prediction.digit}, {100 * prediction.confidence:.1f}% sure{unsure}"
    blocks = [(heading, summary(explanation)), (saliency_caption(prediction.digit), None)]
    for stage in explanation.stages:
        zoom = 2 if stage.maps.shape[-1] > 7 else 3
        shape = " x ".join(map(str, stage.maps.shape))
        blocks.append((f"{stage.name}: {shape}", picture(feature_grid(stage.maps), zoom)))
    if explanation.stages:
        blocks.append((FEATURE_MAP, None))
    if explanation.filters is not None:
        filters = picture(filter_grid(explanation.filters), 6)
        blocks.append(("the first layer's filters (red: positive weights, blue: negative)", filters))
    if explanation.templates is not None:
        templates = picture(tile(templates_rgb(explanation.templates), CLASSES, gap=1.0), 2)
        blocks.append(("each digit's weight template, 0 to 9 (red: ink there counts for it, blue: against)", templates))
    line = 16  # pixels of one line of Pillow's default font, with its spacing
    width = max(image.width for _, image in blocks if image is not None)
    height = sum(line + (image.height + 6 if image is not None else 0) for _, image in blocks)
    canvas = Image.new("RGB", (width + 16, height + 16), "white")
    draw, y = ImageDraw.Draw(canvas), 8
    for label, image in blocks:
        draw.text((8, y), label, fill="black")
        y += line
        if image is not None:
            canvas.paste(image, (8, y))
            y += image.height + 6
    return canvas
