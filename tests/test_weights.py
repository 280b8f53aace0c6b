"""Weight registry: cache, import, verify, and `fetch` against a local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reenactbench import weights as W
from reenactbench.cli import app
from reenactbench.errors import InputError, ReenactbenchError, WeightsMissing
from reenactbench.metrics import MetricSpec, register_metric
from reenactbench.metrics.base import MetricContext
from reenactbench.metrics.registry import _REGISTRY
from reenactbench.scoring import prepare_metrics


def _torch_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.from_numpy(np.random.default_rng(0).normal(size=40_000))}, buf)
    return buf.getvalue()


PAYLOAD = _torch_bytes()  #: a real (tiny) torch file: fetch and import check the format
ONNX = b"\x08\x07" + np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REENACTBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _pin(monkeypatch: pytest.MonkeyPatch, name: str, sha: str | None) -> None:
    spec = dataclasses.replace(W.WEIGHTS[name], sha256=sha)
    monkeypatch.setitem(W.WEIGHTS, name, spec)


class _Server(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    ranges: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            self.ranges.append(rng)
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):  # what real servers answer to a complete download
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Server.ranges.clear()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("buffalo_l/w600k_r50.onnx", ONNX)
        z.writestr("buffalo_l/det_10g.onnx", b"other")
    _Server.files = {"/fid.pth": PAYLOAD, "/buffalo_l.zip": buf.getvalue()}
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_missing_weight_says_how_to_get_it() -> None:
    with pytest.raises(WeightsMissing, match=r"weights missing: ir-se50 .*weights import ir-se50"):
        W.weight_path("ir-se50")
    with pytest.raises(InputError, match="unknown weight 'nope'"):
        W.weight_path("nope")


def test_override_wins_and_must_exist(tmp_path: Path) -> None:
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    assert W.weight_path("fid-inception", {"fid-inception": f}) == f
    with pytest.raises(InputError, match="no such file"):
        W.weight_path("fid-inception", {"fid-inception": tmp_path / "gone.pth"})


def test_fetch_verifies_and_resumes(
    server: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pin(monkeypatch, "fid-inception", hashlib.sha256(PAYLOAD).hexdigest()[:8])
    dest = home / "weights" / "pt_inception-2015-12-05-6726825d.pth"
    dest.parent.mkdir(parents=True)
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(PAYLOAD[:100_000])  # an interrupted earlier download
    seen: list[int] = []
    path = W.fetch(
        "fid-inception",
        url=server + "/fid.pth",
        on_progress=lambda _n, done, total: seen.append(total),
    )
    assert path == dest and path.read_bytes() == PAYLOAD
    assert _Server.ranges == ["bytes=100000-"] and seen[-1] == len(PAYLOAD)
    assert not part.exists()
    assert W.check_file("fid-inception", path) == "ok"


@pytest.mark.parametrize("pinned", [True, False])
def test_fetch_finishes_a_complete_partial_download(
    server: str, home: Path, monkeypatch: pytest.MonkeyPatch, pinned: bool
) -> None:
    """A .part file that already holds the whole file (killed after the last byte, before
    the check) is verified and installed, not resumed forever into HTTP 416."""
    _pin(monkeypatch, "fid-inception", hashlib.sha256(PAYLOAD).hexdigest()[:8] if pinned else None)
    dest = home / "weights" / "pt_inception-2015-12-05-6726825d.pth"
    dest.parent.mkdir(parents=True)
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(PAYLOAD)
    assert W.fetch("fid-inception", url=server + "/fid.pth").read_bytes() == PAYLOAD
    assert _Server.ranges == [f"bytes={len(PAYLOAD)}-"] and not part.exists()
    part.write_bytes(PAYLOAD + b"junk")  # longer than the server's file: start over
    _Server.ranges.clear()
    assert W.fetch("fid-inception", url=server + "/fid.pth").read_bytes() == PAYLOAD
    assert _Server.ranges == [f"bytes={len(PAYLOAD) + 4}-"]


def test_fetch_rejects_wrong_hash(server: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _pin(monkeypatch, "fid-inception", "00000000")
    with pytest.raises(ReenactbenchError, match="expected 00000000; deleted it"):
        W.fetch("fid-inception", url=server + "/fid.pth")
    assert not list((home / "weights").iterdir())


def test_fetch_extracts_zip_member(server: str, home: Path) -> None:
    path = W.fetch("arcface-r50", url=server + "/buffalo_l.zip")
    assert path.name == "w600k_r50.onnx" and path.read_bytes() == ONNX
    assert W.check_file("arcface-r50", path) == "unpinned"


def test_fetch_errors(server: str) -> None:
    with pytest.raises(ReenactbenchError, match="no direct download.*weights import ir-se50"):
        W.fetch("ir-se50")
    with pytest.raises(ReenactbenchError, match="failed.*resume"):
        W.fetch("fid-inception", url=server + "/missing.pth")


def test_import_checks_published_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "alex.pth"
    f.write_bytes(PAYLOAD)
    with pytest.raises(InputError, match="does not match the published 7be5be79"):
        W.import_file("lpips-alex", f)
    path = W.import_file("lpips-alex", f, force=True)
    assert (
        path.name == "alexnet-owt-7be5be79.pth" and W.check_file("lpips-alex", path) == "mismatch"
    )
    _pin(monkeypatch, "lpips-alex", hashlib.sha256(PAYLOAD).hexdigest())
    assert W.check_file("lpips-alex", W.import_file("lpips-alex", f)) == "ok"


def test_cli_list_import_verify(tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["weights", "list"])
    assert listed.exit_code == 0 and "missing" in listed.output
    f = tmp_path / "alex.pth"
    f.write_bytes(PAYLOAD)
    refused = runner.invoke(app, ["weights", "import", "lpips-alex", str(f)])
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert runner.invoke(app, ["weights", "import", "lpips-alex", str(f), "--force"]).exit_code == 0
    verify = runner.invoke(app, ["weights", "verify"])
    assert verify.exit_code == 1 and "mismatch" in verify.output


def test_metric_needing_missing_weights_is_skipped_and_flags_unpinned(tmp_path: Path) -> None:
    spec = MetricSpec(
        "needs_i3d_test",
        "T",
        False,
        "",
        "frame",
        fn=lambda f, r: np.zeros(len(f)),
        weights=("i3d",),
    )
    register_metric(spec)
    try:
        runnable, skipped, records = prepare_metrics([spec], MetricContext())
        assert not runnable and skipped["needs_i3d_test"].startswith("weights missing: i3d")
        f = tmp_path / "i3d.pt"
        f.write_bytes(PAYLOAD)
        runnable, skipped, records = prepare_metrics([spec], MetricContext(weights={"i3d": f}))
        assert runnable == [spec] and not skipped
        assert records["i3d"]["status"] == "unpinned"
        assert records["i3d"]["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    finally:
        _REGISTRY.pop("needs_i3d_test")
