import gzip
import hashlib
import http.server
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from digitrec import data, idx
from digitrec.errors import DataError

from conftest import BUNDLED_MNIST


def test_splits_follow_the_tutorial(mnist):
    assert (len(mnist.train), len(mnist.validation), len(mnist.test)) == (55000, 5000, 10000)
    raw_train = idx.decode(idx.read_bytes(BUNDLED_MNIST / "train-images-idx3-ubyte.gz"), "train")
    # validation is the first 5,000 training images, train the 55,000 after them, in file order
    assert torch.equal(mnist.validation.images[:, 0], torch.from_numpy(raw_train[:5000] / np.float32(255)))
    assert torch.equal(mnist.train.images[-1, 0], torch.from_numpy(raw_train[-1] / np.float32(255)))
    assert mnist.train.images.dtype == torch.float32 and mnist.train.labels.dtype == torch.int64
    assert mnist.train.images.min() == 0 and mnist.train.images.max() == 1
    assert mnist.test.labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_describe_reports_per_class_counts_and_the_verified_checksums():
    info = data.describe(BUNDLED_MNIST)
    assert info["splits"]["test"]["per_class"] == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert sum(info["splits"]["train"]["per_class"]) == 55000
    for name, sha256 in info["sha256"].items():
        assert hashlib.sha256(gzip.decompress((BUNDLED_MNIST / name).read_bytes())).hexdigest() == sha256


def test_batches_are_seeded_and_cover_each_epoch_once():
    split = data.Split(torch.arange(100.0).reshape(100, 1, 1, 1), torch.arange(100))
    first = data.batches(split, 10, seed=3)
    epoch = torch.cat([next(first)[1] for _ in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))
    assert not torch.equal(epoch, torch.arange(100))
    again = data.batches(split, 10, seed=3)
    assert torch.equal(torch.cat([next(again)[1] for _ in range(10)]), epoch)


def test_ranks_take_disjoint_shards_of_each_epoch():
    split = data.Split(torch.zeros(40, 1, 1, 1), torch.arange(40))
    shards = [torch.cat([next(data.batches(split, 20, seed=1, rank=r, world_size=2))[1]]) for r in range(2)]
    assert sorted(torch.cat(shards).tolist()) == list(range(40))


