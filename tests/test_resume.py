"""Resumable training: checkpoints, Ctrl-C, SIGKILL, and damaged checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

from digitrec import rundir, train
from digitrec.errors import TrainingStopped

from helpers import assert_one_line_error, fake_state, run

# one thread in every process, so the runs being compared do their arithmetic in the same order
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
SMALL_RUN = ["--steps", "200", "--width", "8", "--quiet"]


def digitrec(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "digitrec", *map(str, args)],
        env=ONE_THREAD,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def wait_for(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def newest_checkpoint_step(run_dir) -> int:
    entries = rundir.checkpoint_entries(run_dir)
    return entries[-1]["step"] if entries else 0


def log_steps(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def assert_same_weights(first_dir, second_dir):
    first, second = load_file(first_dir / "weights.safetensors"), load_file(second_dir / "weights.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    code, _, stderr = finish(digitrec("train", *SMALL_RUN, "--out", run_dir))
    assert code == 0, stderr
    return run_dir


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_to_the_uninterrupted_runs_exact_weights(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = digitrec("train", *SMALL_RUN, "--checkpoint-every", "40", "--out", run_dir)
    wait_for(lambda: newest_checkpoint_step(run_dir) >= 80 or process.poll() is not None)
    process.send_signal(signal.SIGKILL)
    finish(process)
    assert not (run_dir / "weights.safetensors").exists()
    killed_at = newest_checkpoint_step(run_dir)
    assert 80 <= killed_at < 200

    code, stdout, stderr = finish(digitrec("train", "--resume", run_dir, "--quiet"))
    assert code == 0, stderr
    assert f"resuming at step {killed_at} of 200" in stdout
    assert_same_weights(run_dir, uninterrupted)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((uninterrupted / "metrics.json").read_text())
    assert metrics["steps"] == 200 and metrics["test_accuracy"] == expected["test_accuracy"]
    assert log_steps(run_dir) == log_steps(uninterrupted) == [50, 100, 150, 200]  # no row lost or repeated
    assert not list(run_dir.glob("checkpoint*"))  # a finished run keeps only its weights


@pytest.mark.slow
def test_ctrl_c_stops_after_the_current_step_saves_and_the_run_resumes(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = digitrec("train", *SMALL_RUN, "--out", run_dir)
    wait_for(lambda: (run_dir / "log.jsonl").is_file() and (run_dir / "log.jsonl").read_text())  # step 50 logged
    process.send_signal(signal.SIGINT)
    code, stdout, stderr = finish(process)
    assert code == 130
    assert "stopping after this step" in stdout
    assert f"resume with: digitrec train --resume {run_dir}" in stderr and "Traceback" not in stderr
    stopped_at = newest_checkpoint_step(run_dir)
    assert 50 <= stopped_at < 200

    code, _, stderr = finish(digitrec("train", "--resume", run_dir, "--quiet"))
    assert code == 0, stderr
    assert_same_weights(run_dir, uninterrupted)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resumed_training_matches_uninterrupted_training_with_augmentation(mnist, tmp_path, precision):
    config = train.resolve_config(
        "fast", "full", width=4, steps=30, log_every=10, eval_every=30, checkpoint_every=10, precision=precision
    )
    quiet = {"print_line": lambda _: None, "show_progress": False}
    whole = train.train(config, mnist, torch.device("cpu"), **quiet)

    first = train.Training(config, mnist, torch.device("cpu"))
    first.advance(20)
    rundir.save_checkpoint(tmp_path, {**first.state_dict(), "log": [], "train_seconds": 0.0})
    resumed = train.train(
        config, mnist, torch.device("cpu"), tmp_path, resume_from=rundir.load_checkpoint(tmp_path), **quiet
    )
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_a_stop_during_a_logged_step_keeps_that_steps_row_through_the_resume(mnist, tmp_path, monkeypatch):
    config = train.resolve_config("fast", "full", width=4, steps=30, log_every=10, eval_every=30, precision="fp32")
    quiet = {"print_line": lambda _: None, "show_progress": False}
    advance = train.Training.advance

    def stop_at_step_20(self, steps):  # the stop request arrives while step 20, a logged one, runs
        result = advance(self, steps)
        self.stop_requested = self.stop_requested or self.step == 20
        return result

    monkeypatch.setattr(train.Training, "advance", stop_at_step_20)
    with pytest.raises(TrainingStopped, match="stopped at step 20 of 30"):
        train.train(config, mnist, torch.device("cpu"), tmp_path, **quiet)
    monkeypatch.setattr(train.Training, "advance", advance)
    assert [row["step"] for row in rundir.load_checkpoint(tmp_path)["log"]] == [10, 20]
    train.train(config, mnist, torch.device("cpu"), tmp_path, resume_from=rundir.load_checkpoint(tmp_path), **quiet)
    assert log_steps(tmp_path) == [10, 20, 30]


def test_a_run_with_ema_resumes_to_the_uninterrupted_runs_exact_average_and_weights(mnist, tmp_path):
    config = train.resolve_config(
        "fast", "full", width=4, steps=30, log_every=10, eval_every=30, ema=0.9, precision="fp32"
    )
    quiet = {"print_line": lambda _: None, "show_progress": False}
    whole = train.train(config, mnist, torch.device("cpu"), **quiet)

    first = train.Training(config, mnist, torch.device("cpu"))
    first.advance(17)  # mid-way through the average's faster start and between log rows
    rundir.save_checkpoint(tmp_path, {**first.state_dict(), "log": [], "train_seconds": 0.0})
    state = rundir.load_checkpoint(tmp_path)
    assert state["ema"].keys() == first.model.state_dict().keys()
    resumed = train.Training(config, mnist, torch.device("cpu"))
    resumed.load_state_dict(state)
    resumed.advance(30)
    for name, tensor in whole.model.state_dict().items():  # the saved model is the average
        assert torch.equal(tensor, resumed.ema_model.state_dict()[name]), name
    uninterrupted = train.Training(config, mnist, torch.device("cpu"))
    uninterrupted.advance(30)
    for name, tensor in uninterrupted.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_resume_errors_are_one_line(tmp_path):
    assert_one_line_error(run("train", "--resume", tmp_path), "no training checkpoint to resume from")
    rundir.save_checkpoint(tmp_path, {**fake_state(5), "config": {"model": "fast", "colour": "red"}})
    assert_one_line_error(run("train", "--resume", tmp_path), "training config is not one this digitrec understands")
    result = run("train", "--resume", tmp_path, "--steps", "10")
    assert result.exit_code == 2 and "drop --steps" in result.output


def test_resume_from_a_foreign_torch_checkpoint_is_one_line(tmp_path):
    config = asdict(train.resolve_config("softmax"))
    rundir.save_checkpoint(tmp_path, {"step": 5, "config": config, "model": {"linear.weight": torch.zeros(10, 784)}})
    assert_one_line_error(
        run("train", "--resume", tmp_path),
        "not a digitrec training checkpoint",
        "it has no world_size, optimizer, scheduler, random_states, log, train_seconds",
    )


def test_resume_on_a_finished_run_says_it_is_finished(softmax_run):
    assert_one_line_error(run("train", "--resume", softmax_run.run_dir), "this run is finished", "nothing to resume")
