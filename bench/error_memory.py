"""Resident memory of a `digitrec serve` process while it refuses images that hold no digit: N blank
5000x5000 PNGs (35 kB each, 25 megapixels decoded) posted one after another to /api/predict.

    python bench/error_memory.py [N]      (default 100; prints the server's RSS every 25 requests, in MB)
"""

import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image


def rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmRSS:"))) // 1024


def main(count: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                httpx.get(url + "/api/health")
                break
            except httpx.TransportError:
                time.sleep(0.2)
        buffer = io.BytesIO()
        Image.new("L", (5000, 5000), 255).save(buffer, "PNG")
        print(f"blank PNG {len(buffer.getvalue()):,} bytes; server RSS at start {rss_mb(server.pid)} MB")
        with httpx.Client(base_url=url, timeout=60) as client:
            for index in range(1, count + 1):
                response = client.post("/api/predict", content=buffer.getvalue(), headers={"Content-Type": "image/png"})
                assert response.status_code == 422, response.text
                if index % 25 == 0:
                    print(f"after {index} requests: {rss_mb(server.pid)} MB", flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
