"""Take docs/page.png, the README's picture of the page: a 7 drawn with the mouse on a real `digitrec serve`.

Needs Debian's chromium and playwright (the test extra). Run from the repository root:
python scripts/page_screenshot.py [OUT.png]
"""

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
SEVEN = [
    [(0.27, 0.24), (0.50, 0.23), (0.72, 0.22), (0.60, 0.45), (0.50, 0.65), (0.44, 0.82)],
    [(0.38, 0.52), (0.66, 0.50)],
]  # strokes in 0..1 of the pad: the top and stem, then the bar


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(out: Path) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as runs:
        server = subprocess.Popen(
            [sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--runs", runs],
            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
        )
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.2)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1000, "height": 800})
                page.goto(f"http://127.0.0.1:{port}/")
                box = page.locator("#pad").bounding_box()
                for stroke in SEVEN:
                    page.mouse.move(box["x"] + stroke[0][0] * box["width"], box["y"] + stroke[0][1] * box["height"])
                    page.mouse.down()
                    for x, y in stroke[1:]:
                        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=6)
                    page.mouse.up()
                page.wait_for_function("document.getElementById('digit').textContent === '7'", timeout=15_000)
                time.sleep(2.5)  # the last debounced answer and the 28x28 view
                page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1000, "height": 722})
                browser.close()
        finally:
            server.terminate()
            server.wait()
    Image.open(out).quantize(colors=128, dither=Image.Dither.NONE).save(out, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "page.png")
