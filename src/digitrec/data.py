"""MNIST on disk -> verified arrays -> in-memory tensors and batches.

Owns where the four files are looked for (flag, DIGITREC_DATA, the bundled copy, the user cache),
downloading them when they are missing everywhere, checking them (IDX structure, shapes, SHA-256 of
the uncompressed bytes), the tutorial's train/validation/test split, and the shuffling batch iterator.
It does not know about models.
"""

import collections
import hashlib
import http.client
import itertools
import multiprocessing
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch

from digitrec import idx, number_strings
from digitrec.errors import DataError
from digitrec.files import write_atomic

# file name -> (SHA-256 of the uncompressed bytes, shape)
FILES = {
    "train-images-idx3-ubyte.gz": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", (60000, 28, 28)),
    "train-labels-idx1-ubyte.gz": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", (60000,)),
    "t10k-images-idx3-ubyte.gz": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", (10000, 28, 28)),
    "t10k-labels-idx1-ubyte.gz": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", (10000,)),
}
# The two mirrors torchvision downloads MNIST from, in its order.
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
CHECKOUT_DIR = Path(__file__).resolve().parents[2] / "data" / "mnist"  # present in a source checkout, not in a wheel
CACHE_DIR = Path(platformdirs.user_cache_dir("digitrec")) / "mnist"  # ~/.cache/digitrec/mnist on Linux
VALIDATION_SIZE = 5000  # the tutorial's validation split: the first 5,000 training images
DOWNLOAD_TIMEOUT_SECONDS = 30
ELASTIC_GRID = 4  # control points per side of an elastic distortion's field (about 9 px apart in 28)


def missing_files(directory: Path) -> list[str]:
    return [name for name in FILES if not (directory / name).is_file()]


def locate(data_dir: str | Path | None = None, mirrors: tuple[str, ...] = MIRRORS) -> Path:
    """The directory to read MNIST from, downloading the files into it when none holds them.

    Order: `data_dir`, then $DIGITREC_DATA, then a source checkout's copy, then the user cache. A directory
    that is named explicitly is used as it is: missing files are downloaded into it.
    """
    explicit = data_dir or os.environ.get("DIGITREC_DATA")
    if explicit:
        directory = Path(explicit).expanduser()
        if not directory.is_dir():
            raise DataError(f"{directory}: data directory does not exist")
    else:
        directory = next((d for d in (CHECKOUT_DIR, CACHE_DIR) if not missing_files(d)), CACHE_DIR)
    if missing_files(directory):
        download(directory, mirrors)
    return directory


def download(directory: Path, mirrors: tuple[str, ...] = MIRRORS) -> None:
    """Fetch each missing file from the first mirror that serves it intact; never leave a partial file."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in missing_files(directory):
        failures = []
        for mirror in mirrors:
            try:
                fetch_verified(mirror + name, directory / name)
                break
            except (OSError, DataError, http.client.HTTPException) as error:  # URLError is an OSError
                failures.append(f"{mirror}: {getattr(error, 'reason', error)}")
        else:
            raise DataError(
                f"could not download {name} ({'; '.join(failures)}). "
                f"Put the four MNIST files ({', '.join(FILES)}) in {directory}, "
                "or point --data-dir / DIGITREC_DATA at a directory that holds them"
            )


def fetch_verified(url: str, destination: Path) -> None:
    """Download `url` and write it to `destination` only once its checksum matches."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
        body = response.read()  # at most about 10 MB
    verified_array_from_bytes(body, destination.name)
    write_atomic(destination, body)


def verified_array(path: Path) -> np.ndarray:
    """The array in MNIST file `path`, once its structure, shape and checksum are checked; errors name the path."""
    try:
        return verified_array_from_bytes(idx.read_bytes(path), path.name)
    except DataError as error:  # the checks name the file; a person also needs to know which folder
        message = str(error)
        if not message.startswith(f"{path.name}:"):
            raise
        raise DataError(f"{path}{message[len(path.name) :]}") from None


