"""The run folder: what it holds, what it says about itself, and that nothing in it is lost or deleted by mistake."""

import errno
import json
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import digitrec
from digitrec import provenance, rundir, train
from digitrec.errors import ModelError, OutputError

from helpers import assert_one_line_error, fake_state, run


def checkpoint_steps(run_dir: Path) -> list[int]:
    return [entry["step"] for entry in rundir.checkpoint_entries(run_dir)]


def fail_fsync_of(monkeypatch, *names: str, error: int = errno.ENOSPC) -> None:
    """Writing a file with one of these names fails as a full disk fails: when its data is flushed."""
    real_fsync = os.fsync

    def fsync(fd):
        written = Path(os.readlink(f"/proc/self/fd/{fd}")).name  # files.write_atomic writes ".NAME.random" first
        if any(written.startswith(f".{name}.") for name in names):
            raise OSError(error, os.strerror(error))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_checkpoint_deletion_never_touches_files_the_list_names_outside_its_own_pattern(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "sub").mkdir(parents=True)
    bystanders = [
        tmp_path / "precious.txt",
        run_dir / "sub" / "checkpoint-0000001.pt",
        run_dir / "notes.pt",
        tmp_path / "checkpoint-0000002.pt",
    ]
    for path in bystanders:
        path.write_text("keep me")
    hostile = [
        "../precious.txt",
        str(tmp_path / "precious.txt"),
        "sub/checkpoint-0000001.pt",
        "notes.pt",
        "../checkpoint-0000002.pt",
        "checkpoint-0000003.pt/../../precious.txt",
    ]
    rundir.write_entries(run_dir, [{"file": name, "step": i, "sha256": "0"} for i, name in enumerate(hostile)])
    for step in (10, 20, 30):  # rotation drops the oldest entries
        rundir.save_checkpoint(run_dir, fake_state(step))
    assert checkpoint_steps(run_dir) == [20, 30]
    assert all(path.read_text() == "keep me" for path in bystanders)
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "checkpoint-0000020.pt",
        "checkpoint-0000030.pt",
        rundir.CHECKPOINTS_FILE,
        "notes.pt",
        "sub",
    ]


def test_a_list_naming_files_elsewhere_is_no_checkpoint_to_resume_from(tmp_path):
    (tmp_path / "elsewhere.pt").write_bytes(b"x")
    rundir.write_entries(tmp_path / "run", [{"file": "../elsewhere.pt", "step": 5, "sha256": "0"}])
    with pytest.raises(ModelError, match="no training checkpoint to resume from"):
        rundir.load_checkpoint(tmp_path / "run")


