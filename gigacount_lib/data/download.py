"""Fetching the official crowd-counting datasets: a registry of sources and a verified downloader
(the safe archive extractor, :func:`~.archives.extract_archive`, is re-exported from :mod:`.archives`).

Only **UCF-QNRF** has a direct official archive (``UCF-QNRF_ECCV18.zip`` on the CRCV server).
ShanghaiTech, NWPU-Crowd and JHU-Crowd++ are distributed through Google Drive/Baidu links or request
forms; nothing here scrapes those: :func:`download_dataset` raises :class:`ManualDownloadRequired`
with the homepage, the folder layout our readers expect and what to pass as ``data_root``.

Checksum policy: **pin if known, otherwise record.** We could not obtain a published SHA-256 for the
official archives, so none is shipped (and none is invented). ``download_dataset(..., sha256=HEX)``
(CLI ``--sha256 HEX``) verifies the archive against a value you trust. Without it, the SHA-256 of the
archive is *computed locally* and recorded in ``download.json`` next to the archive; every later call
verifies the archive against that recorded value (trust on first use: it detects later corruption or
a changed file, not a bad first download).

On a mismatch against a hash you passed, the archive stays where it is (the value may be mistyped)
and the error gives both hashes. Only a mismatch against the *recorded* hash (or size) marks the file
suspect: it is renamed ``<archive>.corrupt`` (``.corrupt-2``, ... if that name is taken), never deleted.

Network behaviour: a short timeout (``$GIGACOUNT_NET_TIMEOUT`` or 10 s per connection attempt and per
read), no retry loops. When the host cannot be reached the error says which URL to fetch by hand and
where to put the file; the next call verifies and uses it. A partial download is kept as
``<file>.part`` and resumed with an HTTP ``Range`` request when the server supports it.

Example::

    from gigacount_lib.data.download import download_dataset
    data_root = download_dataset("qnrf", "~/data/qnrf")     # -> ~/data/qnrf/UCF-QNRF_ECCV18
    # QNRFDataset(data_root, "train") reads it
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils import atomic_write_json, ensure_dir, get_logger, read_json
from .archives import CorruptArchiveError, extract_archive
from .registry import DATASETS, lookup

__all__ = [
    "DatasetSource", "SOURCES", "get_source", "DownloadError", "ChecksumError", "ManualDownloadRequired",
    "CorruptArchiveError", "check_sha256", "download_file", "verify_file", "file_sha256", "extract_archive",
    "download_dataset", "MANIFEST_NAME",
]

_log = get_logger("data.download")

MANIFEST_NAME = "download.json"
_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------
class DownloadError(OSError):
    """A download that could not be completed (host unreachable, HTTP error, truncated transfer)."""


class ChecksumError(ValueError):
    """A file whose size or SHA-256 differs from the expected value (the message says where it is now)."""


class ManualDownloadRequired(RuntimeError):
    """The dataset has no direct official archive; the message says how to get it by hand."""


# --------------------------------------------------------------------------------------------------
# Official sources (names, homepages and layouts come from .registry)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset officially comes from.

    ``url`` is a direct archive link (``None`` when the owners distribute it only through links or
    forms on ``homepage``); ``archive_name`` the file name it is saved as in ``root``; ``folder`` the
    top folder the archive extracts to; ``markers`` the sub-folders that must exist in it afterwards.
    """

    key: str
    display_name: str
    homepage: str
    citation: str
    distribution: str
    reader: str
    layout: str
    url: str | None = None
    archive_name: str | None = None
    folder: str | None = None
    markers: tuple[str, ...] = ()

    @property
    def automatic(self) -> bool:
        return self.url is not None

    def manual_instructions(self, root: str | Path | None = None) -> str:
        where = f" (for example {Path(root).expanduser()})" if root is not None else ""
        return (f"{self.display_name} cannot be downloaded automatically: {self.distribution}.\n"
                f"1. Get it from its official page: {self.homepage}\n"
                f"2. Unpack it into a folder{where} so that it has this layout:\n{self.layout}\n"
                f"3. Pass the folder as data_root (reader: gigacount_lib.data.datasets.{self.reader}).\n"
                f"Citation: {self.citation}")


