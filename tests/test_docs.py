"""Every command shown in README.md and docs/*.md is run or checked here, so none goes stale.

The convention (also in docs/training.md, "Contributing"):

- ```sh (or ```bash) blocks hold commands, one a line (or joined by &&); `#` starts a comment, a trailing `\\`
  continues. `digitrec ...` and `python -m digitrec ...` lines run for real through the CLI, in document
  order, in one temporary folder per page, which holds the pictures a page may name (DIGIT_PICTURES,
  NUMBER_PICTURES and a folder `scans/`: MNIST test digits drawn dark on white, as a scan would be) and a copy
  of the bundled models under `src/digitrec/bundled/`. Expensive commands run cheaply: `train` with `--steps
  20` appended (Click keeps the last value), `serve` on a free port until `/api/health` answers, then stopped.
  SLOW_COMMANDS (`export`) and commands with one of SLOW_OPTIONS (`--engine ray`) are only parsed by Click
  here and run by the `slow` test. `torchrun ... -m digitrec` lines are parsed by Click, not run. `python
  bench/NAME.py ...`: the script exists and every flag used is one its argparse declares. Set-up lines
  (`python3 -m venv DIR`, `pip install -e '.[extras]'` or `'digitrec[extras]'`, `scripts/test ...`, `ruff
  check|format`): the extras, paths and tools they name exist. Any other line fails the test: teach this module to check it, or put it in
  a ```text block.
- ```python blocks run, each page's in one namespace, in the same folder, in order with its commands.
- ```text blocks are never run: output, file trees, commands the suite cannot run. A block without a
  language fails the test (say which it is).
- Inline code is checked without running: `digitrec ...`, `python -m digitrec ...` and
  `python bench/NAME.py ...` name a command that exists and only its options (capitalised placeholders
  such as COMMAND are left alone); every `digitrec[extra]` is an extra of pyproject.toml; file names
  (`src/...`, `bench/x.py`, `digitrec/x.py`, `x.py` in the package) exist; `module.CONSTANT`
  (`recognizer.UNSURE_BELOW`) is in that digitrec module; a path under a folder the page's commands
  made (`runs/cnn/curves.png`) exists once they have run.
- Every relative link and its #anchor resolve (pages in WRITTEN_ELSEWHERE are skipped until they exist).
"""

import ast
import gzip
import importlib
import itertools
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from functools import cache
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from digitrec.cli import main

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PAGE_IDS = [str(page.relative_to(REPO)) for page in PAGES]
TRAIN_STEPS = "20"  # `digitrec train` in the docs runs with --steps 20 appended: the same command, seconds long
SLOW_COMMANDS = {"export"}  # run only by test_slow_commands_run (15-25 s each)
SLOW_OPTIONS = {("--engine", "ray")}  # so are commands with one of these (Ray takes seconds to start)
# Pages other branches of this wave write; until they land, links to them are skipped, not failed.
# Once they all exist, empty this set.
WRITTEN_ELSEWHERE = {
    "docs/teach.md",
    "docs/robustness.md",
    "docs/robust-numbers.md",
}
INLINE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
REPO_FOLDERS = {"src", "data", "docs", "tests", "bench", "scripts"}
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
DIGIT_PICTURES = {"seven.png": 0, "seven.jpg": 0, "a.png": 1, "b.png": 2}  # name -> index of an MNIST test digit
NUMBER_PICTURES = {"year.png": "2026", "year.jpg": "2026", "meter.jpg": "04719"}


def blocks(page: Path) -> list[tuple[str, str, int]]:
    """The page's fenced blocks: (language, body, line number of the opening fence)."""
    text = page.read_text()
    return [(match[1], match[2], text.count("\n", 0, match.start()) + 1) for match in FENCE.finditer(text)]


def prose(page: Path) -> str:
    """The page without its fenced blocks."""
    return FENCE.sub("", page.read_text())


def shell_lines(body: str) -> list[str]:
    """The commands of an sh block: comments dropped, continued lines joined."""
    lines, pending = [], ""
    for raw in body.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        line = line.split(" #")[0].strip() if not line.startswith("#") else ""
        lines.extend(command.strip() for command in line.split(" && ") if command.strip())
    return lines