def test_damaged_newest_checkpoint_falls_back_keeps_the_intact_one_and_drops_the_damaged_one(tmp_path):
    for step in (10, 20, 30):
        rundir.save_checkpoint(tmp_path, fake_state(step))
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*.pt")) == [
        "checkpoint-0000020.pt",
        "checkpoint-0000030.pt",
    ]
    newest = tmp_path / "checkpoint-0000030.pt"
    damaged = bytearray(newest.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    newest.write_bytes(bytes(damaged))
    warnings = []
    assert rundir.load_checkpoint(tmp_path, warn=warnings.append)["step"] == 20
    assert len(warnings) == 1 and "checkpoint-0000030.pt: the checkpoint is damaged" in warnings[0]
    assert checkpoint_steps(tmp_path) == [20]
    rundir.save_checkpoint(tmp_path, fake_state(25))  # the resumed run's next checkpoint
    assert checkpoint_steps(tmp_path) == [20, 25]
    assert rundir.load_checkpoint(tmp_path)["step"] == 25

    for name in ("checkpoint-0000020.pt", "checkpoint-0000025.pt"):
        (tmp_path / name).write_bytes(b"PK\x03\x04 half a zip")  # partial: cut off mid-write
    with pytest.raises(ModelError, match="every checkpoint is damaged or missing"):
        rundir.load_checkpoint(tmp_path, warn=warnings.append)
    assert (tmp_path / "checkpoint-0000020.pt").is_file()  # the intact one is still there to fall back to


def test_resuming_a_finished_run_says_it_is_finished(softmax_run):
    with pytest.raises(ModelError, match="this run is finished"):
        rundir.load_checkpoint(softmax_run.run_dir)


def test_describe_and_list_runs_give_each_runs_model_progress_accuracy_and_status(softmax_run, tmp_path):
    finished = rundir.describe(softmax_run.run_dir)
    assert finished["status"] == rundir.FINISHED
    assert (finished["model"], finished["recipe"], finished["steps"], finished["total_steps"]) == (
        "softmax",
        "default",
        1000,
        1000,
    )
    assert finished["test_accuracy"] == softmax_run.metrics["test_accuracy"]
    assert finished["validation_accuracy"] == softmax_run.metrics["validation_accuracy"]

    stopped = tmp_path / "stopped"
    with rundir.open_log(
        stopped,
        {"model": "fast", "recipe": "quick", "steps": 400},
        [{"step": 50, "loss": 0.5, "validation_accuracy": 0.97}],
    ):
        pass
    rundir.save_checkpoint(stopped, fake_state(60))
    (tmp_path / "empty").mkdir()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "linked").symlink_to(softmax_run.run_dir)  # a link out of the folder is listed, never read
    shutil.copytree(softmax_run.run_dir, tmp_path / "finished")

    runs = rundir.list_runs(tmp_path)
    assert [(run["name"], run["status"]) for run in runs] == [
        ("finished", "finished"),
        ("linked", "damaged"),
        ("stopped", "resumable"),
    ]
    assert runs[1]["problem"] == f"{tmp_path / 'linked'}: a link to a folder (runs are read only inside {tmp_path})"
    assert runs[1]["model"] is None and runs[0]["test_accuracy"] == softmax_run.metrics["test_accuracy"]
    assert (runs[2]["model"], runs[2]["steps"], runs[2]["total_steps"]) == ("fast", 60, 400)
    assert runs[2]["validation_accuracy"] == 0.97 and runs[2]["test_accuracy"] is None
    assert rundir.status(tmp_path / "empty") == rundir.EMPTY
    (tmp_path / "starting").mkdir()  # the web server opens the child's output file before `digitrec train --out`
    (tmp_path / "starting" / rundir.OUTPUT_FILE).write_text("")
    assert rundir.status(tmp_path / "starting") == rundir.EMPTY
    assert rundir.status(tmp_path / "photos") == rundir.NOT_A_RUN
    assert rundir.status(tmp_path / "nowhere") == rundir.MISSING


def test_a_failed_save_leaves_the_previous_run_as_it_was_and_nothing_beside_it(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    rundir.save_run(run_dir, {"weights.safetensors": b"old weights", "metrics.json": '{"old": 1}\n'})
    (run_dir / "tensorboard").mkdir()
    before = {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}
    fail_fsync_of(monkeypatch, "metrics.json")
    with pytest.raises(OutputError, match=r"run: cannot save the finished run \(No space left on device\)"):
        rundir.save_run(run_dir, {"weights.safetensors": b"new weights", "metrics.json": '{"new": 1}\n'})
    assert {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()} == before
    assert (run_dir / "tensorboard").is_dir()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no temporary folder left behind

    monkeypatch.undo()
    rundir.save_run(run_dir, {"weights.safetensors": b"new weights", "metrics.json": '{"new": 1}\n'})
    assert (run_dir / "weights.safetensors").read_bytes() == b"new weights" and (run_dir / "tensorboard").is_dir()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]