def _source(key: str, distribution: str, **archive: Any) -> DatasetSource:
    """The source of a registered dataset; with an archive ``folder``, the layout is shown inside it."""
    info = DATASETS[key]
    layout = info.layout
    if archive.get("folder"):
        layout = f"  {archive['folder']}/, holding\n" + "\n".join("  " + line for line in layout.splitlines())
    return DatasetSource(key=key, display_name=info.display_name, homepage=info.homepage, citation=info.citation,
                         distribution=distribution, reader=info.reader, layout=layout, **archive)


SOURCES: dict[str, DatasetSource] = {
    "qnrf": _source("qnrf", "a direct zip archive on the CRCV (University of Central Florida) server",
                    url="https://www.crcv.ucf.edu/data/ucf-qnrf/UCF-QNRF_ECCV18.zip",
                    archive_name="UCF-QNRF_ECCV18.zip", folder="UCF-QNRF_ECCV18", markers=("Train", "Test")),
    "shanghaitech": _source("shanghaitech", "Google Drive / Baidu links on its homepage"),
    "nwpu": _source("nwpu", "Google Drive / Baidu links from its homepage"),
    "jhu": _source("jhu", "download links (Google Drive / Baidu) given on its homepage"),
}


def get_source(name: str) -> DatasetSource:
    """The :class:`DatasetSource` for ``name``: any name of :data:`.registry.ALIASES` (``qnrf``,
    ``sha``/``shb``/``shanghaitech``, ``nwpu``, ``jhu``, ...; case, ``-`` and ``_`` ignored). Unknown
    names, and the synthetic dataset (generated, not downloaded), raise ``ValueError``."""
    found = lookup(name)
    if found is None:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(SOURCES)} "
                         "(aliases: ucf-qnrf, sha, shb, nwpu-crowd, jhu-crowd)")
    info = found[0]
    if info.key not in SOURCES:
        raise ValueError(f"{name!r} has nothing to download: {info.homepage}")
    return SOURCES[info.key]


# --------------------------------------------------------------------------------------------------
# Hashing and verification
# --------------------------------------------------------------------------------------------------
def check_sha256(sha256: str | None) -> str | None:
    """``sha256`` as 64 lowercase hex characters (``None`` stays ``None``); ``ValueError`` otherwise."""
    if sha256 is None:
        return None
    value = str(sha256).strip().lower()
    if not _HEX64.match(value):
        raise ValueError(f"sha256 must be 64 hexadecimal characters, got {sha256!r} ({len(value)} characters)")
    return value


_check_hex = check_sha256


def file_sha256(path: str | Path, *, progress: bool = False) -> str:
    """SHA-256 of a file as lowercase hex, read in 1 MiB chunks."""
    path = Path(path)
    digest = hashlib.sha256()
    bar = _progress(path.stat().st_size, 0, f"sha256 {path.name}", progress)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    bar.close()
    return digest.hexdigest()


def _move_aside(path: Path, final_name: str) -> Path:
    """Rename ``path`` to ``<final_name>.corrupt`` beside it, or ``.corrupt-2``, ... (never over a file)."""
    for n in range(1, 10_000):
        bad = path.with_name(final_name + (".corrupt" if n == 1 else f".corrupt-{n}"))
        if bad.exists() or bad.is_symlink():
            continue
        try:
            os.link(path, bad)  # fails if the name was taken meanwhile: nothing is overwritten
        except FileExistsError:
            continue
        except OSError:  # no hard links on this file system
            os.replace(path, bad)
            return bad
        os.unlink(path)
        return bad
    raise ChecksumError(f"{path}: too many .corrupt copies beside it; delete some and run again")


def _suspect(path: Path, name: str, problem: str) -> ChecksumError:
    bad = _move_aside(path, name)
    return ChecksumError(f"{path.parent / name}: {problem}; the file was moved aside to {bad} so that it is not "
                         "used (kept for inspection, nothing was deleted). Run again to fetch a fresh copy, or put "
                         f"a good copy at {path.parent / name}.")


def _check_size(path: Path, expected_size: int | None, name: str, what: str = "expected") -> None:
    size = path.stat().st_size
    if expected_size is not None and size != int(expected_size):
        raise _suspect(path, name, f"size mismatch: {what} {int(expected_size)} bytes, got {size}")