def digitrec_arguments(words: list[str]) -> list[str] | None:
    """The arguments after `digitrec` / `python -m digitrec`, or None when the line is another command."""
    if words[:1] == ["digitrec"]:
        return words[1:]
    if words[:3] in (["python", "-m", "digitrec"], ["python3", "-m", "digitrec"]):
        return words[3:]
    return None


def options_of(command: click.Command) -> set[str]:
    return {option for param in command.params for option in (*param.opts, *param.secondary_opts)} | {"--help"}


def check_flags(arguments: list[str], where: str) -> None:
    """The subcommand exists and every --flag written is one of its options (no parsing of values)."""
    name, *rest = arguments
    if name in ("--help", "--version") or name.isupper():  # `digitrec --help`, `digitrec COMMAND --help`
        return
    assert name in main.commands, f"{where}: digitrec has no command {name!r}"
    command = main.commands[name]
    while isinstance(command, click.Group) and rest and rest[0] in command.commands:  # `digitrec teach add`
        name, command, rest = f"{name} {rest[0]}", command.commands[rest[0]], rest[1:]
    unknown = {flag.split("=")[0] for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(rest))}
    unknown -= options_of(command)
    assert not unknown, f"{where}: `digitrec {name}` has no option {sorted(unknown)}"


def parse(arguments: list[str], where: str) -> None:
    """Click parses the command as it would run it (types, ranges and choices checked), without running it."""
    check_flags(arguments, where)
    command = main.commands[arguments[0]]
    try:
        command.make_context(arguments[0], list(arguments[1:]), resilient_parsing=False)
    except click.exceptions.Exit:
        pass
    except click.ClickException as error:
        pytest.fail(f"{where}: {error.format_message()}")


@cache
def bench_options(script: str) -> set[str]:
    """The options a bench script's argparse declares, read from its source (running it would import torch)."""
    tree = ast.parse((REPO / script).read_text())
    return {
        argument.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
        for argument in node.args
        if isinstance(argument, ast.Constant) and str(argument.value).startswith("--")
    } | {"--help"}


def check_bench(script: str, rest: str, where: str) -> None:
    if Path(script).stem.isupper():  # bench/NAME.py
        return
    assert (REPO / script).is_file(), f"{where}: {script} does not exist"
    flags = {flag.split("=")[0] for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)}
    if flags:
        missing = flags - bench_options(script)
        assert not missing, f"{where}: {script} has no option {sorted(missing)}"


def requirements_of(extra: str) -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]


def extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def check_setup(words: list[str], where: str) -> None:
    """python3 -m venv, pip install -e '.[extras]' (or 'digitrec[extras]'), scripts/test: what they name exists."""
    if words[:3] in (["python3", "-m", "venv"], ["python", "-m", "venv"]):
        assert len(words) == 4, f"{where}: expected `python3 -m venv DIR`"
    elif words[0].endswith("pip") and words[1:2] == ["install"]:
        targets = [word for word in words[2:] if not word.startswith("-")]
        for target in targets:
            match = re.fullmatch(r"(?:\.|digitrec)(?:\[([a-z,]+)\])?", target)
            assert match, f"{where}: only this package's extras are installed in a fenced block, not {target!r}"
            assert set(filter(None, (match[1] or "").split(","))) <= extras(), f"{where}: unknown extra in {target}"
    elif Path(words[0]).name == "ruff" and words[1:2] in (["check"], ["format"]):
        assert any(re.match(r"ruff\b", need) for need in requirements_of("test")), (
            f"{where}: ruff is not in the test extra"
        )
    elif words[0] == "scripts/test":
        assert (REPO / "scripts/test").stat().st_mode & 0o111, f"{where}: scripts/test is not executable"
        for word in words[1:]:
            if not word.startswith("-") and "/" in word:
                assert (REPO / word.split("::")[0]).exists(), f"{where}: {word} does not exist"
    else:
        pytest.fail(
            f"{where}: tests/test_docs.py does not know how to check `{' '.join(words)}`; "
            "teach it, or put the command in a ```text block"
        )


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def mnist_test_digits() -> tuple[np.ndarray, np.ndarray]:
    folder = REPO / "data" / "mnist"
    images = np.frombuffer(gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())[16:], np.uint8)
    labels = np.frombuffer(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)
    return images.reshape(-1, 28, 28), labels


