"""Give every notebook cell a slide type for the lecture decks (developer tool, idempotent).

Sets ``cell.metadata.slideshow.slide_type`` from the structure of the notebook
(``gigacount_lib.slides.suggested_slide_types``: title and ``##`` -> slide, ``###`` -> subslide, a
figure -> its own subslide, setup and parameters -> skip, otherwise ``-``). A slide type already
set, by a person or an earlier run, is kept unless ``--force``. Usage::

    .venv/bin/python tools/slide_metadata.py            # all notebooks/NN_*.ipynb
    .venv/bin/python tools/slide_metadata.py notebooks/04_loss_derivation.ipynb --force
    .venv/bin/python tools/slide_metadata.py --check    # exit 1 if a cell has no slide type

Other tools may be editing the same notebooks: each file is read from disk just before it is
changed and replaced atomically, and the write is skipped and redone if the file changed on disk
in between, so nobody's cells are lost. Outputs are never added (the notebooks stay without them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from gigacount_lib.slides import apply_slide_types, missing_slide_types  # noqa: E402
from gigacount_lib.utils import atomic_write_bytes  # noqa: E402


def update(path: Path, *, force: bool = False, attempts: int = 5) -> int:
    """Set the slide types of one notebook on disk; returns how many cells changed."""
    for _ in range(attempts):
        before = path.read_bytes()
        nb = nbformat.reads(before.decode("utf-8"), as_version=4)
        changed = apply_slide_types(nb, force=force)
        if not changed:
            return 0
        text = nbformat.writes(nb)
        if not text.endswith("\n"):
            text += "\n"
        if path.read_bytes() != before:  # someone wrote the file meanwhile: start again from theirs
            continue
        atomic_write_bytes(path, text.encode("utf-8"))
        return changed
    raise RuntimeError(f"{path}: changed on disk {attempts} times while being updated; try again")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb")
    parser.add_argument("--force", action="store_true", help="recompute every cell's slide type")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a cell lacks one")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    status = 0
    for path in paths:
        if args.check:
            missing = missing_slide_types(nbformat.read(str(path), as_version=4))
            if missing:
                print(f"{path.name}: cells {missing} have no slide type; run tools/slide_metadata.py")
                status = 1
            continue
        changed = update(path, force=args.force)
        print(f"{path.name}: {changed} cell(s) updated" if changed else f"{path.name}: unchanged")
    return status


if __name__ == "__main__":
    sys.exit(main())
