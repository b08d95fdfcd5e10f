"""A population of real writers the models never saw: scikit-learn's 1,797 UCI digits (8x8), read through
`predict` as a person's images. For measuring only: never train or choose anything on them.

The UCI digits (Alpaydin & Kaynak, 1998) are 32x32 bitmaps by 43 writers, counted into 4x4 blocks: 8x8
images with values 0..16, ink high, as MNIST's. Each is turned into an image as a person would hand it
over: scaled to 0..255 (x 255/16), given a 2 px black margin (12x12, so its border is paper), and
enlarged 8x with bilinear interpolation to 96x96; `Recognizer.predict_many` then finds its ink and frames
it as `digitrec predict` does (the ink's box scaled to 20 px inside 28x28, centred by mass). The table
gives the accuracy and the share flagged `unsure`, of all, of the right and of the wrong readings.

    python bench/uci_digits.py [--model PATH]

Needs scikit-learn (the test extra); its digits ship inside it, nothing is downloaded.
"""

import argparse
import time

import numpy as np
from PIL import Image

from digitrec.recognizer import Recognizer

MARGIN = 2  # px of paper around the 8x8 digit
ENLARGE = 8  # 12x12 -> 96x96


def uci_images() -> tuple[list[np.ndarray], np.ndarray]:
    """The 1,797 UCI digits as 96x96 uint8 images (white ink on black) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for small in digits.images:
        framed = np.pad(np.round(small * 255 / 16).astype(np.uint8), MARGIN)
        side = framed.shape[0] * ENLARGE
        images.append(np.asarray(Image.fromarray(framed).resize((side, side), Image.Resampling.BILINEAR)))
    return images, digits.target


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=None, help="Run directory, .safetensors or .onnx (default: the bundled model)."
    )
    parser.add_argument("--workers", type=int, default=None, help="Preprocessing processes (default: one per core).")
    args = parser.parse_args()
    images, labels = uci_images()
    recognizer = Recognizer.load(args.model)
    started = time.perf_counter()
    results = recognizer.predict_many(((str(i), image) for i, image in enumerate(images)), workers=args.workers)
    seconds = time.perf_counter() - started
    read = np.array([getattr(result, "digit", -1) for result in results])
    unsure = np.array([getattr(result, "unsure", True) for result in results])
    right = read == labels
    print(f"model: {recognizer.info['weights']}  ({len(labels)} UCI digits, {seconds:.1f} s)")
    print(f"{'accuracy':<22}{100 * right.mean():>7.2f}%")
    print(f"{'unsure, of all':<22}{100 * unsure.mean():>7.2f}%")
    print(f"{'unsure, of right ones':<22}{100 * unsure[right].mean():>7.2f}%")
    print(f"{'unsure, of wrong ones':<22}{100 * unsure[~right].mean() if (~right).any() else 0:>7.2f}%")
    per_digit = "  ".join(f"{d}:{100 * right[labels == d].mean():.1f}" for d in range(10))
    print(f"per digit (%): {per_digit}")


if __name__ == "__main__":
    main()