def copy_mnist(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in data.FILES:
        shutil.copy(BUNDLED_MNIST / name, directory / name)
    return directory


def test_checksum_mismatch_is_rejected_with_the_file_name(tmp_path):
    directory = copy_mnist(tmp_path / "mnist")
    raw = bytearray(gzip.decompress((directory / "t10k-images-idx3-ubyte.gz").read_bytes()))
    raw[5000] ^= 0xFF  # one pixel, structure intact
    (directory / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=rf"^{re.escape(str(directory))}/t10k-images-idx3-ubyte\.gz: SHA-256 mismatch"):
        data.load(directory)


def test_images_file_given_as_labels_is_rejected(tmp_path):
    directory = copy_mnist(tmp_path / "mnist")
    shutil.copy(directory / "t10k-images-idx3-ubyte.gz", directory / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: expected a labels file, found an images file"):
        data.load(directory)


def test_truncated_data_file_is_rejected_with_its_name(tmp_path):
    directory = copy_mnist(tmp_path / "mnist")
    raw = gzip.decompress((directory / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw[:512]))
    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte\.gz: truncated: shape 10000 needs 10008 bytes, got 512"
    ):
        data.load(directory)


def test_missing_explicit_directory_is_rejected(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load(tmp_path / "nowhere")


class Mirror(http.server.ThreadingHTTPServer):
    """A local stand-in for a public MNIST mirror: serves the bundled files, intact or damaged."""

    def __init__(self, mode: str):
        self.mode = mode
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/mnist/"


class MirrorHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        self.server.requests.append(name)
        if name not in data.FILES:
            self.send_error(404)
            return
        body = (BUNDLED_MNIST / name).read_bytes()
        if self.server.mode == "corrupt":
            raw = bytearray(gzip.decompress(body))
            raw[-1] ^= 0x01
            body = gzip.compress(bytes(raw))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.mode == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection dies midway
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(request):
    server = Mirror(request.param)
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mirror", ["good"], indirect=True)
def test_missing_files_are_downloaded_verified_and_loaded(tmp_path, mirror):
    directory = tmp_path / "empty"
    directory.mkdir()
    assert data.locate(directory, mirrors=(mirror.url,)) == directory
    assert sorted(mirror.requests) == sorted(data.FILES)
    assert sorted(p.name for p in directory.iterdir()) == sorted(data.FILES)  # no temporary files left
    assert len(data.load(directory).test) == 10000


@pytest.mark.parametrize("mirror", [pytest.param("corrupt", marks=pytest.mark.slow), "drop"], indirect=True)
def test_bad_download_is_rejected_and_leaves_nothing_behind(tmp_path, mirror):
    directory = tmp_path / "empty"
    directory.mkdir()
    with pytest.raises(DataError, match=r"could not download train-images-idx3-ubyte\.gz") as error:
        data.locate(directory, mirrors=(mirror.url,))
    assert all(name in str(error.value) for name in data.FILES)  # says which files to put where
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("mirror", ["good"], indirect=True)
def test_first_failing_mirror_falls_back_to_the_next(tmp_path, mirror):
    dead = Mirror("drop")
    try:
        directory = tmp_path / "empty"
        directory.mkdir()
        data.locate(directory, mirrors=(dead.url, mirror.url))
        assert len(data.load(directory).train) == 55000
    finally:
        dead.shutdown()
        dead.server_close()


def test_offline_with_no_files_anywhere_names_the_files_and_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CHECKOUT_DIR", tmp_path / "no-checkout")
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("DIGITREC_DATA", raising=False)
    closed_port = "http://127.0.0.1:9/"  # the discard port: nothing listens there
    with pytest.raises(DataError) as error:
        data.locate(None, mirrors=(closed_port,))
    message = str(error.value)
    assert str(tmp_path / "cache") in message and all(name in message for name in data.FILES)


def test_lookup_prefers_the_environment_variable_over_the_bundled_copy(tmp_path, monkeypatch):
    directory = copy_mnist(tmp_path / "elsewhere")
    monkeypatch.setenv("DIGITREC_DATA", str(directory))
    assert data.locate() == directory
    assert data.locate(BUNDLED_MNIST) == BUNDLED_MNIST  # the flag wins over the variable


def moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: centre of mass (x, y) in pixels, orientation of the ink's long axis in degrees, radius of gyration."""
    ink = images[:, 0].double()
    rows, columns = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    total = ink.sum((1, 2))
    x, y = (ink * columns).sum((1, 2)) / total, (ink * rows).sum((1, 2)) / total
    dx, dy = columns - x[:, None, None], rows - y[:, None, None]
    mu20, mu02, mu11 = [(ink * term).sum((1, 2)) / total for term in (dx * dx, dy * dy, dx * dy)]
    return x, y, torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02)), (mu20 + mu02).sqrt()


def test_random_affine_is_reproducible_and_the_identity_when_all_ranges_are_zero(mnist):
    images = mnist.test.images[:64]
    first = data.random_affine(images, torch.Generator().manual_seed(0), 10, 0.1, 0.1)
    assert first.shape == images.shape and torch.equal(
        first, data.random_affine(images, torch.Generator().manual_seed(0), 10, 0.1, 0.1)
    )
    assert torch.allclose(data.random_affine(images, torch.Generator().manual_seed(0), 0, 0, 0), images, atol=1e-5)


def test_random_shift_moves_each_digit_by_at_most_the_given_share_of_its_size(mnist):
    images = mnist.test.images[:500]
    shifted = data.random_affine(images, torch.Generator().manual_seed(1), 0, 0.1, 0)
    x0, y0, _, size0 = moments(images)
    x1, y1, _, size1 = moments(shifted)
    for moved in (x1 - x0, y1 - y0):
        assert moved.abs().max() <= 0.1 * 28 + 0.3  # 2.8 px, and interpolation's blur
        assert moved.min() < -2.2 and moved.max() > 2.2  # the whole range is used, both ways
    assert (size1 - size0).abs().median() < 0.05  # moved, not resized (a digit pushed off the edge loses some ink)


def test_random_rotation_turns_digits_by_at_most_the_given_degrees(mnist):
    ones = mnist.test.images[mnist.test.labels == 1][:300]  # long thin strokes have a clear orientation
    turned = data.random_affine(ones, torch.Generator().manual_seed(2), 10, 0, 0)
    turn = (moments(turned)[2] - moments(ones)[2] + 90) % 180 - 90  # an axis at 89° turned by 2° is at -89°
    assert turn.abs().max() <= 10 + 1.5
    assert turn.min() < -8 and turn.max() > 8


