"""The wheel: a user who installs digitrec from it gets every file the package needs at run time."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "digitrec"


def package_files() -> set[str]:
    """Every file of the package in the checkout, as the wheel names them."""
    return {
        "digitrec/" + path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_carries_the_bundled_models_and_the_page(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("digitrec-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if not name.startswith("digitrec-")}

    assert package_files() - shipped == set()
    for model in ("default", "cnn"):
        for name in ("weights.safetensors", "config.json", "metrics.json", "log.jsonl"):
            assert f"digitrec/bundled/{model}/{name}" in shipped
    assert "digitrec/bundled/default/model.onnx" in shipped
    static = {name for name in shipped if name.startswith("digitrec/web/static/")}
    assert {"digitrec/web/static/index.html", "digitrec/web/static/app.js", "digitrec/web/static/style.css"} <= static
    assert any("favicon" in name for name in static)
