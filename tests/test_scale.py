"""Reading many files (scale.py): the Ray engine's rows are the local engine's, a killed job resumes to one
row per file, and the outputs are refused or resumed as they should be. Ray runs on this machine (2 CPUs),
started once for the module."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from digitrec import number_strings, scale
from digitrec.cli import main

pytestmark = pytest.mark.distributed
SRC = str(Path(__file__).resolve().parents[1] / "src")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def ray_session():
    started = scale.start_ray(None, cpus=2)
    yield
    if started:
        scale.stop_ray()


@pytest.fixture(scope="module")
def images(mnist, tmp_path_factory) -> dict:
    """60 digit PNGs in two folders, 8 number PNGs, an unreadable file, and a list naming a missing file."""
    folder = tmp_path_factory.mktemp("scale")
    digits = (mnist.test.images[:60, 0].numpy() * 255).astype(np.uint8)
    for index, digit in enumerate(digits):
        path = folder / "digits" / f"part{index % 2}" / f"{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digit).resize((56, 56)).save(path)
    (folder / "digits" / "part0" / "broken.png").write_bytes(b"not an image")
    listed = folder / "list.txt"
    listed.write_text(f"# made by the test\n{folder / 'digits' / 'part1' / '001.png'}\n{folder / 'missing.png'}\n")
    rng = np.random.default_rng(0)
    for index in range(8):
        row = number_strings.compose(
            [mnist.test.images[i, 0].numpy() for i in rng.integers(0, 1000, 4)], "separate", rng
        )
        path = folder / "numbers" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((255 - row * 255).round().astype(np.uint8)).resize((row.shape[1] * 2, row.shape[0] * 2)).save(
            path
        )
    return {
        "folder": folder,
        "digits": folder / "digits",
        "glob": str(folder / "digits" / "part0" / "*.png"),
        "list": listed,
        "numbers": folder / "numbers",
    }


def rows_by_path(out: Path) -> dict[str, dict]:
    rows = scale.read_rows(out)
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "a file has more than one row"
    return by_path


def assert_same_rows(ours: dict[str, dict], theirs: dict[str, dict], task: str):
    assert ours.keys() == theirs.keys()
    for path, row in ours.items():
        other = theirs[path]
        assert list(row) == list(other)
        if task == "predict":
            assert (row["digit"], row["error"]) == (other["digit"], other["error"])
            assert np.allclose(row["probabilities"] or [], other["probabilities"] or [], atol=1e-6, rtol=0)
        else:
            assert (row["text"], row["error"]) == (other["text"], other["error"])
            mine = [d["confidence"] for d in row["digits"] or []]
            assert np.allclose(mine, [d["confidence"] for d in other["digits"] or []], atol=1e-6, rtol=0)


def test_ray_rows_are_the_local_engines_with_error_rows(ray_session, images, tmp_path):
    sources = [images["digits"] / "part1", images["glob"], images["list"]]
    local = run("predict", *sources, "--json")
    assert local.exit_code == 1 and "2 of 63 images failed" in local.stderr  # broken.png and missing.png
    printed = {row["path"]: row for row in map(json.loads, local.stdout.splitlines())}
    out = tmp_path / "rows.parquet"  # (JSON lines from Ray: the killed job's test)
    result = run("predict", *sources, "--engine", "ray", "--out", out, "--batch-size", 16)
    assert result.exit_code == 1, result.output
    assert "62 rows written" in result.stderr and "2 errors" in result.stderr  # the listed 001.png is in part1
    written = rows_by_path(out)
    assert_same_rows(written, printed, "predict")
    errors = {Path(path).name: row["error"] for path, row in written.items() if row["error"]}
    assert errors.keys() == {"broken.png", "missing.png"}
    assert "not an image" in errors["broken.png"] and all(
        row["digit"] is None for row in written.values() if row["error"]
    )


def test_ray_reads_numbers_as_the_local_engine_does(ray_session, images, tmp_path):
    local, ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert run("read", images["numbers"], "--out", local).exit_code == 0
    result = run("read", images["numbers"], "--engine", "ray", "--out", ray)
    assert result.exit_code == 0, result.output
    assert_same_rows(rows_by_path(ray), rows_by_path(local), "read")


def test_a_killed_ray_job_resumes_to_exactly_one_row_per_file(ray_session, images, tmp_path):
    out = tmp_path / "rows.jsonl"
    paths = sorted(images["digits"].rglob("[0-9]*.png"))  # the 60 digits
    listed = tmp_path / "many.txt"
    copies = tmp_path / "copies"
    copies.mkdir()
    for index in range(600):  # enough one-file batches that the kill lands mid-job
        (copies / f"{index:04d}.png").write_bytes(paths[index % len(paths)].read_bytes())
    listed.write_text("\n".join(str(path) for path in sorted(copies.iterdir())) + "\n")
    import ray

    # the job joins the module's Ray (--address) rather than start its own: the same code path, and seconds sooner
    command = [
        sys.executable,
        "-m",
        "digitrec",
        "predict",
        str(listed),
        "--engine",
        "ray",
        "--batch-size",
        "1",
        "--address",
        ray.get_runtime_context().gcs_address,
        "--out",
        str(out),
    ]
    job = subprocess.Popen(
        command,
        env=dict(os.environ, PYTHONPATH=SRC),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 20):
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    written_before = out.read_bytes().count(b"\n")
    assert 20 <= written_before < 600, "the job was not killed mid-way"
    result = run("predict", listed, "--engine", "ray", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"{600 - written_before:,} rows written" in result.stderr
    assert f"resuming {out}: {written_before:,} of 600 files already there" in result.stderr
    rows = rows_by_path(out)
    assert sorted(rows) == listed.read_text().split()


def test_the_python_api_takes_a_ray_dataset_of_paths(ray_session, images):
    import ray

    paths = sorted(str(path) for path in (images["digits"] / "part1").glob("*.png"))
    rows = scale.rows_dataset(ray.data.from_items([{"path": path, "other": 1} for path in paths]), "predict").take_all()
    assert sorted(row["path"] for row in rows) == paths
    assert all(0 <= row["digit"] <= 9 and row["error"] is None for row in rows)


def test_a_job_resumes_its_own_output_and_refuses_another_jobs(images, tmp_path):
    out = tmp_path / "rows.jsonl"
    assert run("predict", images["digits"] / "part1", "--out", out).exit_code == 0
    first = out.read_text()
    out.write_text(first + '{"path": "cut short by a ki')  # a kill in the middle of a line
    again = run("predict", images["digits"], "--out", out)  # part0 as well now: appended
    assert "resuming" in again.stderr and "31 rows written" in again.stderr  # part0's 30 digits and broken.png
    assert out.read_text().startswith(first) and len(rows_by_path(out)) == 61
    refused = run("read", images["numbers"], "--out", out)
    assert refused.exit_code == 1 and "holds the rows of another job (digitrec predict" in refused.stderr
    assert run("predict", images["digits"] / "part1", "--out", tmp_path).exit_code == 1  # no .jsonl/.parquet
    (tmp_path / "rows.parquet").write_text("mine")
    wrong_kind = run("predict", images["digits"] / "part1", "--out", tmp_path / "rows.parquet")
    assert wrong_kind.exit_code == 1 and "is a file, not the parquet output" in wrong_kind.stderr
    over = run("predict", images["digits"] / "part1", "--out", out, "--overwrite")
    assert over.exit_code == 0 and out.read_text() == first


def test_progress_shows_files_rate_errors_and_time_left_on_a_terminal_only():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = scale.Progress(1000, stream)
        progress.update(100, 2)
        time.sleep(0.6)
        progress.update(100, 1)
        progress.clear()
    line = terminal.getvalue().split("\r")[1]
    assert line.startswith("200/1,000 files  ") and " files/s  3 errors  " in line and line.endswith(" left\033[K")
    assert pipe.getvalue() == ""


def test_without_ray_the_ray_engine_says_how_to_install_it_in_one_line(images):
    script = (
        "import sys\nsys.modules['ray'] = None\nfrom digitrec.cli import main\n"
        f"main(['predict', {str(images['digits'])!r}, '--engine', 'ray', '--out', 'unused.jsonl'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=images["folder"],
        env=dict(os.environ, PYTHONPATH=SRC),
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: this needs ray, which is not installed: pip install 'digitrec[scale]'"
    ]


def test_a_cluster_that_does_not_answer_is_one_clear_error_at_once(images, tmp_path):
    start = time.monotonic()
    result = run(
        "predict", images["digits"], "--engine", "ray", "--address", "127.0.0.1:9", "--out", tmp_path / "rows.jsonl"
    )
    assert result.exit_code == 1 and time.monotonic() - start < 30
    assert result.stderr.startswith("error: 127.0.0.1:9: no Ray cluster answers there")
    assert not (tmp_path / "rows.jsonl").exists()