def test_provenance_records_versions_commit_command_and_cpu():
    record = provenance.provenance(device="cpu", torch_threads=2)
    assert record["torch"] == metadata.version("torch") and record["onnxruntime"] == metadata.version("onnxruntime")
    assert record["device"] == "cpu" and record["torch_threads"] == 2
    checkout = Path(provenance.__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True)
    assert record["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if cpuinfo:
        assert record["cpu"] and record["cpu"] in cpuinfo
        flags = next(line for line in cpuinfo.splitlines() if line.startswith("flags")).split()
        assert record["cpu_flags"] == [flag for flag in provenance.CPU_FLAGS if flag in flags]


def test_every_run_records_how_it_was_made(softmax_run, mnist):
    recorded = json.loads((softmax_run.run_dir / "metrics.json").read_text())["provenance"]
    assert recorded["torch"] == metadata.version("torch") and recorded["digitrec"] == digitrec.__version__
    assert recorded["device"] == "cpu" and recorded["precision"] == "fp32" and recorded["processes"] == 1
    assert recorded["cuda_graph"] is False  # the CPU never captures a training step
    assert recorded == {
        **provenance.provenance(),
        **{key: recorded[key] for key in ("device", "torch_threads", "precision", "processes", "cuda_graph")},
    }
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        config = train.resolve_config("softmax", steps=10, log_every=10, eval_every=10)
        result = train.train(config, mnist, torch.device("cpu"), show_progress=False, print_line=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert result.metrics["provenance"]["torch_threads"] == 1


# ---- through the command line


def read_only(monkeypatch, folder: Path) -> None:
    """Make creating anything inside `folder` fail as on a read-only file system (tests may run as root,
    whom chmod does not stop)."""
    real_mkdir, real_open = os.mkdir, os.open

    def inside(path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(folder)

    def mkdir(path, *args, **kwargs):
        if inside(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and inside(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


SOFTMAX_100 = ["--model", "softmax", "--steps", 100, "--quiet"]


def assert_ends_in_one_error(result, *fragments):
    """Training printed its log, then failed with one `error:` line (exit 1, no traceback)."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[-1]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_out_onto_a_finished_run_is_refused_and_overwrite_replaces_it(softmax_run, tmp_path):
    run_dir = tmp_path / "run"
    assert run("train", *SOFTMAX_100, "--seed", 1, "--out", run_dir).exit_code == 0
    before = folder_bytes(run_dir)
    assert_one_line_error(run("train", *SOFTMAX_100, "--out", run_dir), f"{run_dir} is a finished run", "--overwrite")
    assert folder_bytes(run_dir) == before

    result = run("train", "--model", "softmax", "--steps", 200, "--quiet", "--out", run_dir, "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 200
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no run.new, no temporary folder
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "config.json",
        "curves.png",
        "log.jsonl",
        "metrics.json",
        "weights.safetensors",
    ]


def test_out_onto_a_stopped_run_or_other_files_is_refused(tmp_path):
    stopped = tmp_path / "stopped"
    with rundir.open_log(stopped, {"model": "softmax"}, []):
        pass
    rundir.save_checkpoint(stopped, fake_state(40))
    before = folder_bytes(stopped)
    assert_one_line_error(
        run("train", *SOFTMAX_100, "--out", stopped), "is a stopped run", f"--resume {stopped}", "--overwrite"
    )
    assert folder_bytes(stopped) == before
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    assert_one_line_error(run("train", *SOFTMAX_100, "--out", tmp_path / "photos"), "not a digitrec run", "--overwrite")
    assert folder_bytes(tmp_path / "photos") == {"cat.jpg": b"\xff\xd8"}


def test_a_failed_final_save_keeps_the_trained_state_and_says_how_to_recover_it(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    fail_fsync_of(monkeypatch, "weights.safetensors")
    result = run("train", *SOFTMAX_100, "--out", run_dir)
    assert_ends_in_one_error(
        result,
        "cannot save the finished run (No space left on device)",
        "its checkpoint of step 100 is kept",
        f"digitrec train --resume {run_dir}",
    )
    assert rundir.status(run_dir) == rundir.RESUMABLE and not (run_dir / "weights.safetensors").exists()
    trained = rundir.load_checkpoint(run_dir)["model"]

    monkeypatch.undo()
    resumed = run("train", "--resume", run_dir, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming at step 100 of 100" in resumed.output
    assert rundir.status(run_dir) == rundir.FINISHED and not list(run_dir.glob("checkpoint*"))
    saved = load_file(run_dir / "weights.safetensors")
    assert all(torch.equal(saved[name], tensor) for name, tensor in trained.items())  # not one step lost


def test_overwrite_whose_save_fails_leaves_the_previous_run_whole(softmax_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    assert run("train", *SOFTMAX_100, "--out", run_dir).exit_code == 0
    before = folder_bytes(run_dir)
    fail_fsync_of(monkeypatch, "metrics.json")
    result = run("train", *SOFTMAX_100, "--seed", 3, "--out", run_dir, "--overwrite")
    assert_ends_in_one_error(result, f"--resume {run_dir}.new", f"{run_dir} still holds the run it was to replace")
    assert folder_bytes(run_dir) == before
    assert rundir.status(tmp_path / "run.new") == rundir.RESUMABLE


def test_out_in_a_read_only_folder_is_one_line_and_creates_nothing(tmp_path, monkeypatch):
    read_only(monkeypatch, tmp_path / "locked")
    assert_ends_in_one_error(
        run("train", *SOFTMAX_100, "--out", tmp_path / "locked" / "run"),
        "cannot create the run folder (Read-only file system)",
    )
    assert not (tmp_path / "locked").exists()


def test_report_and_export_into_a_read_only_folder_are_one_line(softmax_run, tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    read_only(monkeypatch, tmp_path / "locked")
    assert_one_line_error(
        run("evaluate", softmax_run.run_dir, "--report", "--out", tmp_path / "locked"),
        "cannot write (Read-only file system)",
    )
    assert_one_line_error(
        run("export", softmax_run.run_dir, "--out", tmp_path / "locked" / "model.onnx"),
        "model.onnx: cannot write (Read-only file system)",
    )
    assert list((tmp_path / "locked").iterdir()) == []


def test_a_run_refused_at_its_first_step_leaves_no_folder(tmp_path):
    run("train", "--model", "softmax", "--batch-size", 60000, "--quiet", "--out", tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_evaluate_report_without_a_path_writes_into_the_working_directory_not_the_package(tmp_path, monkeypatch):
    from digitrec import files

    package_files = sorted(files.BUNDLED_DIR.rglob("*"))
    monkeypatch.chdir(tmp_path)
    result = run("evaluate", "--report")
    assert result.exit_code == 0, result.output
    assert f"report written to {Path('report-default') / 'report.html'}" in result.output
    assert (tmp_path / "report-default" / "report.html").is_file()
    assert sorted(files.BUNDLED_DIR.rglob("*")) == package_files


def test_evaluate_on_an_onnx_file_says_what_to_do(tmp_path):
    from digitrec import files

    assert_one_line_error(run("evaluate", files.BUNDLED_ONNX), "not an ONNX export", "digitrec predict --model")


def test_a_log_read_in_pieces_gives_each_record_once_and_starts_over_when_a_resume_rewrites_it(tmp_path):
    from digitrec.files import write_atomic

    rows = [{"step": step, "loss": 1 / step} for step in (50, 100, 150)]
    write_atomic(tmp_path / "log.jsonl", json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:10])  # a line half written
    first, position, replaced = rundir.read_log_since(tmp_path)
    assert first == rows[:1] and not replaced
    write_atomic(tmp_path / "log.jsonl", "".join(json.dumps(row) + "\n" for row in rows[:1]))
    with (tmp_path / "log.jsonl").open("a") as log:  # as train.py appends
        log.write("".join(json.dumps(row) + "\n" for row in rows[1:]))
    again, position, replaced = rundir.read_log_since(tmp_path, position)
    assert again == rows and replaced  # another file: all of it, and the page is told to start over
    with (tmp_path / "log.jsonl").open("a") as log:
        log.write(json.dumps({"step": 200, "loss": 0.1}) + "\n")
    assert rundir.read_log_since(tmp_path, position)[0] == [{"step": 200, "loss": 0.1}]
