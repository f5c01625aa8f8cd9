"""styletransfer-weights against a local HTTP server on 127.0.0.1 serving stand-in files with known checksums:
success, checksum mismatch, an interrupted download resumed with a Range request, a server that ignores Range,
trust on first use for files without a published checksum, and a server that is down."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from styletransfer.cli.weights import main
from styletransfer.eval import metric_nets
from styletransfer.nn import encoder
from styletransfer.runtime import weight_files
from styletransfer.runtime.download import part_path
from styletransfer.runtime.files import sha256_file
from styletransfer.runtime.weight_files import hub_checkpoint

STAND_IN = bytes(range(256)) * 512  # 128 kB, several network reads
STAND_IN_SHA = hashlib.sha256(STAND_IN).hexdigest()


def _weights_file(name: str, wrong: bool = False) -> bytes:
    """A file holding the tensors a first-use download of ``name`` must hold (zeros of the right shapes; with
    ``wrong`` the last one has another shape), saved by torch.save."""
    holds = weight_files.known(name).holds
    state = {key: torch.zeros(*shape) for key, shape in holds}
    if wrong:
        key, shape = holds[-1]
        state[key] = torch.zeros(shape[0] + 1, *shape[1:])
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/styletransfer-fetch-ran-code",))
ROOT = Path(__file__).resolve().parents[1]


class _Server(ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes); records each request's Range header; can ignore Range or drop a response."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.honour_range = True
        self.drop_after: int | None = None  # the next response stops after this many body bytes, then the socket closes

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        srv, wanted = self.server, self.headers.get("Range")
        srv.ranges.append(wanted)
        body = srv.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted and srv.honour_range else 0
        if start >= len(body) > 0:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload, drop, srv.drop_after = body[start:], srv.drop_after, None
        self.wfile.write(payload if drop is None else payload[:drop])
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: _Server) -> Path:
    """An empty torch.hub cache, and every known file fetched from the local server (the mirror variable)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv(weight_files.BASE_URL_ENV, server.url)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _with_checksum(monkeypatch: pytest.MonkeyPatch, name: str, sha256: str) -> None:
    """Give the known file ``name`` the stand-in's checksum (the real ones belong to the real files)."""
    known = tuple(dataclasses.replace(w, sha256=sha256) if w.name == name else w for w in weight_files.KNOWN)
    monkeypatch.setattr(weight_files, "KNOWN", known)


def _row(listing: str, name: str) -> list[str]:
    return next(line.split() for line in listing.splitlines() if line.startswith(name + " "))


def test_registry_agrees_with_the_loaders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The registry's file names, URLs and paths are the ones the encoder and the metric networks look for."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for name, filename, url in (("vgg19", encoder.IMAGENET_FILE, encoder.IMAGENET_URL),
                                ("alexnet", metric_nets.ALEXNET_FILE, metric_nets.ALEXNET_URL),
                                ("art-inception", metric_nets.ART_INCEPTION_FILE, metric_nets.ART_INCEPTION_URL)):
        weight = weight_files.by_name(name)
        assert (weight.filename, weight.url) == (filename, url)
        assert weight.destination() == hub_checkpoint(filename)
    assert weight_files.by_name("vgg19").sha256 == encoder.IMAGENET_FILE.split("-")[1].split(".")[0]
    assert weight_files.by_name("alexnet").sha256 == metric_nets.ALEXNET_FILE.rsplit("-", 1)[1].split(".")[0]


def test_fetch_installs_verified_file_and_list_shows_it(server: _Server, hub: Path, monkeypatch, capsys) -> None:
    server.files["vgg19-dcbb9e9d.pth"] = STAND_IN
    _with_checksum(monkeypatch, "vgg19", STAND_IN_SHA[:8])  # a published prefix, as torchvision's
    assert main(["fetch", "vgg19", "-q"]) == 0
    dest = hub / "vgg19-dcbb9e9d.pth"
    assert dest.read_bytes() == STAND_IN and not part_path(dest).exists()
    assert main(["list"]) == 0
    row = _row(capsys.readouterr().out, "vgg19")
    assert str(dest) in row and row[row.index(str(dest)) + 1:] == ["yes", "yes", "(prefix)", "0.1", "MB"]
    assert main(["fetch", "vgg19", "-q"]) == 0  # already there and verified: nothing downloaded
    assert len(server.ranges) == 1 and "already there and verified" in capsys.readouterr().out


def test_checksum_mismatch_installs_nothing(server: _Server, hub: Path, capsys) -> None:
    server.files["vgg19-dcbb9e9d.pth"] = STAND_IN  # not torchvision's file: the real prefix cannot match
    assert main(["fetch", "vgg19", "-q"]) == 1
    err = capsys.readouterr().err
    assert f"expected SHA-256 starting dcbb9e9d (the published prefix), got {STAND_IN_SHA}" in err
    dest = hub / "vgg19-dcbb9e9d.pth"
    assert not dest.exists() and not part_path(dest).exists()
    assert "Traceback" not in err


