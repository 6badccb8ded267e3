"""The dataset downloader on archives written here, served by a loopback HTTP server (127.0.0.1 only)."""
from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import time
import zipfile
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import write_zip_with_bad_crc
import scipy.io
from PIL import Image

from gigacount_lib.data.datasets import QNRFDataset
from gigacount_lib.data.download import (
    MANIFEST_NAME, SOURCES, ChecksumError, CorruptArchiveError, DownloadError, ManualDownloadRequired,
    download_dataset, download_file, extract_archive, get_source,
)

LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------------------------------
# Fixtures: a fake UCF-QNRF archive and a tiny HTTP server with Range support
# --------------------------------------------------------------------------------------------------
def _qnrf_zip() -> tuple[bytes, dict[str, np.ndarray]]:
    """A zip in the official layout ``UCF-QNRF_ECCV18/{Train,Test}/img_XXXX.jpg + _ann.mat``."""
    rng = np.random.default_rng(0)
    buf, points = io.BytesIO(), {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for split, names in (("Train", ["img_0001", "img_0002"]), ("Test", ["img_0001"])):
            for i, name in enumerate(names):
                img = Image.fromarray(rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8), "RGB")
                jpg = io.BytesIO()
                img.save(jpg, format="JPEG")
                pts = np.column_stack([rng.uniform(0, 32, 3 + i), rng.uniform(0, 24, 3 + i)])
                mat = io.BytesIO()
                scipy.io.savemat(mat, {"annPoints": pts})
                zf.writestr(f"UCF-QNRF_ECCV18/{split}/{name}.jpg", jpg.getvalue())
                zf.writestr(f"UCF-QNRF_ECCV18/{split}/{name}_ann.mat", mat.getvalue())
                points[f"{split}/{name}"] = pts
    return buf.getvalue(), points


@pytest.fixture(scope="module")
def qnrf_zip():
    return _qnrf_zip()


class _Server:
    """Serves ``files`` (path -> bytes) on 127.0.0.1; records each request's path and Range header."""

    def __init__(self, files: dict[str, bytes], ranges: bool = True):
        self.files, self.ranges, self.requests = files, ranges, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and server.ranges:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.httpd.server_address[1]}"