def verify_file(path: str | Path, *, sha256: str | None = None, expected_size: int | None = None,
                name: str | None = None, progress: bool = False, recorded: bool = False) -> str:
    """Check the size and SHA-256 of ``path``; returns the SHA-256 it has.

    ``recorded=False``: ``sha256`` is a value the caller typed or copied; a mismatch leaves the file
    where it is (the value may be wrong) and :class:`ChecksumError` gives both hashes.
    ``recorded=True``: ``sha256``/``expected_size`` were recorded from an earlier good copy; a mismatch
    means the file changed, and it is renamed ``<name>.corrupt`` (``name`` defaults to the file name;
    ``.corrupt-2``, ... when taken). A size mismatch is always treated as recorded.
    """
    path = Path(path)
    sha256 = check_sha256(sha256)
    name = name or path.name
    _check_size(path, expected_size, name, "recorded" if recorded else "expected")
    actual = file_sha256(path, progress=progress)
    if sha256 is not None and actual != sha256:
        if recorded:
            raise _suspect(path, name, f"SHA-256 mismatch: recorded {sha256}, got {actual} (the file changed "
                                       "since it was verified)")
        raise _given_mismatch(path, sha256, actual)
    return actual


def _given_mismatch(path: Path, expected: str, actual: str, note: str = "") -> ChecksumError:
    return ChecksumError(f"{path}: SHA-256 mismatch: expected {expected}, the file has {actual}.{note} The file "
                         "was left in place. If the expected value is right, the file is damaged: delete it and "
                         "run again; if it was mistyped, run again with the right --sha256 (sha256=).")


# --------------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------------
def _default_timeout() -> float:
    text = os.environ.get("GIGACOUNT_NET_TIMEOUT", "10")
    try:
        return _check_timeout(float(text), "$GIGACOUNT_NET_TIMEOUT")
    except ValueError:
        raise ValueError(f"$GIGACOUNT_NET_TIMEOUT must be a number of seconds > 0, got {text!r}") from None


def _check_timeout(timeout: float, what: str = "timeout") -> float:
    timeout = float(timeout)
    if not (0 < timeout < float("inf")):
        raise ValueError(f"{what} must be a number of seconds > 0, got {timeout:g}")
    return timeout


def _progress(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not enabled, leave=False)


def _manual_hint(url: str, dest: Path) -> str:
    return (f"Download {url} by hand (e.g. with a browser) and put the file at {dest}; "
            "the next call verifies it and uses it.")


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "gigacount_lib-downloader"})
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) URLs from the registry


def _connect(url: str, start: int, timeout: float, dest: Path):
    """Open ``url`` (from byte ``start``); ``None`` for ``416 Range Not Satisfiable`` on a resume.
    Any other failure raises :class:`DownloadError` with the manual-download hint."""
    try:
        return _open(url, start, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start > 0:  # the .part may already be complete: the caller checks it
            return None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}. {_manual_hint(url, dest)}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot reach {url} ({reason}). {_manual_hint(url, dest)}") from err


