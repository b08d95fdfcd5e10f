"""Finding the images a person names: files as given, folders searched recursively, 'globs' (quoted, for
more files than a command line holds), a .txt file listing paths, "-" for stdin.

`digitrec predict`, `read` and `explain` and bench/predict_throughput.py take their inputs from here.
What cannot be read or searched comes back as the `ImageError` saying so, in its place, so one bad
input never stops the rest. Also names the files that previews of those inputs are saved as. Decoding
the images is preprocess.py's.
"""

import glob
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from digitrec import preprocess
from digitrec.errors import ImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
LIST_SUFFIX = ".txt"  # a path ending in this lists paths, one a line


def expand_inputs(paths: Iterable[str], stdin: BinaryIO | None = None) -> list[tuple[str, Path | bytes | ImageError]]:
    """(name, source) pairs: files as given, folders searched recursively for images, globs and lists of
    paths expanded (`expand_sources`), "-" for `stdin` (default: this process's standard input).

    What cannot be read or searched (stdin over the size limit, a broken link, a link back into a folder
    already searched, a folder that cannot be listed) comes as the `ImageError` saying so, in its place."""
    inputs: list[tuple[str, Path | bytes | ImageError]] = []
    for given in expand_sources(paths):
        if isinstance(given, tuple):  # a list of paths that cannot be read
            inputs.append(given)
            continue
        if given == "-":
            limit = preprocess.MAX_FILE_BYTES  # looked up now: a test lowers it
            content = (stdin or sys.stdin.buffer).read(limit + 1)
            too_big = len(content) > limit
            inputs.append(
                ("-", ImageError(f"-: refused: larger than {limit // preprocess.MB} MB") if too_big else content)
            )
            continue
        try:
            is_folder = Path(given).is_dir()
        except OSError as error:  # e.g. a folder on its way that this user may not enter
            inputs.append((given, ImageError(f"{given}: cannot read ({error.strerror})")))
            continue
        inputs.extend(images_in(Path(given)) if is_folder else [(given, Path(given))])
    return inputs


def expand_sources(sources: Iterable[str]) -> list[str | tuple[str, ImageError]]:
    """The paths that globs and lists of paths stand for: a glob ('scans/**/*.png') is its matches, sorted; a
    .txt file lists one path a line (blank lines and lines starting with # skipped); anything else is
    itself. A glob matching nothing stays as given (reported missing); a list that cannot be read is its
    name with the `ImageError` saying so."""
    paths: list[str | tuple[str, ImageError]] = []
    for source in sources:
        if source != "-" and glob.has_magic(source):
            paths.extend(sorted(glob.glob(source, recursive=True)) or [source])
        elif source.endswith(LIST_SUFFIX) and Path(source).is_file():
            try:
                lines = Path(source).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                paths.append((source, ImageError(f"{source}: cannot read this list of paths ({error})")))
                continue
            paths.extend(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
        else:
            paths.append(source)
    return paths


def images_in(folder: Path) -> list[tuple[str, Path | ImageError]]:
    """The image files under `folder`, sorted, following links to folders but never into one twice."""
    found: list[tuple[str, Path | ImageError]] = []
    searched: set[tuple[int, int]] = set()

    def unlisted(error: OSError) -> None:
        found.append((error.filename, ImageError(f"{error.filename}: cannot search this folder ({error.strerror})")))

    for directory, subfolders, files in os.walk(folder, onerror=unlisted, followlinks=True):
        status = os.stat(directory)
        if (status.st_dev, status.st_ino) in searched:
            found.append((directory, ImageError(f"{directory}: links to a folder already searched (a loop?)")))
            subfolders.clear()
            continue
        searched.add((status.st_dev, status.st_ino))
        for path in (Path(directory, name) for name in files if Path(name).suffix.lower() in IMAGE_SUFFIXES):
            found.append((str(path), path if path.exists() else ImageError(f"{path}: a broken link")))
    return sorted(found, key=lambda pair: Path(pair[0]))


def preview_name(name: str, taken: set[str]) -> str:
    """A flat file name for the preprocessed view of input `name` ("-" is stdin), unlike any in `taken`
    (compared ignoring case, as some file systems do); it is added to `taken`."""
    stem = (
        "stdin"
        if name == "-"
        else "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/.")) or "image"
    )
    candidate, number = f"{stem}.png", 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem}-{number}.png"
    taken.add(candidate.lower())
    return candidate