@contextmanager
def serve(files: dict[str, bytes], ranges: bool = True):
    server = _Server(files, ranges)
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# download_dataset
# --------------------------------------------------------------------------------------------------
def test_download_extract_read_and_manifest(tmp_path, qnrf_zip):
    data, points = qnrf_zip
    root = tmp_path / "qnrf"
    with serve({"/UCF-QNRF_ECCV18.zip": data}) as srv:
        url = srv.url + "/UCF-QNRF_ECCV18.zip"
        data_root = download_dataset("qnrf", root, url=url, progress=False)
        assert data_root == root / "UCF-QNRF_ECCV18"
        ds = QNRFDataset(data_root, "train")
        assert ds.names == ["img_0001", "img_0002"]
        _, pts, meta = ds[1]
        np.testing.assert_allclose(pts.numpy(), points["Train/img_0002"], rtol=1e-5)
        assert meta["orig_size"] == (24, 32)
        assert len(QNRFDataset(root, "test")) == 1  # the parent folder works too

        manifest = json.loads((root / MANIFEST_NAME).read_text())
        assert manifest["archive_sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["archive_size"] == len(data)
        assert manifest["source_url"] == url and manifest["dataset"] == "qnrf"
        assert "computed locally" in manifest["sha256_origin"]
        assert manifest["gigacount_lib_version"] and manifest["date"]
        assert not list(root.glob(".*extracting*")) and not list(root.glob("*.part"))

        # second call: verifies against the recorded hash and does not download again
        n_requests = len(srv.requests)
        assert download_dataset("qnrf", root, url=url, progress=False) == data_root
        assert len(srv.requests) == n_requests

    # the archive changes on disk: the recorded hash catches it, the file is moved aside
    archive = root / "UCF-QNRF_ECCV18.zip"
    archive.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(ChecksumError) as err:
        download_dataset("qnrf", root, url=url, progress=False)
    msg = str(err.value)
    assert "UCF-QNRF_ECCV18.zip" in msg and manifest["archive_sha256"] in msg and "moved aside" in msg
    assert not archive.exists() and (root / "UCF-QNRF_ECCV18.zip.corrupt").exists()


def test_pinned_checksum_mismatch_keeps_nothing_as_good(tmp_path, qnrf_zip):
    """A hash the caller passed may be mistyped: the download stays under its name, unextracted and
    unrecorded, and a run with the right hash uses it without downloading again."""
    data, _ = qnrf_zip
    root = tmp_path / "qnrf"
    wrong = "0" * 64
    with serve({"/a.zip": data}) as srv:
        with pytest.raises(ChecksumError) as err:
            download_dataset("qnrf", root, url=srv.url + "/a.zip", sha256=wrong, progress=False)
        msg = str(err.value)
        assert wrong in msg and hashlib.sha256(data).hexdigest() in msg and "UCF-QNRF_ECCV18.zip" in msg
        assert (root / "UCF-QNRF_ECCV18.zip").read_bytes() == data and not (root / "UCF-QNRF_ECCV18.zip.part").exists()
        assert not list(root.glob("*.corrupt*"))
        assert not (root / "UCF-QNRF_ECCV18").exists() and not (root / MANIFEST_NAME).exists()
        n_requests = len(srv.requests)
        download_dataset("qnrf", root, url=srv.url + "/a.zip", sha256=hashlib.sha256(data).hexdigest(),
                         progress=False)
        assert len(srv.requests) == n_requests and (root / "UCF-QNRF_ECCV18" / "Train").is_dir()


def test_archive_fetched_by_hand_is_used_and_pinned(tmp_path, qnrf_zip):
    data, _ = qnrf_zip
    root = tmp_path / "qnrf"
    root.mkdir()
    (root / "UCF-QNRF_ECCV18.zip").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    # a closed port as URL: nothing may be fetched
    out = download_dataset("qnrf", root, url=f"http://{LOOPBACK}:{_closed_port()}/x.zip",
                           sha256=digest.upper(), progress=False)
    assert len(QNRFDataset(out, "test")) == 1
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["archive_sha256"] == digest and "pinned" in manifest["sha256_origin"]


def test_unreachable_host_fails_fast_with_manual_instructions(tmp_path):
    url = f"http://{LOOPBACK}:{_closed_port()}/UCF-QNRF_ECCV18.zip"
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as err:
        download_dataset("qnrf", tmp_path / "q", url=url, timeout=2, progress=False)
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert url in msg and "by hand" in msg and str(tmp_path / "q" / "UCF-QNRF_ECCV18.zip") in msg


@pytest.mark.parametrize("name", ["sha", "shb", "ShanghaiTech", "nwpu", "NWPU-Crowd", "jhu"])
def test_manual_only_datasets_explain_what_to_do(tmp_path, name):
    source = get_source(name)
    with pytest.raises(ManualDownloadRequired) as err:
        download_dataset(name, tmp_path / "d")
    msg = str(err.value)
    assert source.homepage in msg and "data_root" in msg and source.layout in msg
    assert source.url is None and not (tmp_path / "d").exists()


def test_registry_and_bad_arguments(tmp_path):
    assert get_source("UCF-QNRF") is SOURCES["qnrf"]
    assert SOURCES["qnrf"].url == "https://www.crcv.ucf.edu/data/ucf-qnrf/UCF-QNRF_ECCV18.zip"
    with pytest.raises(ValueError, match="unknown dataset 'mall'"):
        get_source("mall")
    with pytest.raises(ValueError, match="64 hexadecimal"):
        download_dataset("qnrf", tmp_path, sha256="abc")


# --------------------------------------------------------------------------------------------------
# download_file
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ranges", [True, False])
def test_resume_from_partial_file(tmp_path, ranges):
    data = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(data[:123_456])
    with serve({"/blob.bin": data}, ranges=ranges) as srv:
        out = download_file(srv.url + "/blob.bin", dest, sha256=hashlib.sha256(data).hexdigest(),
                            expected_size=len(data), progress=False)
    assert out == dest and dest.read_bytes() == data and not (tmp_path / "blob.bin.part").exists()
    assert srv.requests == [("/blob.bin", "bytes=123456-")]


def test_download_file_size_mismatch_and_http_error(tmp_path):
    with serve({"/f": b"hello"}) as srv:
        with pytest.raises(ChecksumError, match=r"expected 6 bytes, got 5"):
            download_file(srv.url + "/f", tmp_path / "f", expected_size=6, progress=False)
        assert not (tmp_path / "f").exists() and (tmp_path / "f.corrupt").read_bytes() == b"hello"
        with pytest.raises(DownloadError, match="HTTP 404"):
            download_file(srv.url + "/missing", tmp_path / "g", progress=False)


# --------------------------------------------------------------------------------------------------
# extract_archive
# --------------------------------------------------------------------------------------------------
def test_zip_path_traversal_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.txt", "fine")
        zf.writestr("../escaped.txt", "bad")
    dest = tmp_path / "out"
    with pytest.raises(ValueError, match=r"escapes the destination"):
        extract_archive(archive, dest)
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "ok").exists()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_tar_escapes_are_refused(tmp_path, kind):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("top/file.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"ok"))
        if kind == "symlink":
            link = tarfile.TarInfo("top/link")
            link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
            tf.addfile(link)
        else:
            bad = tarfile.TarInfo("/tmp/abs.txt" if kind == "absolute" else "top/../../up.txt")
            bad.size = 1
            tf.addfile(bad, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="refusing"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "top").exists() and not (tmp_path / "up.txt").exists()


def test_extract_tar_moves_complete_tree_into_place(tmp_path):
    archive = tmp_path / "good.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("d/x.txt", "d/sub/y.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"1"))
    dest = tmp_path / "out"
    assert extract_archive(archive, dest) == [dest / "d"]
    assert (dest / "d" / "sub" / "y.txt").read_text() == "1"
    assert [p.name for p in dest.iterdir()] == ["d"]  # no temporary folder left behind
    with pytest.raises(FileExistsError, match="already exists"):
        extract_archive(archive, dest)
    not_archive = tmp_path / "plain.bin"
    not_archive.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not a zip or tar"):
        extract_archive(not_archive, dest)


