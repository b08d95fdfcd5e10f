"""Reading at scale: the Ray engine against the local one on the same files, and a two-node cluster.

Writes DIGITS digit PNGs (MNIST test digits, white on black as in MNIST, scaled to 56 px) and NUMBERS
number PNGs (2-6 test digits set in a row by number_strings.compose, dark on light paper) into a folder, then
in one invocation:
1. `predict` and `read` over them with the local engine and with `--engine ray` (Ray on this machine,
   all its cores): rows identical (digit and confidences within 1e-6, the same text), files/s of each and
   their ratio, peak memory (the driver's peak RSS; Ray's workers: the largest RSS seen while it runs);
2. the Ray job again, one of its workers killed with SIGKILL mid-job: the same rows, each once;
3. with --cluster: `ray start --head --num-cpus 1` and a second `ray start --address ... --num-cpus 1` on
   this machine (two raylets: two nodes), the predict job run there with --address and two actors;
   the rows per node and the same rows again.

    OMP_NUM_THREADS=1 nice python bench/scale.py [--digits 20000] [--numbers 5000] [--cluster]

Test digits only measure here; nothing is chosen on them.
"""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitrec import idx, number_strings

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-6


def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    folder = ROOT / "data" / "mnist"
    images = idx.decode(idx.read_bytes(folder / "t10k-images-idx3-ubyte.gz"), "t10k-images")
    labels = idx.decode(idx.read_bytes(folder / "t10k-labels-idx1-ubyte.gz"), "t10k-labels")
    return images.astype(np.float32) / 255, labels


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(folder: Path, digits: int, numbers: int, seed: int = 0) -> tuple[Path, Path]:
    """`digits` digit PNGs under folder/digits and `numbers` number PNGs under folder/numbers (reused when there)."""
    images, labels = mnist_test()
    rng = np.random.default_rng(seed)
    digit_dir, number_dir = folder / "digits", folder / "numbers"
    if len(list(digit_dir.glob("*/*.png"))) != digits:
        for index in range(digits):
            image = Image.fromarray((images[index % len(images)] * 255).astype(np.uint8)).resize((56, 56))
            path = digit_dir / f"{index // 1000:03d}" / f"{index:06d}-{labels[index % len(labels)]}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
    if len(list(number_dir.glob("*/*.png"))) != numbers:
        for index in range(numbers):
            chosen = rng.integers(0, len(images), int(rng.integers(2, 7)))
            row = number_strings.compose(
                [images[i] for i in chosen], number_strings.SPACINGS[index % len(number_strings.SPACINGS)], rng
            )
            text = "".join(str(int(labels[i])) for i in chosen)
            path = number_dir / f"{index // 1000:03d}" / f"{index:06d}-{text}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png((255 - row * 255).round().astype(np.uint8).repeat(2, 0).repeat(2, 1)))
    return digit_dir, number_dir


class TreeMemory:
    """The peak of the summed resident memory of process `root` and all its descendants (for Ray: the driver,
    Ray's own processes and its workers; not the object store's shared memory), sampled every 0.5 s."""

    def __init__(self, root: int):
        self.root, self.peak_kib, self.running = root, 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while self.running:
            parents, rss = {}, {}
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
                except OSError:
                    continue
                pid = int(status.parent.name)
                parents[pid] = int(fields.get("PPid", "0").strip())
                rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
            total = sum(kib for pid, kib in rss.items() if self.descends(pid, parents))
            self.peak_kib = max(self.peak_kib, total)
            time.sleep(0.5)

    def descends(self, pid: int, parents: dict[int, int]) -> bool:
        while pid > 1:
            if pid == self.root:
                return True
            pid = parents.get(pid, 0)
        return False

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return self.peak_kib / 1024


def run_cli(*args: str, env=None) -> tuple[float, str, float]:
    """Run `digitrec ARGS` in a fresh process: seconds taken, its stderr and its peak memory (MiB, with its
    descendants); fails on a crash."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "digitrec", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env or os.environ,
    )
    memory = TreeMemory(process.pid)
    _, stderr = process.communicate()
    seconds = time.perf_counter() - start
    peak = memory.stop()
    if process.returncode not in (0, 1):  # 1: some rows are errors, which is fine here
        raise SystemExit(f"digitrec {' '.join(args)} failed:\n{stderr[-3000:]}")
    return seconds, stderr, peak


def read_back(out: Path) -> dict[str, dict]:
    from digitrec.scale import read_rows

    rows = read_rows(out)
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), f"{out}: {len(rows) - len(by_path)} duplicated rows"
    return by_path


def numbers_of(row: dict) -> list[float]:
    """A row's numbers that must agree within TOLERANCE."""
    if "probabilities" in row:
        return [row["confidence"] or 0.0, *(row["probabilities"] or [])]
    return [row["confidence"] or 0.0, *(d["confidence"] for d in row["digits"] or [])]


def same_rows(local: dict[str, dict], ray: dict[str, dict]) -> tuple[bool, float]:
    """Whether every file has the same row (digit/text exact, numbers within TOLERANCE); the largest difference."""
    if local.keys() != ray.keys():
        return False, float("inf")
    largest, same = 0.0, True
    for path, row in local.items():
        other = ray[path]
        exact = ("digit", "text", "unsure", "error")
        if any(row.get(key) != other.get(key) for key in exact):
            same = False
        a, b = numbers_of(row), numbers_of(other)
        if len(a) != len(b):
            same = False
            continue
        difference = max((abs(x - y) for x, y in zip(a, b)), default=0.0)
        largest = max(largest, difference)
        same &= difference <= TOLERANCE
    return same, largest


