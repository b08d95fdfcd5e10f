"""Helpers the test modules share (plain functions and constants; the shared fixtures are in conftest.py):
driving the CLI in-process, a fake training state, a 7 as a PNG, running commands where torch cannot be
imported, damaging image files for the fuzzing tests, a real server in this process (`LiveServer`), and
drawing on the page in Chromium."""

import math
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import uvicorn
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
    script = (
        "import sys, json\nsys.modules['torch'] = None\nfrom click.testing import CliRunner\n"
        "from digitrec.cli import main\n" + commands
    )
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
            damaged[at : at + len(argument)] = argument
    return bytes(damaged)


fuzzing = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DAMAGE = dict(index=st.integers(0, 14), mutations=st.lists(MUTATION, min_size=1, max_size=4))


# ---- web servers


class LiveServer:
    """The app on a free port of 127.0.0.1, served by uvicorn in a thread of this process."""

    def __init__(self, app):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---- the page in Chromium

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def launch_chromium(playwright, *flags: str):
    """Debian's Chromium, headless, with nothing that reaches the network by itself."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            *flags,
        ],
    )


def draw(page, strokes, pad="#pad"):
    """Each stroke is a list of (x, y) points in 0..1 of the canvas, drawn with the mouse."""
    box = page.locator(pad).bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=4)
        page.mouse.up()


def shown_digit(page, expected: str) -> str:
    page.wait_for_function(f"() => document.getElementById('digit').textContent === '{expected}'", timeout=10_000)
    return page.locator("#digit").text_content()


ZERO = [[(0.5 + 0.22 * math.sin(t / 20 * 2 * math.pi), 0.5 - 0.32 * math.cos(t / 20 * 2 * math.pi)) for t in range(21)]]
ONE = [[(0.48, 0.18), (0.5, 0.5), (0.52, 0.82)]]
SEVEN = [[(0.28, 0.22), (0.72, 0.22), (0.45, 0.82)]]