def test_qnrf_not_found_error_points_to_the_download_command(tmp_path):
    from gigacount_lib.data.datasets import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="gigacount download qnrf --root DIR"):
        QNRFDataset(tmp_path / "missing", "train")


def test_failed_extraction_leaves_nothing_under_the_final_name(tmp_path):
    """A member with a bad CRC fails half-way: no partial folder appears, the temporary one is removed."""
    archive = write_zip_with_bad_crc(tmp_path / "broken.zip")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / f".{archive.name}.extracting-stale").mkdir()  # left over by a killed earlier run
    with pytest.raises(CorruptArchiveError, match="broken.zip: the archive is damaged"):
        extract_archive(archive, dest)
    assert list(dest.iterdir()) == []


def test_unpacked_by_hand_is_returned_without_network(tmp_path, qnrf_zip):
    data, _ = qnrf_zip
    root = tmp_path / "qnrf"
    root.mkdir()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(root)
    out = download_dataset("qnrf", root, url=f"http://{LOOPBACK}:{_closed_port()}/x.zip", progress=False)
    assert out == root / "UCF-QNRF_ECCV18" and len(QNRFDataset(out, "train")) == 2


def test_complete_part_file_and_oversized_part(tmp_path):
    """A ``.part`` that already holds the whole file (server answers 416) is verified and kept; one
    longer than the file, with nothing to check it against, is discarded and fetched again."""
    data = b"0123456789" * 1000
    with serve({"/d": data}) as srv:
        (tmp_path / "a.part").write_bytes(data)
        download_file(srv.url + "/d", tmp_path / "a", sha256=hashlib.sha256(data).hexdigest(), progress=False)
        assert (tmp_path / "a").read_bytes() == data
        (tmp_path / "b.part").write_bytes(data + b"junk")
        download_file(srv.url + "/d", tmp_path / "b", progress=False)
        assert (tmp_path / "b").read_bytes() == data
        assert srv.requests[-2:] == [("/d", f"bytes={len(data) + 4}-"), ("/d", None)]