def test_interrupted_download_resumes_with_range(server: _Server, hub: Path, monkeypatch, capsys) -> None:
    server.files["decoder.pth"] = STAND_IN
    _with_checksum(monkeypatch, "adain-decoder", STAND_IN_SHA)
    half = len(STAND_IN) // 2
    server.drop_after = half
    assert main(["fetch", "adain-decoder", "-q"]) == 1
    dest = hub / "adain" / "decoder.pth"
    assert "interrupted" in capsys.readouterr().err and not dest.exists()
    assert part_path(dest).read_bytes() == STAND_IN[:half]
    assert main(["fetch", "adain-decoder", "-q"]) == 0
    assert server.ranges == [None, f"bytes={half}-"]
    assert sha256_file(dest) == STAND_IN_SHA and not part_path(dest).exists()


def test_server_ignoring_range_restarts_cleanly(server: _Server, hub: Path, monkeypatch) -> None:
    server.files["decoder.pth"] = STAND_IN
    server.honour_range = False
    _with_checksum(monkeypatch, "adain-decoder", STAND_IN_SHA)
    dest = hub / "adain" / "decoder.pth"
    dest.parent.mkdir(parents=True)
    part_path(dest).write_bytes(b"x" * 1000)  # a stale partial download the server will not continue
    assert main(["fetch", "adain-decoder", "-q"]) == 0
    assert server.ranges == ["bytes=1000-"] and dest.read_bytes() == STAND_IN


def test_first_use_is_recorded_then_checked(server: _Server, hub: Path, capsys) -> None:
    """Files without a published checksum: the first download's SHA-256 is recorded and checked from then on."""
    genuine = _weights_file("art-inception")
    server.files["art_inception.pth"] = genuine
    assert main(["fetch", "art-inception", "-q"]) == 0
    dest = hub / "art_inception.pth"
    assert weight_files.read_record(dest) == hashlib.sha256(genuine).hexdigest()
    assert main(["list"]) == 0
    size = f"{len(genuine) / 1e6:.1f}"
    assert _row(capsys.readouterr().out, "art-inception")[-5:] == ["yes", "yes", "(recorded)", size, "MB"]
    dest.write_bytes(genuine[:-1] + bytes([genuine[-1] ^ 1]))  # damaged on disk
    assert main(["list"]) == 1 and "MISMATCH" in capsys.readouterr().err
    server.files["art_inception.pth"] = b"a different file"
    assert main(["fetch", "art-inception", "-q"]) == 1
    err = capsys.readouterr().err
    assert f"expected SHA-256 {hashlib.sha256(genuine).hexdigest()}" in err
    assert str(weight_files.record_path(dest)) in err


@pytest.mark.parametrize("served", ["code", "wrong shape", "junk"])
def test_first_use_installs_only_the_weights_it_names(server: _Server, hub: Path, capsys, served: str) -> None:
    """A first download without a published checksum is loaded weights-only and must hold the tensors its name
    expects before anything is installed or trusted: a code-running pickle, another network's weights or junk are
    refused with one line (nothing installed, no record, no code run), and the genuine file is accepted after."""
    bad = {"code": pickle.dumps({"0.weight": _RunsCode()}, protocol=4), "junk": STAND_IN,
           "wrong shape": _weights_file("adain-vgg", wrong=True)}[served]
    server.files["vgg_normalised.pth"] = bad
    dest = hub / "adain" / "vgg_normalised.pth"
    assert main(["fetch", "adain-vgg", "-q"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "did not deliver adain-vgg" in errors[0] and "Nothing was installed" in errors[0]
    assert not dest.exists() and not part_path(dest).exists() and weight_files.read_record(dest) is None
    assert not Path("/tmp/styletransfer-fetch-ran-code").exists()
    server.files["vgg_normalised.pth"] = _weights_file("adain-vgg")
    assert main(["fetch", "adain-vgg", "-q"]) == 0 and weight_files.read_record(dest) is not None


def test_server_down_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url, dest = f"http://127.0.0.1:{port}/alexnet.pth", tmp_path / "w" / "alexnet.pth"
    proc = subprocess.run([sys.executable, "-m", "styletransfer.cli.weights", "fetch", "alexnet", "--url", url,
                           "--dest", str(dest), "-q"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert url in errors[0] and "connection refused" in errors[0] and f"copy it to {dest}" in errors[0]
    assert not dest.exists() and not part_path(dest).exists()


def test_command_imports_no_torch_before_it_needs_a_path() -> None:
    code = "import sys, styletransfer.cli.weights; print(sorted({'torch', 'tqdm'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr
