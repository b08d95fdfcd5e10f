"""Training from the page's API (web/training.py) against a real uvicorn server on 127.0.0.1, with real
`digitrec train` children on the real MNIST: bad parameters, one training at a time, stop and resume,
a finished run's summary, report and use as the pad's model, and a server killed mid-run."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from digitrec.recognizer import Recognizer
from digitrec.web import create_app

from helpers import LiveServer, children, free_port

# one thread per training child: on a loaded 2-core machine torch's second thread waits more than it works
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
LONG_STEPS = 200_000  # the most a run may take: long enough never to finish during a test


@pytest.fixture(scope="module")
def one_thread_children():
    """Training children on one thread; and this process's torch threads as they were after the tests
    (choosing a run as the server's model sets one thread per forward pass, process-wide)."""
    saved = {name: os.environ.get(name) for name in ONE_THREAD}
    threads = torch.get_num_threads()
    os.environ.update(ONE_THREAD)
    yield
    for name, value in saved.items():
        os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server(tmp_path_factory, one_thread_children):
    runs_dir = tmp_path_factory.mktemp("runs")
    live = LiveServer(create_app(Recognizer.load(), runs_dir=runs_dir))
    live.runs_dir = runs_dir
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as session:
        yield session


def wait_for(condition, seconds: float = 180, every: float = 0.1):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)
    return value


def run_info(client, name: str) -> dict:
    return next(run for run in client.get("/api/runs").json() if run["name"] == name)


def wait_for_status(client, name: str, *statuses: str, seconds: float = 180) -> dict:
    return wait_for(lambda: (run := run_info(client, name))["status"] in statuses and run, seconds)


def events(client, name: str, last_event_id: str | None = None) -> list[tuple[str, str | None, dict]]:
    """(event, id, data) of the whole stream, until the server ends it."""
    found, event, event_id = [], None, None
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with client.stream("GET", f"/api/runs/{name}/events", headers=headers) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                found.append((event, event_id, json.loads(line[6:])))
                event_id = None
    return found


