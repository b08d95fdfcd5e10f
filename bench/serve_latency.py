"""Latency of `digitrec serve` under load: 5,000 POSTs of 280x280 canvas PNGs from 8 concurrent clients.

Starts the real server (`python -m digitrec serve`) on a free loopback port, waits for /api/health, then
8 client threads send the requests, each over one keep-alive connection. The clients share the server's
2 cores, so they are kept lean: each request is built once as bytes and written to a raw socket, and
the response is read by its Content-Length. Prints errors, p50/p90/p99 latency and throughput.

With `--train MODEL` it measures twice in one invocation: idle, then while the server trains MODEL in
its child process (started through `POST /api/runs`, in a temporary runs folder, once the run has logged
its first steps; stopped afterwards), and prints the steps the run took during the measurement.

    python bench/serve_latency.py [--requests 5000] [--clients 8] [--workers 1] [--model PATH] [--train fast]
"""

import argparse
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitrec import data


def canvas_pngs(count: int) -> list[bytes]:
    """MNIST test digits drawn as the page sends them: black strokes on a white 280x280 canvas."""
    digits = (data.load().test.images[:count, 0].numpy() * 255).astype(np.uint8)
    pngs = []
    for digit in digits:
        buffer = io.BytesIO()
        Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR).convert("RGBA").save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_head(stream) -> tuple[int, int]:
    """The status code and Content-Length of the HTTP/1.1 response starting on `stream`."""
    status = int(stream.readline().split()[1])
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, length


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="server processes (digitrec serve --workers)")
    parser.add_argument("--model", default=None)
    parser.add_argument(
        "--train",
        choices=["softmax", "cnn", "fast"],
        default=None,
        help="also measure while the server trains this model (a 6,000-step run, stopped after)",
    )
    args = parser.parse_args()
    pngs = canvas_pngs(200)
    port = free_port()
    runs_dir = tempfile.mkdtemp(prefix="digitrec-bench-runs-")
    command = [
        sys.executable,
        "-m",
        "digitrec",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--runs",
        runs_dir,
    ]
    server = subprocess.Popen(command + (["--model", args.model] if args.model else []), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                call(port, "GET", "/api/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start") from None
                time.sleep(0.2)
        requests = [
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {len(png)}\r\n\r\n".encode()
            + png
            for png in pngs
        ]
        report("idle" if args.train else "", *measure(port, requests, args.requests, args.clients), args.clients)
        if args.train:
            name = call(port, "POST", "/api/runs", {"model": args.train, "steps": 6000})["name"]
            while (before := run_step(port, name)) == 0:  # past the child's start-up: training
                time.sleep(0.2)
            cpu_before = children_cpu_seconds(server.pid)
            measured = measure(port, requests, args.requests, args.clients)
            cpu = children_cpu_seconds(server.pid) - cpu_before
            after = run_step(port, name)
            call(port, "POST", f"/api/runs/{name}/stop")
            report(
                f"while {args.train} trains (it logged steps {before} -> {after} and used {cpu:.1f} s of CPU "
                f"during the measurement)",
                *measured,
                args.clients,
            )
    finally:
        server.terminate()
        server.wait(60)  # it stops its training child first
        shutil.rmtree(runs_dir)


def call(port: int, method: str, path: str, body: dict | None = None) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, json.dumps(body) if body else None, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status >= 400:
        raise SystemExit(f"{method} {path}: {response.status} {answer}")
    return answer


def children_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by the processes whose parent is `pid` (Linux /proc)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        if int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_step(port: int, name: str) -> int:
    return next(run["step"] for run in call(port, "GET", "/api/runs") if run["name"] == name)


def measure(port: int, requests: list[bytes], count: int, clients: int) -> tuple[list[float], list[int], float]:
    """`count` requests from `clients` threads: their latencies in seconds, the non-200 statuses, wall seconds."""
    latencies, errors = [], []
    lock = threading.Lock()
    per_client = count // clients

    def client(number: int):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = connection.makefile("rb")
            for index in range(per_client):
                request = requests[(number * per_client + index) % len(requests)]
                started = time.perf_counter()
                connection.sendall(request)
                status, length = read_head(stream)
                stream.read(length)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if status != 200:
                        errors.append(status)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def report(label: str, latencies: list[float], errors: list[int], wall: float, clients: int) -> None:
    milliseconds = np.array(latencies) * 1000
    print(
        f"{label + ': ' if label else ''}{len(latencies)} requests from {clients} clients in {wall:.1f} s: "
        f"{len(latencies) / wall:.0f} requests/s, {len(errors)} errors"
    )
    print(
        f"latency ms: p50 {np.percentile(milliseconds, 50):.1f}  p90 {np.percentile(milliseconds, 90):.1f}  "
        f"p99 {np.percentile(milliseconds, 99):.1f}  max {milliseconds.max():.1f}"
    )


if __name__ == "__main__":
    main()
