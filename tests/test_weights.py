"""weights: local resolution, clear missing/offline errors, checksum-verified atomic downloads
(against a local HTTP server: good checksum, bad checksum, interrupted, 404, refused)."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from core import weights
from core.errors import DownloadError, InvalidOptionError, MissingWeightsError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"          # ~1 MB, several read chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        if self.path.startswith("/missing/"):
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if self.path.startswith("/truncated/"):
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])   # fewer bytes than promised, then close
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(PAYLOAD)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# -- download_file --------------------------------------------------------------------------------

def test_download_good_checksum(server, tmp_path):
    seen = []
    dst = tmp_path / "sub" / "model.pth"
    out = weights.download_file(f"{server}/ok/model.pth", dst, sha256=SHA, size=len(PAYLOAD),
                                progress=lambda d, t: seen.append((d, t)))
    assert out == dst and dst.read_bytes() == PAYLOAD
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert leftovers(dst.parent) == []


def test_download_bad_checksum_leaves_nothing(server, tmp_path):
    dst = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match="checksum") as e:
        weights.download_file(f"{server}/ok/model.pth", dst, sha256="0" * 64)
    assert "\n" not in str(e.value) and "model.pth" in str(e.value)
    assert not dst.exists() and leftovers(tmp_path) == []


def test_download_interrupted_leaves_nothing(server, tmp_path):
    dst = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match="interrupted"):
        weights.download_file(f"{server}/truncated/model.pth", dst)   # no checksum: length catches it
    assert not dst.exists() and leftovers(tmp_path) == []


def test_failed_download_keeps_existing_file(server, tmp_path):
    dst = tmp_path / "model.pth"
    dst.write_bytes(b"old good copy")
    with pytest.raises(DownloadError):
        weights.download_file(f"{server}/truncated/model.pth", dst, sha256=SHA)
    assert dst.read_bytes() == b"old good copy"


def test_download_http_error_and_offline(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        weights.download_file(f"{server}/missing/model.pth", tmp_path / "a.pth")
    # a port nobody listens on: refused, like being offline
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DownloadError) as e:
        weights.download_file(f"http://127.0.0.1:{port}/x.pth", tmp_path / "b.pth", size=375_042_383)
    msg = str(e.value)
    assert "\n" not in msg and "b.pth" in msg and "375.0 MB" in msg
    assert list(tmp_path.iterdir()) == []


# -- download() through the registry --------------------------------------------------------------

@pytest.fixture
def fake_sam(monkeypatch):
    """sam-vit-b pointing at our payload's checksum and size (the URL base comes from the env)."""
    spec = dataclasses.replace(weights.get_spec("sam-vit-b", "segment"), sha256=SHA, size_bytes=len(PAYLOAD))
    monkeypatch.setitem(weights.REGISTRY, ("segment", "sam-vit-b"), spec)
    return spec


def test_registry_download_with_url_base(server, fake_sam, monkeypatch, weights_dir):
    monkeypatch.setenv("BACKDROP_SAM_URL_BASE", f"{server}/ok/")
    path = weights_dir / fake_sam.filename
    path.unlink(missing_ok=True)
    try:
        assert not weights.is_present(fake_sam)
        got = weights.download("sam-vit-b", "segment")
        assert got == path and path.read_bytes() == PAYLOAD
        assert weights.is_present(fake_sam) and weights.resolve("sam-vit-b", "segment") == path
        assert weights.download("sam-vit-b", "segment") == path      # present: nothing to do
    finally:
        path.unlink(missing_ok=True)


def test_registry_download_bad_checksum(server, monkeypatch, weights_dir):
    monkeypatch.setenv("BACKDROP_SAM_URL_BASE", f"{server}/ok")     # real checksum won't match
    spec = dataclasses.replace(weights.get_spec("sam-vit-b", "segment"), size_bytes=len(PAYLOAD))
    monkeypatch.setitem(weights.REGISTRY, ("segment", "sam-vit-b"), spec)
    with pytest.raises(DownloadError, match="checksum"):
        weights.download("sam-vit-b", "segment")
    assert not weights.is_present(spec)