def as_scan(ink: np.ndarray, scale: int = 8) -> Image.Image:
    """White-on-black MNIST pixels as dark ink on white paper, enlarged as a person's picture would be."""
    picture = Image.fromarray(255 - ink)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.BICUBIC)


def write_pictures(folder: Path) -> None:
    """The pictures the docs may name: MNIST test digits, and 2026 written with four of them."""
    images, labels = mnist_test_digits()
    for name, index in DIGIT_PICTURES.items():
        as_scan(images[index]).save(folder / name)
    for name, text in NUMBER_PICTURES.items():
        first = [int(np.flatnonzero(labels == int(digit))[i]) for i, digit in enumerate(text)]
        row = np.concatenate([np.pad(images[index], ((4, 4), (2, 2))) for index in first], axis=1)
        as_scan(row, scale=4).convert("RGB").save(folder / name)
    (folder / "scans" / "more").mkdir(parents=True)
    for index in range(3, 6):
        as_scan(images[index]).save(folder / "scans" / ("more" if index == 5 else "") / f"digit-{index}.png")
    (folder / "todo.txt").write_text(
        "".join(f"{name}\n" for name in NUMBER_PICTURES)
    )  # a list of paths, as docs/scale.md makes


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    write_pictures(tmp_path)
    bundled = tmp_path / "src" / "digitrec" / "bundled"
    bundled.parent.mkdir(parents=True)
    shutil.copytree(REPO / "src" / "digitrec" / "bundled", bundled)
    (tmp_path / "data").symlink_to(REPO / "data", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_serve(arguments: list[str], where: str) -> None:
    """`digitrec serve ...` with a free port appended: it must answer /api/health, then it is stopped."""
    parse(arguments, where)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "digitrec", *arguments, "--host", "127.0.0.1", "--port", str(port)],
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"{where}: the server exited:\n{server.stdout.read()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                    assert response.status == 200
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{where}: no answer from /api/health within 60 s"
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)


def is_slow(arguments: list[str]) -> bool:
    pairs = set(itertools.pairwise(arguments))
    return arguments[0] in SLOW_COMMANDS or bool(pairs & SLOW_OPTIONS)


def run_digitrec(arguments: list[str], where: str) -> None:
    name = arguments[0]
    if name == "serve":
        return run_serve(arguments, where)
    if name == "train" and "--dry-run" not in arguments and "--resume" not in arguments:
        arguments = [*arguments, "--steps", TRAIN_STEPS]
    parse(arguments, where)
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0 and "Traceback" not in result.output, (
        f"{where}: `digitrec {' '.join(arguments)}` exited {result.exit_code}:\n{result.output[-3000:]}"
    )


def check_line(line: str, where: str, slow: bool) -> None:
    started = time.monotonic()
    try:
        check_one(line, where, slow)
    finally:
        print(f"{time.monotonic() - started:6.1f} s  {where}  {line}")


def check_one(line: str, where: str, slow: bool) -> None:
    words = shlex.split(line)
    arguments = digitrec_arguments(words)
    if arguments is not None:
        if not arguments or arguments[0] in ("--help", "--version"):
            assert slow or CliRunner().invoke(main, arguments or ["--help"]).exit_code == 0, where
        elif is_slow(arguments) == slow:
            run_digitrec(arguments, where)
        elif not slow:
            parse(arguments, where)
    elif words[0] == "torchrun":
        assert "-m" in words and words[words.index("-m") + 1] == "digitrec", f"{where}: torchrun runs -m digitrec"
        parse(words[words.index("-m") + 2 :], where)
    elif words[0] in ("python", "python3") and len(words) > 1 and words[1].startswith("bench/"):
        check_bench(words[1], " ".join(words[2:]), where)
    else:
        check_setup(words, where)