def download_file(url: str, dest: str | Path, *, sha256: str | None = None, expected_size: int | None = None,
                  timeout: float | None = None, progress: bool = True, recorded: bool = False) -> Path:
    """Download ``url`` to ``dest`` (streaming, resumable, verified, atomic); returns ``dest``.

    * Data goes to ``dest.part``; an existing ``.part`` is resumed with ``Range: bytes=<size>-`` when
      the server answers ``206 Partial Content`` (otherwise the download restarts from zero).
    * When the transfer is complete its size (``expected_size``, else the server's length) and
      SHA-256 (``sha256``, if given) are checked, then ``.part`` is renamed to ``dest``. A size
      mismatch renames the data ``dest.corrupt``; a SHA-256 mismatch leaves it at ``dest`` (the hash
      may be mistyped), or renames it ``dest.corrupt`` when ``recorded`` (see :func:`verify_file`).
      Either raises :class:`ChecksumError`.
    * If ``dest`` already exists it is verified (same checks) and returned without downloading.
    * ``timeout`` (default ``$GIGACOUNT_NET_TIMEOUT`` or 10 s) bounds the connection and each read;
      there is no retry loop. An unreachable host raises :class:`DownloadError` saying how to fetch
      the file by hand and where to put it.
    """
    dest = Path(dest).expanduser()
    sha256 = check_sha256(sha256)
    timeout = _default_timeout() if timeout is None else _check_timeout(timeout)
    if dest.exists():
        if sha256 is None:
            _check_size(dest, expected_size, dest.name, "recorded" if recorded else "expected")
        else:
            verify_file(dest, sha256=sha256, expected_size=expected_size, progress=progress, recorded=recorded)
        _log.info("%s already present (%s); not downloading", dest,
                  "SHA-256 verified" if sha256 else "size checked" if expected_size is not None else "unchecked")
        return dest
    ensure_dir(dest.parent, "download folder")
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    if expected_size is not None and start > int(expected_size):
        part.unlink()
        start = 0

    response = _connect(url, start, timeout, dest)
    if response is None and sha256 is None and expected_size is None:
        # 416 and nothing to check the .part against: it may be longer than the file; start again
        part.unlink()
        start = 0
        response = _connect(url, start, timeout, dest)
    elif response is not None and start > 0 and getattr(response, "status", 200) == 206 and not str(
            response.headers.get("Content-Range", "")).startswith(f"bytes {start}-"):
        _log.info("%s: the server answered another range (%s); restarting from zero", url,
                  response.headers.get("Content-Range"))
        response.close()
        start = 0
        response = _connect(url, start, timeout, dest)

    total: int | None = None
    if response is not None:
        with response:
            status = getattr(response, "status", 200)
            if start > 0 and status != 206:
                _log.info("%s: the server does not resume (HTTP %s); restarting from zero", url, status)
                start = 0
            elif start > 0:
                _log.info("%s: resuming at byte %d", url, start)
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            received = start
            bar = _progress(total, start, dest.name, progress)
            try:
                with open(part, "ab" if start > 0 else "wb") as handle:
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        handle.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                raise DownloadError(f"{url}: transfer interrupted after {received} bytes ({err}); the partial "
                                    f"file is kept at {part}; run again to resume. {_manual_hint(url, dest)}"
                                    ) from err
            finally:
                bar.close()
            if total is not None and received < total:
                raise DownloadError(f"{url}: transfer ended after {received} of {total} bytes; the partial "
                                    f"file is kept at {part}; run again to resume.")
    size = expected_size if expected_size is not None else total
    _check_size(part, size, dest.name, "recorded" if recorded and expected_size is not None else "expected")
    if sha256 is not None:  # else nothing to compare the hash with (hashing is the caller's)
        actual = file_sha256(part, progress=progress)
        if actual != sha256:
            if recorded:
                raise _suspect(part, dest.name, f"SHA-256 mismatch: recorded {sha256}, the download has {actual} "
                                                "(the file on the server changed?)")
            os.replace(part, dest)
            raise _given_mismatch(dest, sha256, actual, " (It was downloaded from " + url + "; a run with the "
                                  "right hash verifies it without downloading it again.)")
    os.replace(part, dest)
    _log.info("downloaded %s -> %s", url, dest)
    return dest


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------
def _library_version() -> str:
    from .. import __version__

    return __version__


def _layout_ok(folder: Path, markers: tuple[str, ...]) -> bool:
    return folder.is_dir() and all((folder / m).is_dir() for m in markers)


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    problem = None
    try:
        manifest = read_json(path, "download manifest")
    except (OSError, ValueError) as exc:
        problem, manifest = str(exc), None
    if problem is None and not (isinstance(manifest, dict) and all(
            isinstance(manifest.get(k), t) or manifest.get(k) is None
            for k, t in (("archive_sha256", str), ("archive_size", int)))):
        problem = f"{path}: not a download manifest (expected an object with archive_sha256 and archive_size)"
    if problem is not None:
        raise ValueError(f"{problem}. It records the archive's SHA-256 for later checks; move it away (or pass "
                         "--sha256 HEX and delete it) and run again")
    return manifest