def verified_array_from_bytes(raw: bytes, name: str) -> np.ndarray:
    """The array in the bytes of MNIST file `name`, once its structure, shape and checksum are checked."""
    expected_sha256, expected_shape = FILES[name]
    raw = idx.gunzip(raw, name)
    array = idx.decode(raw, name)
    if array.ndim != len(expected_shape):
        kinds = {1: "a labels file", 3: "an images file"}
        found = kinds.get(array.ndim, f"a {array.ndim}-dimensional file")
        raise DataError(f"{name}: expected {kinds[len(expected_shape)]}, found {found} (shape {array.shape})")
    if array.shape != expected_shape:
        raise DataError(f"{name}: expected shape {expected_shape}, found {array.shape}")
    if hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise DataError(f"{name}: SHA-256 mismatch: the file is not the original MNIST (corrupted or altered)")
    return array


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, 1, 28, 28) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class MNIST:
    train: Split
    validation: Split
    test: Split
    directory: Path

    def to(self, device: torch.device | str) -> "MNIST":
        return MNIST(self.train.to(device), self.validation.to(device), self.test.to(device), self.directory)


def load(data_dir: str | Path | None = None) -> MNIST:
    """The three splits as tensors: train = training images 5,000 onwards, validation = the first 5,000."""
    directory = locate(data_dir)
    arrays = {name: verified_array(directory / name) for name in FILES}
    train_images, train_labels = arrays["train-images-idx3-ubyte.gz"], arrays["train-labels-idx1-ubyte.gz"]
    test = to_split(arrays["t10k-images-idx3-ubyte.gz"], arrays["t10k-labels-idx1-ubyte.gz"])
    return MNIST(
        train=to_split(train_images[VALIDATION_SIZE:], train_labels[VALIDATION_SIZE:]),
        validation=to_split(train_images[:VALIDATION_SIZE], train_labels[:VALIDATION_SIZE]),
        test=test,
        directory=directory,
    )


def to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    if labels.max(initial=0) > 9:
        raise DataError(f"labels must be digits 0-9, found {labels.max()}")
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    return Split(pixels, torch.from_numpy(labels.astype(np.int64)))


