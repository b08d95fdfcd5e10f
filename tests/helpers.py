"""Helpers the test modules share (plain functions and constants; the shared fixtures are in conftest.py):
driving the CLI in-process, a fake training state, a 7 as a PNG, running commands where torch cannot be
imported, and damaging image files for the fuzzing tests."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from digitrec.cli import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def fake_state(step: int) -> dict:
    return {"step": step, "weights": torch.full((3,), float(step))}


def seven_png(mnist, folder) -> Path:
    """The first test digit (a 7) as a 100 x 100 dark-on-light PNG in `folder`."""
    image = folder / "seven.png"
    Image.fromarray(255 - (mnist.test.images[0, 0].numpy() * 255).astype(np.uint8)).resize((100, 100)).save(image)
    return image


def without_torch(commands: str) -> str:
    """What `commands` print, run by a fresh Python in which importing torch fails (a deployment installed
    without the `train` extra); they may use `json`, `CliRunner` and the CLI's `main`."""
    script = ("import sys, json\nsys.modules['torch'] = None\nfrom click.testing import CliRunner\n"
              "from digitrec.cli import main\n" + commands)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout


MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
)


def mutate(data: bytes, mutations) -> bytes:
    damaged = bytearray(data)
    for kind, position, argument in mutations:
        at = position % max(len(damaged), 1)
        if kind == "flip" and damaged:
            damaged[at] ^= 1 << argument
        elif kind == "cut":
            del damaged[at:]
        elif kind == "insert":
            damaged[at:at] = argument
        elif kind == "overwrite":
            damaged[at:at + len(argument)] = argument
    return bytes(damaged)


fuzzing = settings(max_examples=150, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DAMAGE = dict(index=st.integers(0, 14), mutations=st.lists(MUTATION, min_size=1, max_size=4))
