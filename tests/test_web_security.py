"""The page's API on a laptop that also browses the web, and over run folders copied in from anywhere: other
pages cannot start training (Origin, content type) or reach the server through a rebound name (Host); a run
folder cannot serve a file from outside it, freeze the server (a FIFO, a huge log) or break the list for the
other runs; a finished run's detail costs a server that offers no training nothing. Real uvicorn servers on
127.0.0.1, run folders copied from a real softmax run and then damaged."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from digitrec.files import BUNDLED_DIR
from digitrec.recognizer import Recognizer
from digitrec.web import create_app
from digitrec.web.http import PAGE_POLICY

from helpers import LiveServer, free_port

NESTED = b'{"model": ' * 1100 + b"1" + b"}" * 1100  # deeper than Python's JSON parser goes


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def server(runs_dir):
    live = LiveServer(create_app(Recognizer.load(), runs_dir=runs_dir))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as session:
        yield session


@pytest.fixture(scope="module")
def closed_server(tmp_path_factory):
    """A server others can reach, training off: what any client of a public server can do."""
    runs_dir = tmp_path_factory.mktemp("public-runs")
    live = LiveServer(create_app(Recognizer.load(), runs_dir=runs_dir, host="0.0.0.0"))
    live.runs_dir = runs_dir
    yield live
    live.stop()


def copy_run(softmax_run, runs_dir: Path, name: str) -> Path:
    target = runs_dir / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(softmax_run.run_dir, target)
    return target


def listed(client, name: str) -> dict:
    response = client.get("/api/runs")
    assert response.status_code == 200, response.text
    return next(run for run in response.json() if run["name"] == name)


# ---- other pages: CSRF and DNS rebinding


@pytest.mark.parametrize(
    "headers, body, status, fragment",
    [
        (
            {"Content-Type": "text/plain"},
            b'{"model": "softmax", "steps": 60}',
            415,
            "unsupported media type text/plain",
        ),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"model=softmax", 415, "unsupported media type"),
        (
            {"Content-Type": "application/json", "Origin": "http://localhost:8199"},
            b'{"model": "softmax", "steps": 60}',
            403,
            "a request from the page 'http://localhost:8199' is refused",
        ),
        (
            {"Content-Type": "text/plain", "Origin": "null"},
            b'{"model": "softmax", "steps": 60}',
            403,
            "'null' is refused",
        ),
        (
            {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
            b'{"model": "softmax", "steps": 60}',
            403,
            "another site's page",
        ),
    ],
)
def test_another_page_cannot_start_training(client, runs_dir, headers, body, status, fragment):
    response = client.post("/api/runs", content=body, headers=headers)
    assert response.status_code == status and fragment in response.json()["detail"]
    assert client.get("/api/training").json()["active"] is None
    assert not [path for path in runs_dir.iterdir() if path.name.startswith("softmax-")]


@pytest.mark.parametrize(
    "method, path",
    [("PUT", "/api/model"), ("POST", "/api/runs/x/stop"), ("POST", "/api/runs/x/resume"), ("POST", "/api/predict")],
)
def test_every_state_changing_route_refuses_a_foreign_origin(client, method, path):
    response = client.request(
        method,
        path,
        content=b'{"bundled": "cnn"}',
        headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
    )
    assert response.status_code == 403 and "only this server's own page" in response.json()["detail"]


def test_the_servers_own_page_may_change_the_model(client, server):
    before = client.get("/api/model").json()
    response = client.put(
        "/api/model", json={"bundled": "cnn"}, headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    )
    assert response.status_code == 200 and response.json()["selected"] == {"bundled": "cnn"}
    assert client.put("/api/model", json={"bundled": "default"}).status_code == 200  # no Origin: not a browser
    assert client.get("/api/model").json() == before


@pytest.mark.parametrize(
    "host, status",
    [
        ("attacker.example", 403),
        ("attacker.example:8000", 403),
        ("localhost.attacker.example", 403),
        ("localhost", 200),
        ("LOCALHOST:1234", 200),
        ("127.0.0.1:9", 200),
        ("[::1]:8000", 200),
        ("192.168.1.20", 200),
    ],
)
def test_only_ip_addresses_and_localhost_are_answered_as_the_host(client, host, status):
    for method, path in (("GET", "/api/health"), ("PUT", "/api/model")):
        body = {"bundled": "default"} if method == "PUT" else None
        response = client.request(method, path, json=body, headers={"Host": host})
        assert response.status_code == status, (method, path, response.text)
    if status == 403:
        assert (
            "does not answer to the name" in response.json()["detail"] and "--allowed-host" in response.json()["detail"]
        )


def test_allowed_hosts_and_the_bound_name_are_answered(tmp_path):
    live = LiveServer(create_app(Recognizer.load(), host="box.lan", allowed_hosts=("mybox.local",)))
    try:
        with httpx.Client(base_url=live.url, timeout=30) as session:
            assert session.get("/api/health", headers={"Host": "mybox.local:8000"}).status_code == 200
            assert session.get("/api/health", headers={"Host": "box.lan:8000"}).status_code == 200
            assert session.get("/api/health", headers={"Host": "otherbox.local"}).status_code == 403
    finally:
        live.stop()


@pytest.mark.slow
def test_serve_takes_allowed_host_flags(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "digitrec",
            "serve",
            "--port",
            str(port),
            "--runs",
            str(tmp_path),
            "--allowed-host",
            "mybox.local",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/health", headers={"Host": "mybox.local"}, timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert answer.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", headers={"Host": "evil.example"}).status_code == 403
    finally:
        server.terminate()
        server.wait(20)


def test_the_page_forbids_inline_script_and_has_none():
    from digitrec.web.predict import STATIC_DIR

    assert "script-src 'self'" in PAGE_POLICY and "unsafe-inline" not in PAGE_POLICY.split("style-src")[0]
    page = (STATIC_DIR / "index.html").read_text()
    scripts = page.split("<script")[1:]
    assert scripts and all(script.lstrip().startswith("src=") and "></script>" in script for script in scripts)
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page, re.IGNORECASE)  # no onclick=... handlers
    for script in STATIC_DIR.glob("*.js"):
        assert "innerHTML" not in script.read_text(), script.name


def test_the_page_is_sent_with_its_policy(client):
    response = client.get("/")
    assert response.headers["content-security-policy"] == PAGE_POLICY


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/api/runs"),
        ("PUT", "/api/model"),
        ("POST", "/api/predict"),
        ("POST", "/api/read"),
        ("POST", "/api/explain"),
    ],
)
def test_json_nested_too_deep_is_422_on_every_json_route_also_where_training_is_off(
    client, closed_server, method, path
):
    with httpx.Client(base_url=closed_server.url, timeout=30) as closed:
        for session in (client, closed):
            response = session.request(method, path, content=NESTED, headers={"Content-Type": "application/json"})
            assert response.status_code == 422, (path, response.text)
            assert response.json()["detail"] == "the body is not valid JSON (or is nested too deep)"


# ---- run folders that are not what they seem


def test_a_link_in_a_run_is_never_served(client, closed_server, runs_dir, softmax_run):
    for folder in (runs_dir, closed_server.runs_dir):
        run_dir = copy_run(softmax_run, folder, "linked-report")
        (run_dir / "report.html").symlink_to("/etc/passwd")
        (run_dir / "report.json").symlink_to("/etc/passwd")
    with httpx.Client(base_url=closed_server.url, timeout=30) as closed:
        for session in (client, closed):
            response = session.get("/api/runs/linked-report/report")
            assert response.status_code == 409 and "root:" not in response.text
            assert "a link, not a file" in response.json()["detail"]


def test_a_linked_run_folder_is_listed_damaged_and_not_read(client, runs_dir, softmax_run, tmp_path):
    outside = copy_run(softmax_run, tmp_path, "outside")
    (runs_dir / "linked-folder").symlink_to(outside)
    run = listed(client, "linked-folder")
    assert run["status"] == "damaged" and run["model"] is None and "a link to a folder" in run["detail"]
    assert client.get("/api/runs/linked-folder/report").status_code == 409
    assert client.put("/api/model", json={"run": "linked-folder"}).status_code == 409


DAMAGE = {  # file -> content that damages a run, and what its `detail` then says
    "metrics-word": ("metrics.json", lambda m: {**m, "test_accuracy": "high"}, 'test_accuracy is "high", not a number'),
    "config-model-number": ("config.json", lambda c: {**c, "model": 5}, "model is 5, not a string"),
    "config-steps-word": ("config.json", lambda c: {**c, "steps": "many"}, 'steps is "many", not a whole number'),
    "config-not-json": ("config.json", "{broken", "cannot read a run record"),
    "log-word": ("log.jsonl", '{"step": 50, "loss": "low"}\n', 'loss is "low", not a number'),
    "log-step-word": ("log.jsonl", '{"step": "fifty", "loss": 0.3}\n', 'step is "fifty", not a whole number'),
    "log-no-step": ("log.jsonl", '{"loss": 0.3}\n', "no 'step'"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_run_is_listed_with_why_and_the_others_stay_usable(client, runs_dir, softmax_run, case):
    copy_run(softmax_run, runs_dir, "intact")
    run_dir = copy_run(softmax_run, runs_dir, f"damaged-{case}")
    name, change, reason = DAMAGE[case]
    if callable(change):
        change = json.dumps(change(json.loads((run_dir / name).read_text())))
    (run_dir / name).write_text(change)
    run = listed(client, f"damaged-{case}")
    assert run["status"] == "damaged" and not run["resumable"] and reason in run["detail"], run
    assert listed(client, "intact")["status"] == "finished"
    detail = client.get(f"/api/runs/damaged-{case}")
    assert detail.status_code == 200 and detail.json()["summary"] is None and detail.json()["report"] is None
    assert client.get(f"/api/runs/damaged-{case}/report").status_code == 409
    events = client.get(f"/api/runs/damaged-{case}/events")
    assert events.status_code == 200 and '"status": "damaged"' in events.text.split("event: end")[1]
    assert client.put("/api/model", json={"run": f"damaged-{case}"}).status_code == 409


def test_a_dangling_link_beside_a_run_leaves_it_usable(client, runs_dir, softmax_run):
    run_dir = copy_run(softmax_run, runs_dir, "dangling")
    (run_dir / "notes.txt").symlink_to(run_dir / "nowhere")
    assert listed(client, "dangling")["status"] == "finished"


def test_a_linked_weights_file_makes_the_run_damaged(client, runs_dir, softmax_run):
    run_dir = copy_run(softmax_run, runs_dir, "linked-weights")
    (run_dir / "weights.safetensors").unlink()
    (run_dir / "weights.safetensors").symlink_to(softmax_run.run_dir / "weights.safetensors")
    run = listed(client, "linked-weights")
    assert run["status"] == "damaged" and "weights.safetensors: a link" in run["detail"]


@pytest.mark.parametrize(
    "entry",
    [
        {"file": "checkpoint-0000050.pt", "sha256": "0"},
        {"file": "checkpoint-0000050.pt", "step": "fifty", "sha256": "0"},
    ],
)
def test_checkpoint_lists_without_a_whole_step_do_not_break_the_list_or_resume(client, runs_dir, softmax_run, entry):
    run_dir = copy_run(softmax_run, runs_dir, "odd-checkpoints")
    (run_dir / "metrics.json").unlink()
    (run_dir / "checkpoint-0000050.pt").write_bytes(b"x")
    (run_dir / "checkpoints.json").write_text(json.dumps({"checkpoints": [entry]}))
    assert listed(client, "odd-checkpoints")["status"] == "failed"
    response = client.post("/api/runs/odd-checkpoints/resume")
    assert response.status_code == 409 and "only a stopped run" in response.json()["detail"]


@pytest.mark.parametrize("name", ["log.jsonl", "config.json", "metrics.json", "checkpoints.json", "report.json"])
def test_a_fifo_in_a_run_neither_blocks_the_server_nor_the_list(client, runs_dir, softmax_run, name):
    run_dir = copy_run(softmax_run, runs_dir, f"fifo-{name.split('.')[0]}")
    (run_dir / name).unlink(missing_ok=True)
    os.mkfifo(run_dir / name)
    started = time.monotonic()
    for path in (
        "/api/runs",
        f"/api/runs/{run_dir.name}",
        f"/api/runs/{run_dir.name}/events",
        f"/api/runs/{run_dir.name}/report",
    ):
        response = client.get(path, timeout=20)
        assert response.status_code in (200, 409), (path, response.text)
    assert time.monotonic() - started < 15
    assert client.get("/api/health", timeout=2).json() == {"status": "ok"}
    if name != "report.json" and name != "checkpoints.json":
        run = listed(client, run_dir.name)
        assert run["status"] == "damaged" and "not a regular file" in run["detail"]


@pytest.mark.slow
def test_a_huge_log_is_read_off_the_event_loop(client, runs_dir, softmax_run):
    run_dir = copy_run(softmax_run, runs_dir, "huge-log")
    record = {"step": 1, "loss": 0.25, "train_accuracy": 0.9, "seconds": 0.5}
    with (run_dir / "log.jsonl").open("w") as log:
        for step in range(1, 200_001):  # 200,000 steps logged every step: about 14 MB
            log.write(json.dumps({**record, "step": step}) + "\n")
    slowest, done = [], threading.Event()

    def watch():
        with httpx.Client(base_url=str(client.base_url), timeout=10) as watcher:
            while not done.is_set():
                started = time.monotonic()
                watcher.get("/api/health")
                slowest.append(time.monotonic() - started)
                time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(3):
            assert listed(client, "huge-log")["step"] == 1000  # metrics.json's steps: the run's own record
            client.get("/api/runs/huge-log/events")
    finally:
        done.set()
        watcher.join()
    assert len(slowest) > 5 and max(slowest) < 1.0, max(slowest)  # loaded machine: 3.3 s before, on the event loop


def test_nan_in_a_log_reaches_the_event_stream_as_valid_json(client, runs_dir, softmax_run):
    run_dir = copy_run(softmax_run, runs_dir, "nan-log")
    (run_dir / "log.jsonl").write_text(
        '{"step": 50, "loss": NaN, "train_accuracy": 0.5, "seconds": 1.0}\n'
        '{"step": 100, "loss": Infinity, "train_accuracy": 0.6, "seconds": 2.0}\n'
    )

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    datas = [
        json.loads(line[6:], parse_constant=refuse)
        for line in client.get("/api/runs/nan-log/events").text.splitlines()
        if line.startswith("data: ")
    ]
    assert [data["loss"] for data in datas[:2]] == [None, None] and datas[-1]["status"] == "finished"


# ---- reports and detail views


def test_a_number_reader_run_is_offered_no_report(client, runs_dir):
    shutil.copytree(BUNDLED_DIR / "reader", runs_dir / "reader-run")
    run = listed(client, "reader-run")
    assert run["status"] == "finished" and run["model"] == "reader"
    detail = client.get("/api/runs/reader-run").json()
    assert detail["report"] is None and detail["summary"] is None and "reads whole numbers" in detail["summary_note"]
    report = client.get("/api/runs/reader-run/report")
    assert report.status_code == 409 and "reads whole numbers" in report.json()["detail"]


def test_unreadable_weights_and_a_bad_report_give_a_reason_not_a_500(client, runs_dir, softmax_run):
    run_dir = copy_run(softmax_run, runs_dir, "bad-weights")
    (run_dir / "weights.safetensors").write_bytes(b"not safetensors")
    detail = client.get("/api/runs/bad-weights")
    assert detail.status_code == 200 and detail.json()["summary"] is None
    assert "not a readable safetensors file" in detail.json()["summary_note"]
    assert client.get("/api/runs/bad-weights/report").status_code == 409
    chosen = client.put("/api/model", json={"run": "bad-weights"})
    assert chosen.status_code == 422 and "not a readable safetensors file" in chosen.json()["detail"]

    run_dir = copy_run(softmax_run, runs_dir, "bad-report")
    (run_dir / "report.json").write_text(
        json.dumps({"test_accuracy": 0.9, "errors": 1, "images": 2, "confusion_matrix": [[1]], "mistakes": []})
    )
    detail = client.get("/api/runs/bad-report")
    assert detail.status_code == 200 and "confusion_matrix is not 10 rows of 10 counts" in detail.json()["summary_note"]


@pytest.mark.slow
def test_a_finished_runs_detail_is_made_once_in_a_child_and_its_report_is_sandboxed(client, runs_dir, softmax_run):
    run_dir = copy_run(softmax_run, runs_dir, "reported")
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    (run_dir / "log.jsonl").write_text(
        "".join(json.dumps({key: value for key, value in record.items() if key != "loss"}) + "\n" for record in records)
    )  # a log without losses
    detail = client.get("/api/runs/reported").json()
    assert detail["summary"]["test_accuracy"] == pytest.approx(softmax_run.metrics["test_accuracy"], abs=1e-6)
    assert len(detail["summary"]["mistakes"]) == 12 and (run_dir / "report.json").is_file()
    report = client.get(detail["report"])
    assert report.status_code == 200 and "sandbox" in report.headers["content-security-policy"]
    assert "script-src" not in report.headers["content-security-policy"]  # default-src 'none': no script


def test_a_server_without_training_serves_what_the_run_holds_and_evaluates_nothing(closed_server, softmax_run):
    run_dir = copy_run(softmax_run, closed_server.runs_dir, "untouched")
    before = sorted(path.name for path in run_dir.iterdir())
    with httpx.Client(base_url=closed_server.url, timeout=30) as closed:
        for _ in range(3):
            detail = closed.get("/api/runs/untouched").json()
            assert detail["summary"] is None and detail["report"] is None
            assert "this server does not evaluate runs" in detail["summary_note"]
        assert closed.get("/api/runs/untouched/report").status_code == 409
    assert sorted(path.name for path in run_dir.iterdir()) == before  # no report files written


# ---- the runs folder itself


def test_an_unwritable_runs_folder_turns_training_off_with_why(tmp_path):
    (tmp_path / "a-file").write_text("")
    live = LiveServer(create_app(Recognizer.load(), runs_dir=tmp_path / "a-file" / "runs"))
    try:
        with httpx.Client(base_url=live.url, timeout=30) as session:
            training = session.get("/api/training").json()
            assert not training["enabled"] and "cannot be made" in training["reason"]
            refused = session.post("/api/runs", json={"model": "softmax", "steps": 50})
            assert refused.status_code == 403 and refused.json()["detail"] == training["reason"]
            assert session.get("/api/runs").json() == []
    finally:
        live.stop()
