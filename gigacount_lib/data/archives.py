"""Safe extraction of dataset archives (zip, tar): no member escapes the destination, and an
interrupted extraction never leaves a half-filled folder under its final name.

Used by :func:`gigacount_lib.data.download.download_dataset`, which re-exports :func:`extract_archive`
and :class:`CorruptArchiveError`.
"""
from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..utils import ensure_dir, get_logger, make_temp_dir, remove_owned, temp_dir_is_stale

__all__ = ["CorruptArchiveError", "extract_archive"]

_log = get_logger("data.download")


class CorruptArchiveError(ValueError):
    """An archive that cannot be read or extracted (bad CRC, truncated, not an archive)."""


def _safe_member(name: str, archive: Path) -> PurePosixPath:
    """The relative path of an archive member; raises ``ValueError`` if it would escape the target."""
    clean = name.replace("\\", "/")
    rel = PurePosixPath(clean)
    if (clean.startswith("/") or re.match(r"^[A-Za-z]:", clean) or ".." in rel.parts):
        raise ValueError(f"{archive}: refusing to extract member {name!r}: its path escapes the destination")
    return rel


def _members(archive: Path) -> tuple[str, list[str]]:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return "zip", zf.namelist()
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            names = []
            for member in tf.getmembers():
                if member.issym() or member.islnk():
                    target = PurePosixPath(member.name).parent / member.linkname if member.issym() \
                        else PurePosixPath(member.linkname)
                    if member.linkname.startswith("/") or ".." in PurePosixPath(
                            os.path.normpath(str(target))).parts:
                        raise ValueError(f"{archive}: refusing to extract link {member.name!r} -> "
                                         f"{member.linkname!r}: it points outside the destination")
                elif not (member.isfile() or member.isdir()):
                    raise ValueError(f"{archive}: refusing to extract special file {member.name!r}")
                names.append(member.name)
            return "tar", names
    raise ValueError(f"{archive}: not a zip or tar archive (or it is truncated)")


_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile,
                   NotImplementedError)


def _damaged(archive: Path, exc: BaseException, dest: Path | None = None) -> CorruptArchiveError:
    where = f"; nothing was extracted into {dest}" if dest is not None else ""
    return CorruptArchiveError(f"{archive}: the archive is damaged ({type(exc).__name__}: {exc}){where}. Delete "
                               f"{archive} and download it again (`gigacount download ... --sha256 HEX` checks a "
                               "copy against a hash you trust).")


def _clean_stale_extractions(dest: Path, archive: Path, owned: set[str]) -> None:
    """Empty the temporary folders of an earlier, killed extraction of ``archive`` into ``dest``: only
    files that are members of the archive are removed; a folder with anything else is named and kept."""
    legacy = re.compile(rf"\.{re.escape(archive.name)}\.extracting-[^-]+")  # before host/pid were in the name
    for entry in sorted(dest.iterdir()):
        stale = temp_dir_is_stale(dest / archive.name, entry.name, ("extracting",))
        if stale is None:
            stale = legacy.fullmatch(entry.name) is not None
        if not stale or entry.is_symlink() or not entry.is_dir():
            continue  # not ours, or another extraction may still be running
        left = remove_owned(entry, lambda rel: rel in owned)
        if left:
            _log.warning("%s: left by an interrupted extraction; kept because it holds %s, which is not in %s",
                         entry, left[0], archive.name)


def extract_archive(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract a zip or tar archive into the folder ``dest``; returns the top-level paths created.

    Every member is checked first: absolute paths, ``..`` components and links pointing outside are
    refused (``ValueError`` naming the member; nothing is extracted). The archive is extracted into a
    hidden temporary folder inside ``dest`` and its top-level entries are then renamed into place, so
    an interrupted extraction never leaves a half-filled folder under its final name (the next call
    removes what it left). A top-level entry that already exists in ``dest`` raises
    ``FileExistsError``; a damaged archive (bad CRC, truncated) raises :class:`CorruptArchiveError`.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    try:
        kind, names = _members(archive)
    except _ARCHIVE_ERRORS as exc:
        raise _damaged(archive, exc) from exc
    rels = [_safe_member(n, archive) for n in names]
    tops = sorted({rel.parts[0] for rel in rels if rel.parts})
    owned = {str(part) for rel in rels for part in (rel, *rel.parents) if str(part) != "."}
    ensure_dir(dest, "extraction folder")
    for top in tops:
        if (dest / top).exists():
            raise FileExistsError(f"{dest / top} already exists; remove it (or choose another folder) "
                                  f"before extracting {archive.name}")
    _clean_stale_extractions(dest, archive, owned)
    tmp = make_temp_dir(dest / archive.name, "extracting")
    try:
        try:
            if kind == "zip":
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(tmp)
            else:
                with tarfile.open(archive) as tf:
                    if hasattr(tarfile, "data_filter"):
                        tf.extractall(tmp, filter="data")
                    else:  # pragma: no cover - Python < 3.11.4; members were checked above
                        tf.extractall(tmp)
        except _ARCHIVE_ERRORS as exc:
            raise _damaged(archive, exc, dest) from exc
        created = []
        for top in tops:
            os.replace(tmp / top, dest / top)
            created.append(dest / top)
        return created
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # our own folder, holding only what was extracted
