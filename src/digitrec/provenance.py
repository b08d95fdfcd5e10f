"""How a run was made, recorded beside its results: versions (digitrec, torch, onnxruntime, Python), the
git commit, the command line, the platform, and the CPU's model and the flags that decide its precision
(bf16 needs AVX-512 BF16 or AMX: train.choose_precision asks `cpu`). Reads only; writes nothing.
"""

import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from digitrec import __version__

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
GIT_TIMEOUT_SECONDS = 2


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu() -> tuple[str | None, list[str]]:
    """The CPU's model name and which of `CPU_FLAGS` it has (from /proc/cpuinfo where there is one)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or None, []
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return fields.get("model name"), [flag for flag in CPU_FLAGS if flag in flags]


def git_commit() -> str | None:
    """The commit of the checkout digitrec runs from, or None (an installed package, no git, a slow git)."""
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / ".git").exists():
        return None
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def command_line() -> str:
    """This process's command as a person would type it: `digitrec train ...`, `python -m digitrec ...`."""
    program = sys.argv[0]
    if Path(program).name == "__main__.py":
        program = f"python -m {Path(program).parent.name}"
    elif os.path.isabs(program):  # an installed script found on PATH
        program = Path(program).name
    return " ".join([program, shlex.join(sys.argv[1:])]).strip()


def provenance(**conditions) -> dict:
    """How a run was made: versions, git commit, command line, CPU, and the `conditions` the caller knows
    (device, torch threads, precision, processes)."""
    cpu_model, cpu_flags = cpu()
    return {
        "digitrec": __version__,
        "torch": package_version("torch"),
        "onnxruntime": package_version("onnxruntime"),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "command": command_line(),
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpu_flags": cpu_flags,
        **conditions,
    }