def test_explicit_url_override(server, fake_sam, weights_dir):
    path = weights_dir / fake_sam.filename
    try:
        with pytest.raises(DownloadError, match="interrupted"):
            weights.download("sam-vit-b", "segment", url=f"{server}/truncated/x.pth")
        assert not path.exists()
        assert weights.download("sam-vit-b", "segment", url=f"{server}/ok/x.pth") == path
        assert path.read_bytes() == PAYLOAD
    finally:
        path.unlink(missing_ok=True)


def test_repo_download_offline_is_one_line_and_leaves_nothing(weights_dir):
    # HF_HUB_OFFLINE=1 (conftest): snapshot_download refuses at once
    with pytest.raises(DownloadError) as e:
        weights.download("sd15-inpainting", "inpaint")
    msg = str(e.value)
    assert "\n" not in msg and "stable-diffusion-v1-5/stable-diffusion-inpainting" in msg
    assert not (weights_dir / "sd15-inpainting").exists()


def test_builtin_needs_no_download():
    with pytest.raises(InvalidOptionError, match="built in"):
        weights.download("grabcut", "segment")


def test_tiny_download_builds_in_code(tiny_inpaint):
    spec = weights.get_spec("tiny", "inpaint")
    assert weights.is_present(spec)
    assert weights.download("tiny", "inpaint") == tiny_inpaint == weights.resolve("tiny", "inpaint")


# -- resolution and messages ----------------------------------------------------------------------

def test_missing_single_file_message(weights_dir):
    with pytest.raises(MissingWeightsError) as e:
        weights.resolve("sam-vit-h", "segment")
    msg = str(e.value)
    assert "\n" not in msg
    assert str(weights_dir / "sam_vit_h_4b8939.pth") in msg and "2.56 GB" in msg
    assert "python -m core models download sam-vit-h" in msg


def test_missing_repo_message(weights_dir):
    with pytest.raises(MissingWeightsError) as e:
        weights.resolve("sdxl-inpainting", "inpaint")
    msg = str(e.value)
    assert str(weights_dir / "sdxl-inpainting") in msg and "13.90 GB" in msg
    assert "python -m core models download sdxl-inpainting" in msg


def test_half_written_folder_is_not_present(weights_dir):
    folder = weights_dir / "sd15-inpainting"
    folder.mkdir(exist_ok=True)
    try:
        assert not weights.is_present(weights.get_spec("sd15-inpainting", "inpaint"))
        with pytest.raises(MissingWeightsError):
            weights.resolve("sd15-inpainting", "inpaint")
    finally:
        folder.rmdir()


def test_spec_for_local_folder_and_repo_id(tmp_path, weights_dir):
    assert weights.spec_for("sd15-inpainting", "inpaint").repo_id == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    local = weights.spec_for(str(tmp_path), "inpaint")
    assert local.kind == "local" and weights.local_path(local) == tmp_path
    with pytest.raises(MissingWeightsError, match="model_index.json"):
        weights.resolve(str(tmp_path), "inpaint")
    (tmp_path / "model_index.json").write_text("{}")
    assert weights.resolve(str(tmp_path), "inpaint") == tmp_path
    repo = weights.spec_for("someone/my-inpainting", "inpaint")
    assert repo.repo_id == "someone/my-inpainting"
    assert weights.local_path(repo) == weights_dir / "someone--my-inpainting"
    with pytest.raises(MissingWeightsError, match="models download someone/my-inpainting"):
        weights.resolve("someone/my-inpainting", "inpaint")
    with pytest.raises(InvalidOptionError, match="known"):
        weights.spec_for("no-such-model", "inpaint")
    with pytest.raises(InvalidOptionError):
        weights.spec_for("someone/my-inpainting", "segment")


def test_env_weights_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path / "w"))
    assert weights.local_path(weights.get_spec("sam-vit-b", "segment")) == tmp_path / "w" / "sam_vit_b_01ec64.pth"


def test_list_models():
    rows = weights.list_models()
    names = {(r.task, r.name) for r in rows}
    assert names == set(weights.REGISTRY)
    grabcut = next(r for r in rows if r.name == "grabcut")
    assert grabcut.present and grabcut.path is None and grabcut.size_text == "-"
    sam = next(r for r in rows if r.name == "sam-vit-b")
    assert sam.size_text == "375.0 MB" and sam.path.name == "sam_vit_b_01ec64.pth"
    assert {r.task for r in weights.list_models("inpaint")} == {"inpaint"}