def batches(
    split: Split, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches (images, labels), epoch after epoch, like the tutorial's `next_batch`; see `batch_indices`."""
    for chosen in batch_indices(split, batch_size, seed, rank, world_size, start):
        yield split.images[chosen], split.labels[chosen]


def batch_indices(
    split: Split, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0
) -> Iterator[torch.Tensor]:
    """Endless batches of indices into `split` (on its device), epoch after epoch.

    Each epoch is one seeded permutation; with `world_size` > 1 every rank draws the same permutation
    and takes its own interleaved shard of it, so the ranks together see each image once per epoch.
    The last partial batch of an epoch is dropped. The stream begins at batch number `start`, exactly
    where a run that had already taken `start` batches would be, so a resumed run sees the same batches.
    """
    generator = torch.Generator().manual_seed(seed)
    if batch_size * world_size > len(split):
        raise ValueError(f"batch size {batch_size} x {world_size} ranks exceeds the {len(split)} images")
    shard = len(split) // world_size  # every rank the same number of images, so the ranks step in lockstep
    epochs_done, skip = divmod(start, shard // batch_size)
    for _ in range(epochs_done):
        torch.randperm(len(split), generator=generator)  # the permutations of the epochs already taken
    while True:
        order = torch.randperm(len(split), generator=generator)[rank::world_size][:shard].to(split.labels.device)
        for start_index in range(skip * batch_size, len(order) - batch_size + 1, batch_size):
            yield order[start_index : start_index + batch_size]
        skip = 0


def string_batches(
    split: Split, batch_size: int, seed: int, rank: int = 0, start: int = 0, mixture: str = "plain", workers: int = 0
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless batches of random number strings made from `split`'s digits (number_strings.random_batch, as
    number_strings.MIXTURES[`mixture`] says), for the number reader: (strips (B, 1, 32, W), each strip's output
    columns (B,), their digits as classes 1-10 one string after another, each string's length (B,)).
    Batch number n is drawn from a generator seeded with (seed, n, rank) alone, so a resumed run
    (`start`) sees the same strings, and every rank under torchrun its own; `workers` processes make them
    ahead of time (the same batches: making strings, not the model, bounds a reader's step on a GPU)."""
    device = split.images.device
    source = (
        split.images[:, 0].cpu().numpy(),
        split.labels.cpu().numpy(),
        batch_size,
        seed,
        rank,
        number_strings.MIXTURES[mixture],
    )
    key = id(source)
    string_sources[key] = source
    try:
        made = (
            ahead(make_string_batch, key, start, workers)
            if workers
            else (make_string_batch(key, step) for step in itertools.count(start))
        )
        for batch in made:
            yield (
                torch.from_numpy(batch.pixels).to(device),
                torch.from_numpy(batch.columns),
                torch.from_numpy(batch.digits + 1).to(device),
                torch.from_numpy(batch.lengths),
            )  # class 0 is the blank
    finally:
        del string_sources[key]


# what make_string_batch draws from, by key: forked workers inherit it, so the digits are never pickled
string_sources: dict[int, tuple] = {}


def make_string_batch(key: int, step: int) -> number_strings.Batch:
    images, labels, batch_size, seed, rank, mixture = string_sources[key]
    return number_strings.random_batch(
        images, labels, batch_size, np.random.default_rng([seed, step, rank]), mixture=mixture
    )


def ahead(make, key: int, start: int, workers: int, depth: int = 4) -> Iterator:
    """make(key, start), make(key, start + 1), ... in order, each made by one of `workers` forked processes,
    at most `depth` per worker made ahead of the one asked for. The workers stop when the iterator is closed."""
    pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        pending = collections.deque(pool.apply_async(make, (key, n)) for n in range(start, start + depth * workers))
        for n in itertools.count(start + depth * workers):
            result = pending.popleft().get()
            pending.append(pool.apply_async(make, (key, n)))
            yield result
    finally:
        pool.terminate()


def describe(data_dir: str | Path | None = None) -> dict:
    """What `digitrec data` prints: location, each file's verified SHA-256 (of its uncompressed bytes),
    split sizes and per-class counts. Any file that fails its check raises instead."""
    mnist = load(data_dir)
    return {
        "directory": str(mnist.directory),
        "sha256": {name: expected_sha256 for name, (expected_sha256, _) in FILES.items()},
        "splits": {
            split_name: {
                "size": len(split),
                "per_class": torch.bincount(split.labels, minlength=10).tolist(),
            }
            for split_name, split in (("train", mnist.train), ("validation", mnist.validation), ("test", mnist.test))
        },
    }


def uniform_draws(generator: torch.Generator, count: int, columns: int) -> torch.Tensor:
    """(count, columns) numbers uniform in [-1, 1), drawn from `generator` one column after another."""
    return torch.stack([torch.rand(count, generator=generator) * 2 - 1 for _ in range(columns)], 1)


def augmentation_columns(stroke: float, degrees: float, shift: float, scale: float, elastic: float = 0.0) -> int:
    """How many random numbers per image `augment` takes: one for the stroke (if any), four for the affine map (if
    any), 2 x ELASTIC_GRID^2 for the elastic distortion (if any)."""
    return int(stroke > 0) + 4 * int(degrees > 0 or shift > 0 or scale > 0) + 2 * ELASTIC_GRID**2 * int(elastic > 0)


def augment(
    images: torch.Tensor,
    draws: torch.Tensor,
    stroke: float,
    degrees: float,
    shift: float,
    scale: float,
    elastic: float = 0.0,
) -> torch.Tensor:
    """`images` with their strokes varied (`stroke_varied`), then rotated, scaled and shifted (`affine_grid`) and
    distorted elastically (`elastic_field`) in one resampling, each image by its row of `draws` (`uniform_draws`
    with `augmentation_columns` columns, on the images' device). The random numbers come in as a tensor so that
    the same arithmetic runs eagerly or inside a CUDA graph."""
    if stroke > 0:
        images = stroke_varied(images, draws[:, 0] * stroke)
        draws = draws[:, 1:]
    if degrees > 0 or shift > 0 or scale > 0:
        grid = affine_grid(draws, degrees, shift, scale, images)
        draws = draws[:, 4:]
    elif elastic > 0:
        grid = affine_grid(torch.zeros_like(draws[:, :4]), 0.0, 0.0, 0.0, images)  # the identity map
    else:
        return images
    if elastic > 0:
        grid = grid + elastic_field(draws, elastic, images.shape).to(grid.dtype)
    return resampled(images, grid)


def random_affine(
    images: torch.Tensor, generator: torch.Generator, degrees: float, shift: float, scale: float
) -> torch.Tensor:
    """Each image rotated by up to ±`degrees`, shifted by up to ±`shift` of its size, scaled by 1 ± `scale`.

    The random numbers come from `generator` (on the CPU), so a seeded run is reproducible.
    """
    return affine(images, uniform_draws(generator, len(images), 4).to(images.device), degrees, shift, scale)


def affine(images: torch.Tensor, draws: torch.Tensor, degrees: float, shift: float, scale: float) -> torch.Tensor:
    """One batched `grid_sample`, no per-image Python; `draws` (B, 4) in [-1, 1): angle, zoom, shift x, shift y."""
    return resampled(images, affine_grid(draws, degrees, shift, scale, images))


def affine_grid(draws: torch.Tensor, degrees: float, shift: float, scale: float, images: torch.Tensor) -> torch.Tensor:
    """Where each output pixel of `images` samples its input, in `grid_sample`'s coordinates: (B, H, W, 2), for
    the rotation, zoom and shift that the first four columns of `draws` pick."""
    angle = torch.deg2rad(draws[:, 0] * degrees)
    zoom = 1 + draws[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output coordinates in [-1, 1] to input coordinates: a shift of 2 * shift is shift * size
    theta = torch.stack(
        [torch.stack([cos, -sin, 2 * (draws[:, 2] * shift)], 1), torch.stack([sin, cos, 2 * (draws[:, 3] * shift)], 1)],
        1,
    )  # (B, 2, 3)
    return torch.nn.functional.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)


def elastic_field(draws: torch.Tensor, elastic: float, shape: torch.Size) -> torch.Tensor:
    """A smooth elastic distortion, as added to a sampling grid: (B, H, W, 2) in `grid_sample`'s coordinates.

    Each of ELASTIC_GRID x ELASTIC_GRID control points spread over the image moves by up to `elastic` px each way
    (the first 2 x ELASTIC_GRID^2 columns of `draws`: x moves, then y moves); the pixels between them move by
    the bilinear blend of their neighbours' moves, so none moves farther and neighbouring pixels move together:
    a hand's wobble, which bends a stroke without breaking it, where the affine map only turns or stretches
    the whole digit."""
    batch, _, height, width = shape
    points = ELASTIC_GRID * ELASTIC_GRID
    coarse = draws[:, : 2 * points].reshape(batch, 2, ELASTIC_GRID, ELASTIC_GRID) * elastic
    moves = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)
    # px -> grid_sample's units (the image spans [-1, 1]), one Python scalar per axis: no tensor made here, so
    # the same steps can be captured in a CUDA graph
    return torch.stack([moves[:, 0] * (2 / width), moves[:, 1] * (2 / height)], dim=3)


def resampled(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def random_stroke(images: torch.Tensor, generator: torch.Generator, amount: float) -> torch.Tensor:
    """Each image's strokes thickened or thinned by a random share, up to `amount`, of a 3x3 dilation or erosion."""
    return stroke_varied(images, (uniform_draws(generator, len(images), 1)[:, 0] * amount).to(images.device))


def stroke_varied(images: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """Each image mixed with its 3x3 dilation (share t > 0) or erosion (t < 0), by its share in `shares` (B,).

    A thick marker or a fine pen changes a digit's stroke width more than anything else a person's image
    does; mixing an image with its dilation or erosion varies the width continuously.
    """
    t = shares.view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
    dilated = torch.nn.functional.max_pool2d(images, 3, stride=1, padding=1)
    eroded = -torch.nn.functional.max_pool2d(-images, 3, stride=1, padding=1)
    return images + t.clamp(min=0) * (dilated - images) + (-t).clamp(min=0) * (eroded - images)