def test_random_scale_resizes_digits_within_the_given_share(mnist):
    images = mnist.test.images[:500]
    scaled = data.random_affine(images, torch.Generator().manual_seed(3), 0, 0, 0.1)
    ratio = moments(scaled)[3] / moments(images)[3]
    assert ratio.min() >= 0.9 - 0.03 and ratio.max() <= 1.1 + 0.03
    assert ratio.min() < 0.93 and ratio.max() > 1.07


def test_random_stroke_thickens_or_thins_within_dilation_and_erosion(mnist):
    images = mnist.test.images[:256]
    changed = data.random_stroke(images, torch.Generator().manual_seed(0), 1.0)
    assert torch.equal(changed, data.random_stroke(images, torch.Generator().manual_seed(0), 1.0))
    dilated = torch.nn.functional.max_pool2d(images, 3, stride=1, padding=1)
    eroded = -torch.nn.functional.max_pool2d(-images, 3, stride=1, padding=1)
    assert torch.all(changed <= dilated + 1e-6) and torch.all(changed >= eroded - 1e-6)
    ink_ratio = changed.sum((1, 2, 3)) / images.sum((1, 2, 3))
    assert (ink_ratio > 1.2).sum() > 50 and (ink_ratio < 0.8).sum() > 50  # both ways, often
    assert torch.equal(data.random_stroke(images, torch.Generator(), 0.0), images)


ELASTIC_COLUMNS = 2 * data.ELASTIC_GRID**2


def test_an_elastic_field_moves_no_pixel_farther_than_asked_and_the_corners_as_their_control_points():
    draws = data.uniform_draws(torch.Generator().manual_seed(0), 16, ELASTIC_COLUMNS)
    field = data.elastic_field(draws, 2.5, (16, 1, 28, 28))
    in_pixels = field * 14  # grid_sample's units: the 28 px image spans 2
    assert field.shape == (16, 28, 28, 2) and in_pixels.abs().max() <= 2.5 + 1e-5
    points = draws.reshape(16, 2, data.ELASTIC_GRID, data.ELASTIC_GRID) * 2.5
    for row, column, point_row, point_column in ((0, 0, 0, 0), (27, 27, -1, -1), (0, 27, 0, -1)):
        assert torch.allclose(in_pixels[:, row, column], points[:, :, point_row, point_column], atol=1e-5)
    # smooth: neighbouring pixels move together, by at most the moves' difference over the points' spacing
    step = in_pixels.diff(dim=2).abs().max()
    assert step <= 2 * 2.5 / (27 / (data.ELASTIC_GRID - 1)) + 1e-5


def test_elastic_distortion_with_every_move_zero_is_the_affine_map_alone_and_one_pixel_moves_are_shifts(mnist):
    images = mnist.test.images[:32]
    affine_draws = data.uniform_draws(torch.Generator().manual_seed(4), 32, 5)
    still = torch.cat([affine_draws, torch.zeros(32, ELASTIC_COLUMNS)], 1)
    assert data.augmentation_columns(1.0, 10, 0.1, 0.1, 2.0) == 5 + ELASTIC_COLUMNS
    assert torch.equal(
        data.augment(images, still, 1.0, 10, 0.1, 0.1, 2.0), data.augment(images, affine_draws, 1.0, 10, 0.1, 0.1)
    )
    # every control point moved one pixel right: each output pixel samples the one to its right
    right = torch.cat([torch.ones(32, ELASTIC_COLUMNS // 2), torch.zeros(32, ELASTIC_COLUMNS // 2)], 1)
    shifted = data.augment(images, right, 0, 0, 0, 0, 1.0)
    assert torch.allclose(shifted[..., :-1], images[..., 1:], atol=1e-5)
    wobbled = data.augment(
        images, data.uniform_draws(torch.Generator().manual_seed(5), 32, ELASTIC_COLUMNS), 0, 0, 0, 0, 2.0
    )
    assert (wobbled - images).abs().mean() > 0.02  # a real change...
    assert (wobbled.sum((1, 2, 3)) / images.sum((1, 2, 3)) - 1).abs().max() < 0.25  # ...that keeps the ink


def test_batches_started_at_n_continue_the_stream_across_epochs(mnist):
    split = mnist.validation  # 5,000 images over 3 ranks: 16 batches of 100 per rank and epoch
    stream = data.batches(split, 100, seed=5, rank=1, world_size=3)
    expected = [next(stream)[1] for _ in range(120)]
    resumed = data.batches(split, 100, seed=5, rank=1, world_size=3, start=70)
    for labels in expected[70:]:
        assert torch.equal(next(resumed)[1], labels)