def download_dataset(name: str, root: str | Path, *, sha256: str | None = None, url: str | None = None,
                     timeout: float | None = None, progress: bool = True) -> Path:
    """Download (or reuse), verify and extract an official dataset; returns the folder to pass as
    ``data_root`` (for UCF-QNRF ``root/UCF-QNRF_ECCV18``, which holds ``Train/`` and ``Test/``).

    Steps: the archive ``root/<archive_name>`` is reused if present (e.g. fetched by hand), otherwise
    downloaded from the official URL (``url`` overrides it, e.g. a mirror); it is verified; it is
    extracted unless the layout is already there; the layout markers are checked; the manifest
    ``root/download.json`` is written (source URL, archive size, the SHA-256 computed locally, date,
    library version).

    Checksum policy (**pin if known, otherwise record**): no published SHA-256 is known for the official
    archives, so none is built in. With ``sha256=HEX`` the archive must match it. Without it, the hash
    is computed and recorded in the manifest on the first call, and every later call verifies the
    archive against the recorded value (trust on first use). A mismatch raises :class:`ChecksumError`:
    against ``sha256`` the archive stays in place (the value may be mistyped); against the recorded value
    it is renamed ``<archive>.corrupt`` (``.corrupt-2``, ... if taken).

    Datasets without a direct official archive (ShanghaiTech, NWPU-Crowd, JHU-Crowd++) raise
    :class:`ManualDownloadRequired` with the homepage, the expected layout and what to pass.
    """
    source = get_source(name)
    root = Path(root).expanduser()
    if not source.automatic:
        raise ManualDownloadRequired(source.manual_instructions(root))
    pinned = check_sha256(sha256)
    if timeout is not None:
        _check_timeout(timeout)
    url = url or source.url
    assert source.archive_name is not None and source.folder is not None
    ensure_dir(root, "dataset root (--root)")
    archive = root / source.archive_name
    data_root = root / source.folder
    manifest_path = root / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    recorded = manifest.get("archive_sha256")
    recorded_size = manifest.get("archive_size")
    if pinned is not None and recorded is not None and pinned != recorded:
        _log.warning("%s: the pinned SHA-256 %s differs from the one recorded in %s (%s); verifying "
                     "against the pinned value", archive, pinned, manifest_path, recorded)
        recorded_size = None
    expected = pinned or recorded

    if archive.exists():
        if pinned is not None and recorded is not None and pinned != recorded:
            digest = verify_file(archive, progress=progress)
            if digest != pinned:
                note = (f" It matches the SHA-256 recorded in {manifest_path} when it was first verified"
                        if digest == recorded else "")
                raise _given_mismatch(archive, pinned, digest, note and note + " (check the value you passed).")
        else:
            digest = verify_file(archive, sha256=expected, expected_size=recorded_size, progress=progress,
                                 recorded=pinned is None)
        _log.info("%s: verified (%s)", archive, "pinned SHA-256" if pinned else
                  "recorded SHA-256" if recorded else "SHA-256 computed and recorded")
    elif _layout_ok(data_root, source.markers):
        _log.warning("%s is already extracted and %s is absent: nothing to verify, nothing downloaded%s",
                     data_root, archive.name, "" if recorded else " (no manifest: unpacked by hand?)")
        return data_root
    else:
        download_file(url, archive, sha256=expected, expected_size=recorded_size, timeout=timeout,
                      progress=progress, recorded=pinned is None)
        digest = expected or file_sha256(archive, progress=progress)

    if not _layout_ok(data_root, source.markers):
        if data_root.exists():
            raise FileExistsError(f"{data_root} exists but lacks {list(source.markers)}: it looks like an "
                                  "incomplete copy; remove it and run again")
        extract_archive(archive, root)
        if not _layout_ok(data_root, source.markers):
            raise ValueError(f"{archive}: after extraction {data_root} does not contain "
                             f"{', '.join(m + '/' for m in source.markers)}; expected layout:\n{source.layout}")

    if manifest.get("archive_sha256") != digest or manifest.get("source_url") is None:
        atomic_write_json(manifest_path, {
            "dataset": source.key,
            "source_url": url,
            "homepage": source.homepage,
            "citation": source.citation,
            "archive": archive.name,
            "archive_size": archive.stat().st_size,
            "archive_sha256": digest,
            "sha256_origin": "pinned by the caller" if pinned else
                             "recorded from a previous manifest" if recorded else
                             "computed locally on first download (no published checksum known)",
            "data_root": source.folder,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "gigacount_lib_version": _library_version(),
        })
    return data_root