def progress_events(client, name: str, seconds: float) -> list[dict]:
    """The `progress` events of a live run's stream during `seconds` (then the page goes away)."""
    found, event, ends = [], None, time.monotonic() + seconds
    with client.stream("GET", f"/api/runs/{name}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "progress":
                found.append(json.loads(line[6:]))
            if time.monotonic() > ends:
                break
    return found


def test_the_training_api_is_documented_with_its_bodies(client):
    documented = client.get("/openapi.json").json()
    paths = documented["paths"]
    for path in (
        "/api/training",
        "/api/runs",
        "/api/runs/{name}",
        "/api/runs/{name}/stop",
        "/api/runs/{name}/resume",
        "/api/runs/{name}/events",
        "/api/runs/{name}/report",
        "/api/model",
    ):
        assert path in paths, path
    reference = paths["/api/runs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    start_body = documented["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert set(start_body["properties"]) == {"model", "recipe", "steps", "batch_size", "lr", "seed"}
    assert "put" in paths["/api/model"] and "get" in paths["/api/model"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"model": "resnet"}, "unknown model 'resnet' (choose from softmax, cnn, fast, reader)"),
        ({"model": "reader"}, "model 'reader' reads whole numbers: train it with digitrec train --model reader"),
        ({}, "model: Field required"),
        ({"model": "softmax", "steps": 0}, "steps: Input should be greater than or equal to 1"),
        ({"model": "softmax", "steps": -5}, "steps: Input should be greater than or equal to 1"),
        ({"model": "softmax", "steps": 10**9}, "steps: Input should be less than or equal to 200000"),
        ({"model": "softmax", "steps": "many"}, "steps: Input should be a valid integer"),
        ({"model": "softmax", "steps": 2.5}, "steps: Input should be a valid integer"),
        ({"model": "softmax", "batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
        ({"model": "softmax", "batch_size": 10**6}, "batch_size: Input should be less than or equal to 8192"),
        ({"model": "softmax", "lr": 0}, "lr: Input should be greater than 0"),
        ({"model": "softmax", "lr": "fast"}, "lr: Input should be a valid number"),
        ({"model": "softmax", "seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"model": "softmax", "recipe": "full"}, "model 'softmax' has no recipe 'full' (choose from default)"),
        ({"model": "softmax", "recipe": ""}, "recipe: String should have at least 1 character"),
        ({"model": "softmax", "epochs": 3}, "epochs: Extra inputs are not permitted"),
        ([1, 2], "body: Input should be a valid dictionary"),
    ],
)
def test_bad_start_parameters_are_422_with_a_clear_detail_and_start_nothing(client, server, body, fragment):
    response = client.post("/api/runs", json=body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str) and fragment in response.json()["detail"]
    assert client.get("/api/training").json()["active"] is None
    assert not any(server.runs_dir.iterdir())


def test_a_body_that_is_not_json_is_422(client):
    response = client.post("/api/runs", content=b"{model: softmax", headers={"Content-Type": "application/json"})
    assert (
        response.status_code == 422
        and response.json()["detail"] == "the body is not valid JSON (or is nested too deep)"
    )


@pytest.mark.parametrize(
    "method, path, status, fragment",
    [
        ("GET", "/api/runs/nope", 404, "no run named 'nope'"),
        ("GET", "/api/runs/nope/events", 404, "no run named 'nope'"),
        ("GET", "/api/runs/nope/report", 404, "no run named 'nope'"),
        ("POST", "/api/runs/nope/stop", 404, "no run named 'nope'"),
        ("POST", "/api/runs/nope/resume", 404, "no run named 'nope'"),
        ("GET", "/api/runs/%2E%2E", 422, "'..' is not a run name"),
        ("POST", "/api/runs/%2E%2E/resume", 422, "'..' is not a run name"),
        ("GET", "/api/runs/.config", 422, "'.config' is not a run name"),
        ("GET", "/api/runs/a%20b", 422, "'a b' is not a run name"),
    ],
)
def test_unknown_and_unsafe_run_names_are_refused(client, method, path, status, fragment):
    response = client.request(method, path)
    assert response.status_code == status and fragment in response.json()["detail"]


@pytest.mark.slow
def test_one_training_at_a_time_a_second_start_is_409_and_stop_checkpoints(client, server):
    started = client.post("/api/runs", json={"model": "softmax", "steps": LONG_STEPS})
    assert started.status_code == 202
    name = started.json()["name"]
    assert started.json()["status"] == "running" and name.startswith("softmax-default-")
    wait_for(lambda: run_info(client, name)["step"] >= 50)  # training, and logging
    assert client.get("/api/training").json()["active"] == name
    progress = progress_events(client, name, seconds=3.5)
    assert len(progress) >= 3 and all(run["status"] == "running" and run["steps"] == LONG_STEPS for run in progress)
    assert progress[-1]["steps_per_second"] > 0 and progress[-1]["seconds_left"] > 0

    second = client.post("/api/runs", json={"model": "softmax", "steps": 100})
    assert second.status_code == 409
    assert (
        second.json()["detail"] == f"run {name} is training; one training at a time: stop it or wait for it to finish"
    )
    assert client.post(f"/api/runs/{name}/resume").status_code == 409
    choice = client.put("/api/model", json={"run": name})
    assert (
        choice.status_code == 409
        and choice.json()["detail"] == f"run {name} is running: only a finished run can be used"
    )
    assert client.get(f"/api/runs/{name}/report").status_code == 409

    stopping = client.post(f"/api/runs/{name}/stop")
    assert stopping.status_code == 202 and stopping.json()["status"] == "stopping"
    stopped = wait_for_status(client, name, "stopped", "failed")
    assert stopped["status"] == "stopped" and stopped["resumable"] and 50 <= stopped["step"] < LONG_STEPS
    assert (server.runs_dir / name / f"checkpoint-{stopped['step']:07d}.pt").is_file()
    assert (
        f"stopped at step {stopped['step']} of {LONG_STEPS}"
        in (server.runs_dir / name / "train-output.txt").read_text()
    )
    again = client.post(f"/api/runs/{name}/stop")
    assert again.status_code == 409 and again.json()["detail"] == f"run {name} is not training"


@pytest.mark.slow
def test_a_child_killed_before_its_first_checkpoint_shows_failed_and_why(client):
    name = client.post("/api/runs", json={"model": "softmax", "steps": LONG_STEPS}).json()["name"]
    wait_for(lambda: run_info(client, name)["step"] >= 50)  # its first checkpoint comes at step 20,000
    (child,) = [pid for pid in children(os.getpid()) if b"digitrec\0train" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    os.kill(child, signal.SIGKILL)
    run = wait_for_status(client, name, "failed", "stopped")
    assert run["status"] == "failed" and not run["resumable"] and run["step"] >= 50
    assert run["detail"] == "its process was killed (SIGKILL)"
    refused = client.post(f"/api/runs/{name}/resume")
    assert refused.status_code == 409
    assert refused.json()["detail"] == f"run {name} is failed: only a stopped run (one with a checkpoint) resumes"


@pytest.fixture(scope="module")
def finished(client):
    name = client.post("/api/runs", json={"model": "softmax", "steps": 200}).json()["name"]
    return wait_for_status(client, name, "finished", "failed", "stopped")


def test_a_finished_run_is_listed_with_its_accuracies(finished, server):
    metrics = json.loads((server.runs_dir / finished["name"] / "metrics.json").read_text())
    assert finished["status"] == "finished" and not finished["resumable"]
    assert (finished["model"], finished["recipe"], finished["steps"], finished["step"]) == (
        "softmax",
        "default",
        200,
        200,
    )
    assert finished["test_accuracy"] == metrics["test_accuracy"] > 0.85
    assert finished["validation_accuracy"] == metrics["validation_accuracy"]


def test_the_event_stream_sends_the_log_so_far_and_ends_with_the_status(client, finished, server):
    streamed = events(client, finished["name"])
    logged = [json.loads(line) for line in (server.runs_dir / finished["name"] / "log.jsonl").read_text().splitlines()]
    assert [data for event, _, data in streamed if event == "log"] == logged
    assert [record["step"] for record in logged] == [50, 100, 150, 200]  # every 50 steps
    assert sum("validation_accuracy" in record for record in logged) == 4  # a validation point every tenth (here: 50)
    event, _, last = streamed[-1]
    assert event == "end" and last["status"] == "finished" and last["step"] == 200
    # a page that reconnects with the last id it saw gets only what came after it
    last_id = [event_id for event, event_id, _ in streamed if event == "log"][-1]
    assert [event for event, _, _ in events(client, finished["name"], last_id)] == ["end"]


def test_a_finished_runs_summary_matches_its_metrics_and_its_report_is_served(client, finished, server):
    detail = client.get(f"/api/runs/{finished['name']}").json()
    summary = detail["summary"]
    assert summary["test_accuracy"] == pytest.approx(finished["test_accuracy"], abs=1e-6)
    confusion = summary["confusion_matrix"]
    assert sum(map(sum, confusion)) == 10_000 == summary["images"]
    assert sum(confusion[digit][digit] for digit in range(10)) == 10_000 - summary["errors"]
    assert len(summary["mistakes"]) == 12
    confidences = [mistake["confidence"] for mistake in summary["mistakes"]]
    assert confidences == sorted(confidences, reverse=True) and all(
        m["label"] != m["predicted"] for m in summary["mistakes"]
    )
    image = Image.open(io.BytesIO(base64.b64decode(summary["mistakes"][0]["image"].split(",", 1)[1])))
    assert image.size == (28, 28)
    report = client.get(detail["report"])
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert f"test accuracy <b>{100 * summary['test_accuracy']:.2f}%</b>" in report.text
    assert (server.runs_dir / finished["name"] / "report.json").is_file()  # computed once, kept in the run


def test_a_finished_run_becomes_the_model_that_predict_uses(client, server, finished, mnist):
    before = client.get("/api/model").json()
    choice = client.put("/api/model", json={"run": finished["name"]})
    assert choice.status_code == 200 and choice.json()["selected"] == {"run": finished["name"]}
    model = client.get("/api/model").json()
    assert (model["name"], model["runtime"], model["parameters"]) == ("softmax", "torch", 7850)
    assert model["test_accuracy"] == finished["test_accuracy"] != before["test_accuracy"]
    digit = (mnist.test.images[0, 0].numpy() * 255).astype("uint8")  # a 7
    png = io.BytesIO()
    Image.fromarray(255 - digit).resize((280, 280)).save(png, "PNG")
    answer = client.post("/api/predict", content=png.getvalue(), headers={"Content-Type": "image/png"}).json()
    expected = Recognizer.load(server.runs_dir / finished["name"]).predict(png.getvalue())
    assert answer["digit"] == expected.digit == 7
    assert answer["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert client.get("/api/training").json()["selected"] == {"run": finished["name"]}
    back = client.put("/api/model", json={"bundled": "default"})
    assert back.status_code == 200 and client.get("/api/model").json() == before


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({}, 422, 'give exactly one of {"run": NAME} or {"bundled": "default" | "cnn"}'),
        ({"run": "x", "bundled": "cnn"}, 422, "give exactly one of"),
        ({"bundled": "huge"}, 422, "bundled: Input should be 'default' or 'cnn'"),
        ({"run": "nope"}, 404, "no run named 'nope'"),
        ({"run": "../../etc"}, 422, "is not a run name"),
        ({"run": 3}, 422, "run: Input should be a valid string"),
    ],
)
def test_bad_model_choices_are_refused_and_the_model_is_unchanged(client, body, status, fragment):
    before = client.get("/api/model").json()
    response = client.put("/api/model", json=body)
    assert response.status_code == status and fragment in response.json()["detail"]
    assert client.get("/api/model").json() == before


@pytest.mark.parametrize(
    "settings, reason",
    [
        (
            {"host": "0.0.0.0"},
            "Training is off on a server others can reach (start it with --allow-training to offer it).",
        ),
        (
            {"host": "127.0.0.1", "workers": 2},
            "Training from the page needs a single server process (digitrec serve --workers 1).",
        ),
        ({"host": "0.0.0.0", "allow_training": True}, None),
        ({"host": "::1"}, None),
    ],
)
def test_training_is_offered_on_loopback_or_when_allowed(tmp_path, settings, reason):
    live = LiveServer(create_app(Recognizer.load(), runs_dir=tmp_path, **settings))
    try:
        with httpx.Client(base_url=live.url, timeout=30) as session:
            training = session.get("/api/training").json()
            assert (training["enabled"], training["reason"]) == (reason is None, reason)
            if reason:
                refused = session.post("/api/runs", json={"model": "softmax", "steps": 50})
                assert refused.status_code == 403 and refused.json()["detail"] == reason
                assert session.put("/api/model", json={"bundled": "cnn"}).status_code == 403
                assert not any(tmp_path.iterdir())
    finally:
        live.stop()


def test_without_torch_the_panel_is_disabled_with_the_install_command(server, finished):
    runs_dir = server.runs_dir  # it holds a finished run, which a torch-free server cannot read
    script = (  # an install without the `train` extra: importing torch fails
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from fastapi.testclient import TestClient\n"
        "from digitrec.recognizer import Recognizer\n"
        "from digitrec.web import create_app\n"
        f"client = TestClient(create_app(Recognizer.load(), runs_dir={str(runs_dir)!r}), base_url='http://127.0.0.1')\n"
        "print(json.dumps([client.get('/api/training').json(), client.get('/api/runs').json(),\n"
        "                  client.post('/api/runs', json={'model': 'softmax'}).json(),\n"
        "                  client.get('/api/runs/' + NAME).status_code, client.get('/').status_code]))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", f"import json\nNAME = {finished['name']!r}\n" + script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert output.returncode == 0, output.stderr
    training, listed, refused, detail_status, page_status = json.loads(output.stdout)
    reason = "Training needs torch, which this install lacks: pip install 'digitrec[train]'"
    assert training == {"enabled": False, "reason": reason, "recipes": {}, "active": None, "selected": None}
    assert listed == [] and refused == {"detail": reason} and detail_status == 404 and page_status == 200


def serve(runs_dir: Path) -> tuple[subprocess.Popen, httpx.Client]:
    """`digitrec serve --runs RUNS_DIR` on a free loopback port, once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--runs", str(runs_dir)],
        env={**os.environ, **ONE_THREAD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    session = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def answers():
        assert process.poll() is None, process.stderr.read()
        try:
            return session.get("/api/health").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answers, 60, 0.2)
    return process, session


@pytest.mark.slow
def test_a_run_outlives_no_server_it_stops_with_a_checkpoint_and_resumes_after_a_restart(tmp_path):
    steps = 3000
    server, client = serve(tmp_path)
    try:  # 1. the server exits normally (SIGTERM): it stops its child, which checkpoints
        name = client.post("/api/runs", json={"model": "softmax", "steps": steps}).json()["name"]
        wait_for(lambda: run_info(client, name)["step"] >= 50)
        child = children(server.pid)
        server.send_signal(signal.SIGTERM)
        server.wait(60)  # uvicorn shuts down gracefully, then ends itself with the signal it caught
        assert "Traceback" not in server.stderr.read()
        assert not [pid for pid in child if Path(f"/proc/{pid}").exists()], "the training child outlived the server"
    finally:
        server.kill()
        client.close()

    server, client = serve(tmp_path)
    try:  # 2. the restarted server shows it stopped and resumable; then the server is killed mid-resume
        run = run_info(client, name)
        assert run["status"] == "stopped" and run["resumable"] and 50 <= run["step"] < steps, run
        first_stop = run["step"]
        assert client.post(f"/api/runs/{name}/resume").json()["status"] == "running"
        wait_for(lambda: run_info(client, name)["step"] > first_stop)
        child = children(server.pid)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        wait_for(lambda: not [pid for pid in child if Path(f"/proc/{pid}").exists()], 60)  # it stopped with the server
    finally:
        server.kill()
        client.close()

    server, client = serve(tmp_path)
    try:  # 3. stopped again, further on; resumed, it finishes with all its steps
        run = run_info(client, name)
        assert run["status"] == "stopped" and run["resumable"] and first_stop < run["step"] < steps, run
        client.post(f"/api/runs/{name}/resume")
        run = wait_for_status(client, name, "finished", "stopped", "failed", seconds=300)
        assert run["status"] == "finished" and run["step"] == steps and run["test_accuracy"] > 0.9
        logged = [json.loads(line)["step"] for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        assert logged == list(range(50, steps + 1, 50))  # one log, no gaps or repeats across the two restarts
    finally:
        server.terminate()
        server.wait(60)
        client.close()


@pytest.mark.slow
def test_a_run_stopped_within_a_second_of_its_start_stays_listed_as_failed_saying_so(client, server):
    name = client.post("/api/runs", json={"model": "softmax", "steps": LONG_STEPS}).json()["name"]
    assert client.post(f"/api/runs/{name}/stop").status_code == 202
    run = wait_for_status(client, name, "failed", "stopped")
    assert run["status"] in ("failed", "stopped") and run["detail"]
    assert "Traceback" not in (server.runs_dir / name / "train-output.txt").read_text()
    assert run_info(client, name) == run  # still listed


@pytest.mark.slow
def test_a_failed_resume_says_why_and_stays_resumable(client, server, softmax_run):
    run_dir = server.runs_dir / "damaged-checkpoint"
    run_dir.mkdir()
    for name in ("config.json", "log.jsonl"):
        (run_dir / name).write_bytes((softmax_run.run_dir / name).read_bytes())
    (run_dir / "checkpoint-0000050.pt").write_bytes(b"not a checkpoint")
    (run_dir / "checkpoints.json").write_text(
        json.dumps({"checkpoints": [{"file": "checkpoint-0000050.pt", "step": 50, "sha256": "0" * 64}]})
    )
    assert run_info(client, "damaged-checkpoint")["status"] == "stopped"
    assert client.post("/api/runs/damaged-checkpoint/resume").status_code == 202
    wait_for(lambda: client.get("/api/training").json()["active"] is None)
    run = run_info(client, "damaged-checkpoint")
    assert run["status"] == "stopped" and run["resumable"]
    assert run["detail"].startswith("its last resume failed: error: ") and "damaged" in run["detail"]