def run_page(page: Path, slow: bool) -> None:
    namespace: dict = {"__name__": "docs"}
    for language, body, line in blocks(page):
        where = f"{page.relative_to(REPO)}:{line}"
        if language in ("sh", "bash"):
            for command in shell_lines(body):
                check_line(command, where, slow)
        elif language == "python" and not slow:
            exec(compile(body, where, "exec"), namespace)  # noqa: S102 - the docs' own examples
        else:
            assert language in ("sh", "bash", "python", "text", "json", "html", "javascript"), (
                f"{where}: a ```{language} block: use sh (run), python (run) or text (never run)"
            )


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_page_commands_run(page, workspace):
    run_page(page, slow=False)
    for code in (match[2].strip() for match in INLINE.finditer(prose(page))):  # files the page says they made
        if (
            re.fullmatch(r"[\w.-]+/[\w./-]+\.\w+", code)
            and code.split("/")[0] not in REPO_FOLDERS
            and Path(code.split("/")[0]).is_dir()
        ):
            assert Path(code).exists(), f"{page.relative_to(REPO)}: the commands above did not make {code}"


def has_slow_commands(page: Path) -> bool:
    lines = [line for language, body, _ in blocks(page) if language in ("sh", "bash") for line in shell_lines(body)]
    return any(is_slow(arguments) for arguments in map(digitrec_arguments, map(shlex.split, lines)) if arguments)


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", [page for page in PAGES if has_slow_commands(page)], ids=lambda page: str(page.relative_to(REPO))
)
def test_slow_commands_run(page, workspace):
    run_page(page, slow=True)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_inline_commands_exist_with_their_flags(page):
    for code in (match[2].strip().replace("\n", " ") for match in INLINE.finditer(prose(page))):
        where = f"{page.relative_to(REPO)}: `{code}`"
        words = code.split()
        start = next((i for i, word in enumerate(words) if word == "digitrec"), None)
        if code.startswith(("digitrec ", "python -m digitrec ")):
            check_flags(words[(start or 0) + 1 :], where)
        for script, rest in re.findall(r"python3? (bench/\w+\.py)([^`]*)", code):
            check_bench(script, rest, where)
        for named in re.findall(r"digitrec\[([a-z,]+)\]", code):
            assert set(named.split(",")) <= extras(), f"{where}: no such extra"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", prose(page), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_relative_links_resolve(page):
    pending = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", prose(page)):
        if re.match(r"[a-z]+:", target):
            continue
        linked = (page.parent / target).resolve() if target else page
        if not linked.exists():
            name = linked.relative_to(REPO).as_posix()
            assert name in WRITTEN_ELSEWHERE, f"{page.relative_to(REPO)}: the link {target} leads nowhere"
            pending.append(name)
        elif anchor:
            assert anchor in anchors(linked), f"{page.relative_to(REPO)}: {target} has no heading #{anchor}"
    if pending:
        pytest.skip(f"not written yet: {sorted(set(pending))}")


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_inline_names_of_files_and_constants_exist(page):
    """`src/...`, `bench/x.py`, `digitrec/x.py` name files that exist; `module.CONSTANT` is in that module."""
    package = REPO / "src" / "digitrec"
    for code in (match[2].strip() for match in INLINE.finditer(prose(page))):
        where = f"{page.relative_to(REPO)}: `{code}`"
        if re.fullmatch(r"(?:src|tests|bench|scripts|data|digitrec)/[\w./-]*|\w+\.py", code):
            candidates = [REPO / code, REPO / "src" / code, package / code]
            assert any(path.exists() for path in candidates), f"{where}: no such file"
        constant = re.fullmatch(r"([a-z_]+(?:\.[a-z_]+)*)\.([A-Z][A-Z0-9_]*)", code)  # `preprocess.MAX_PIXELS`
        if constant:
            path = package / constant[1].replace(".", "/")
            assert path.with_suffix(".py").exists() or path.is_dir(), f"{where}: digitrec has no module {constant[1]}"
            module = importlib.import_module(f"digitrec.{constant[1]}")
            assert hasattr(module, constant[2]), f"{where}: digitrec.{constant[1]} has no {constant[2]}"


def test_train_override_wins_over_the_documented_steps():
    """The cheap override relies on Click taking the last value of a repeated option."""
    command = main.commands["train"]
    context = command.make_context("train", ["--steps", "20000", "--steps", TRAIN_STEPS])
    assert context.params["steps"] == int(TRAIN_STEPS)