def compare_engines(task: str, folder: Path, work: Path) -> dict:
    files = sum(1 for _ in folder.rglob("*.png"))
    local_out, ray_out = work / f"{task}-local.jsonl", work / f"{task}-ray.parquet"
    local_seconds, _, local_mib = run_cli(task, str(folder), "--out", str(local_out), "--overwrite")
    ray_seconds, ray_log, ray_mib = run_cli(task, str(folder), "--engine", "ray", "--out", str(ray_out), "--overwrite")
    same, largest = same_rows(read_back(local_out), read_back(ray_out))
    summary = next((line for line in ray_log.splitlines() if "rows written" in line), "")
    return {
        "task": task,
        "files": files,
        "local_files_per_s": round(files / local_seconds, 1),
        "ray_files_per_s": round(files / ray_seconds, 1),
        "ratio_end_to_end": round(local_seconds / ray_seconds, 3),
        "rows_identical": same,
        "largest_difference": largest,
        "peak_memory_mib": {"local": round(local_mib), "ray": round(ray_mib)},
        "ray_summary": summary,
        "seconds": {"local": round(local_seconds, 1), "ray": round(ray_seconds, 1)},
    }


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def start_time(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def killed_worker(folder: Path, work: Path) -> dict:
    """The Ray predict job with one of its workers (a process of this job's Ray) killed with SIGKILL mid-job:
    Ray restarts it and runs its batch again; the output must still hold one row per file, the same rows."""
    out = work / "killed-worker.jsonl"
    out.unlink(missing_ok=True)
    job = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "predict", str(folder), "--engine", "ray", "--out", str(out), "--overwrite"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    while job.poll() is None and killed is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 2000:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                pid = int(cmdline.parent.name)
                try:
                    if b"MapWorker" in cmdline.read_bytes() and descends_from(pid, job.pid):
                        os.kill(pid, 9)
                        killed = pid
                        break
                except OSError:
                    continue
        time.sleep(0.1)
    _, log = job.communicate()
    rows_before_kill = None if killed is None else "at >= 2000 rows"
    same, largest = same_rows(read_back(work / "predict-local.jsonl"), read_back(out))
    summary = next((line for line in log.splitlines() if "rows written" in line), log[-500:])
    return {
        "killed_worker_pid": killed,
        "when": rows_before_kill,
        "summary": summary,
        "rows_identical": same,
        "largest_difference": largest,
    }


def two_node_cluster(folder: Path, work: Path) -> dict:
    """A head (1 CPU) and a second node (1 CPU) on this machine, each `ray start --block` (so that they are
    stopped by their own process ids); the predict job there with --address and two actors."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = "6390"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token")  # the nodes share ~/.ray/auth_token
    here = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--block"]
    nodes = [
        subprocess.Popen(
            [ray_bin, "start", "--head", "--port", port, "--include-dashboard=false", "--disable-usage-stats", *here],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    out = work / "cluster.jsonl"
    try:
        time.sleep(10)
        nodes.append(
            subprocess.Popen(
                [ray_bin, "start", "--address", f"127.0.0.1:{port}", *here],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        for _ in range(60):
            status = subprocess.run(
                [ray_bin, "status", "--address", f"127.0.0.1:{port}"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            ).stdout
            if status.count(" node_") >= 2:
                break
            time.sleep(2)
        seconds, log, _ = run_cli(
            "predict",
            str(folder),
            "--engine",
            "ray",
            "--address",
            f"127.0.0.1:{port}",
            "--actors",
            "2",
            "--out",
            str(out),
            "--overwrite",
            env=env,
        )
        summary = next((line for line in log.splitlines() if "rows written" in line), log[-500:])
        same, largest = same_rows(read_back(work / "predict-local.jsonl"), read_back(out))
        return {"summary": summary, "seconds": round(seconds, 1), "rows_identical": same, "largest_difference": largest}
    finally:
        started = {
            pid: start_time(pid)
            for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if any(descends_from(pid, node.pid) for node in nodes)
        }
        for node in reversed(nodes):
            node.send_signal(2)  # SIGINT: `ray start --block` stops its node's processes
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()
        for pid, started_at in started.items():  # what a node left behind (its agents), by process id
            if started_at is not None and start_time(pid) == started_at:  # the same process, not a reused id
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=20_000)
    parser.add_argument("--numbers", type=int, default=5_000)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "digitrec-scale-bench")
    parser.add_argument("--cluster", action="store_true", help="Also the two-node cluster on this machine.")
    parser.add_argument("--skip", default="", help="Comma-separated steps to leave out: engines, killed.")
    args = parser.parse_args()
    start = time.perf_counter()
    digit_dir, number_dir = write_images(args.folder, args.digits, args.numbers)
    print(f"images ready in {args.folder} ({time.perf_counter() - start:.0f} s)", flush=True)
    work = args.folder / "out"
    if "engines" not in args.skip:
        for result in (compare_engines("predict", digit_dir, work), compare_engines("read", number_dir, work)):
            print(json.dumps(result), flush=True)
    if "killed" not in args.skip:
        print(json.dumps({"worker_killed": killed_worker(digit_dir, work)}), flush=True)
    if args.cluster:
        print(json.dumps({"two_node_cluster": two_node_cluster(digit_dir, work)}), flush=True)


if __name__ == "__main__":
    main()
