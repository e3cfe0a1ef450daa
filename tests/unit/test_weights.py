"""weights: local resolution, clear missing/offline errors, checksum-verified atomic downloads
(against a local HTTP server: good checksum, bad checksum, interrupted, 404, refused), resumed with
HTTP Range requests (206 appended, 200 restarts, 416 complete), and cancelled between chunks."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import threading
import time
from pathlib import Path

import pytest

from core import weights
from core.errors import CancelledError, DownloadError, InvalidOptionError, MissingWeightsError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"          # ~1 MB, several read chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


SENT: list[tuple[str, str | None, int, int]] = []   # (path, Range header, status, body bytes sent)


class _Handler(http.server.BaseHTTPRequestHandler):
    """/ok/ whole file; /missing/ 404; /truncated/ always a third then close; /range/ honours
    `Range: bytes=N-` (206, or 416 past the end); /cut/ like /range/ but a request from byte 0 is
    cut off half-way; /norange/ ignores Range (200); /slow/ like /range/ in 64 KiB chunks 20 ms
    apart."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # the client went away (cancel): fine
            pass

    def do_GET(self):
        rng = self.headers.get("Range")
        if self.path.startswith("/missing/"):
            self.send_error(404, "Not Found")
            return
        start = 0
        ranged = self.path.startswith(("/range/", "/cut/", "/slow/"))
        if ranged and rng:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(PAYLOAD):
                SENT.append((self.path, rng, 416, 0))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = PAYLOAD[start:]
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.startswith("/truncated/") or (self.path.startswith("/cut/") and not start):
            body = body[: len(PAYLOAD) // 2 if self.path.startswith("/cut/") else len(PAYLOAD) // 3]
            self.close_connection = True           # fewer bytes than promised, then close
        SENT.append((self.path, rng, 206 if start else 200, len(body)))
        if self.path.startswith("/slow/"):
            for i in range(0, len(body), 1 << 16):
                self.wfile.write(body[i:i + (1 << 16)])
                self.wfile.flush()
                time.sleep(0.02)
        else:
            self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def sent():
    SENT.clear()
    return SENT


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


def test_download_interrupted_keeps_only_our_partial(server, tmp_path):
    dst = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match="interrupted") as e:
        weights.download_file(f"{server}/truncated/model.pth", dst)   # no checksum: length catches it
    assert "\n" not in str(e.value) and "kept, run again to resume" in str(e.value)
    assert not dst.exists() and leftovers(tmp_path) == [".model.pth.backdrop.part"]
    assert weights.partial_path(dst).read_bytes() == PAYLOAD[: len(PAYLOAD) // 3]


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
    with pytest.raises(weights.HostUnreachableError) as e:
        weights.download_file(f"http://127.0.0.1:{port}/x.pth", tmp_path / "b.pth", size=375_042_383)
    msg = str(e.value)
    assert msg.startswith("can't reach the model host — offline? b.pth (375.0 MB)")
    assert "\n" not in msg and msg.endswith(f"to install it by hand, save it as {tmp_path / 'b.pth'}")
    assert "Error" not in msg and "Errno" not in msg
    assert list(tmp_path.iterdir()) == []


# -- resuming and cancelling ----------------------------------------------------------------------

def test_interrupted_download_resumes_with_range(server, sent, tmp_path):
    dst, half = tmp_path / "model.pth", len(PAYLOAD) // 2
    with pytest.raises(DownloadError, match="interrupted"):
        weights.download_file(f"{server}/cut/model.pth", dst, sha256=SHA, size=len(PAYLOAD))
    part = weights.partial_path(dst)
    assert not dst.exists() and part.read_bytes() == PAYLOAD[:half]
    seen = []
    out = weights.download_file(f"{server}/cut/model.pth", dst, sha256=SHA, size=len(PAYLOAD),
                                progress=lambda d, t: seen.append((d, t)))
    assert out == dst and dst.read_bytes() == PAYLOAD and not part.exists()
    assert sent[-1] == ("/cut/model.pth", f"bytes={half}-", 206, len(PAYLOAD) - half)
    assert seen[0] == (half, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert leftovers(tmp_path) == []


def test_server_without_range_support_restarts_from_zero(server, sent, tmp_path):
    dst = tmp_path / "model.pth"
    part = weights.partial_path(dst)
    part.write_bytes(PAYLOAD[:1000])
    weights.download_file(f"{server}/norange/model.pth", dst, sha256=SHA)
    assert sent[-1] == ("/norange/model.pth", "bytes=1000-", 200, len(PAYLOAD))
    assert dst.read_bytes() == PAYLOAD and not part.exists()


def test_corrupt_partial_is_deleted_on_checksum_mismatch(server, tmp_path):
    dst = tmp_path / "model.pth"
    part = weights.partial_path(dst)
    part.write_bytes(b"\xff" * 5000)                     # not the file's first bytes
    with pytest.raises(DownloadError, match="checksum mismatch") as e:
        weights.download_file(f"{server}/range/model.pth", dst, sha256=SHA)
    assert "\n" not in str(e.value) and "partial download was deleted" in str(e.value)
    assert not part.exists() and not dst.exists()
    weights.download_file(f"{server}/range/model.pth", dst, sha256=SHA)
    assert dst.read_bytes() == PAYLOAD


def test_complete_partial_is_verified_not_fetched_again(server, sent, tmp_path):
    dst = tmp_path / "model.pth"
    weights.partial_path(dst).write_bytes(PAYLOAD)
    weights.download_file(f"{server}/range/model.pth", dst, sha256=SHA)   # size unknown: 416
    assert sent[-1] == ("/range/model.pth", f"bytes={len(PAYLOAD)}-", 416, 0)
    assert dst.read_bytes() == PAYLOAD
    dst2 = tmp_path / "again.pth"
    weights.partial_path(dst2).write_bytes(PAYLOAD)
    n = len(sent)
    weights.download_file(f"{server}/range/again.pth", dst2, sha256=SHA, size=len(PAYLOAD))
    assert len(sent) == n and dst2.read_bytes() == PAYLOAD         # size known: no request at all
    too_long = tmp_path / "long.pth"
    weights.partial_path(too_long).write_bytes(PAYLOAD + b"x")
    with pytest.raises(DownloadError, match="wrong size"):
        weights.download_file(f"{server}/range/long.pth", too_long, size=len(PAYLOAD))
    assert not weights.partial_path(too_long).exists() and not too_long.exists()


def test_partial_name_that_is_not_a_regular_file_is_refused(server, tmp_path):
    dst = tmp_path / "model.pth"
    part = weights.partial_path(dst)
    part.mkdir()
    with pytest.raises(DownloadError, match="not a regular file") as e:
        weights.download_file(f"{server}/range/model.pth", dst)
    assert "\n" not in str(e.value) and part.is_dir() and not dst.exists()
    part.rmdir()
    users = tmp_path / "users-file.txt"
    users.write_bytes(b"mine")
    part.symlink_to(users)                               # a link must not make us write elsewhere
    with pytest.raises(DownloadError, match="not a regular file"):
        weights.download_file(f"{server}/range/model.pth", dst)
    assert users.read_bytes() == b"mine" and part.is_symlink() and not dst.exists()


def test_cancel_between_chunks_keeps_partial_then_resumes(server, sent, tmp_path):
    dst = tmp_path / "model.pth"
    stop = threading.Event()

    def progress(done, total):
        if done >= 200_000:
            stop.set()

    with pytest.raises(CancelledError) as e:
        weights.download_file(f"{server}/range/model.pth", dst, sha256=SHA, progress=progress,
                              cancel=stop, chunk=1 << 16)
    msg = str(e.value)
    assert "\n" not in msg and re.fullmatch(r"download of model\.pth cancelled; [\d.]+ MB kept to resume", msg)
    kept = weights.partial_path(dst).stat().st_size
    assert 200_000 <= kept < len(PAYLOAD) and not dst.exists()
    weights.download_file(f"{server}/range/model.pth", dst, sha256=SHA, cancel=lambda: False)
    assert sent[-1][1] == f"bytes={kept}-" and dst.read_bytes() == PAYLOAD


def test_cancel_from_another_thread_stops_a_slow_download(server, tmp_path):
    dst = tmp_path / "model.pth"
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()          # like the page's Cancel button
    t0 = time.monotonic()
    with pytest.raises(CancelledError, match="kept to resume"):
        weights.download_file(f"{server}/slow/model.pth", dst, sha256=SHA, cancel=stop)
    assert time.monotonic() - t0 < 5                # the whole file takes ~0.3 s per 1 MB
    assert 0 < weights.partial_path(dst).stat().st_size < len(PAYLOAD) and not dst.exists()


def test_second_download_of_the_same_file_is_refused_while_one_runs(server, tmp_path):
    dst = tmp_path / "model.pth"
    stop, holding, errors = threading.Event(), threading.Event(), []

    def cancel():                   # asked while the first holds the file's lock: hold it until told
        holding.set()
        return stop.wait(10)

    def first():
        try:
            weights.download_file(f"{server}/slow/model.pth", dst, cancel=cancel)
        except CancelledError as e:
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    assert holding.wait(10), "the first download never started"
    with pytest.raises(DownloadError, match="already being downloaded"):
        weights.download_file(f"{server}/range/model.pth", dst)
    stop.set()
    t.join(10)
    assert errors and not dst.exists()


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
    with pytest.raises(weights.HostUnreachableError) as e:
        weights.download("sd15-inpainting", "inpaint")
    msg = str(e.value)
    assert msg.startswith("can't reach the model host — offline? sd15-inpainting (4.27 GB): to install "
                          "it by hand, put model_index.json and the scheduler")
    assert "\n" not in msg and "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-inpainting" in msg
    assert msg.endswith(f" in {weights_dir / 'sd15-inpainting'}/") and "Error" not in msg
    assert not (weights_dir / "sd15-inpainting").exists()


def test_repo_download_bars_count_without_drawing(capfd):
    """snapshot_download builds its byte and file bars from weights._hf_tqdm: they forward the byte
    count to progress() and draw nothing on stderr (the CLI's `error:` line stays alone there)."""
    seen = []
    bar = weights._hf_tqdm(lambda done, total: seen.append((done, total)))(
        desc="Downloading bytes", total=1000, initial=0, unit="B", unit_scale=True)
    bar.update(400)
    bar.update(600)
    bar.close()
    assert list(weights._hf_tqdm(None)(range(3), desc="Fetching 3 files")) == [0, 1, 2]
    assert seen == [(400, 1000), (1000, 1000)]
    assert capfd.readouterr().err == ""


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


# -- fast-mode add-ons (task "fast") --------------------------------------------------------------

def test_fast_addons_are_listed_with_sizes_and_families():
    rows = {(r.task, r.name): r for r in weights.list_models("fast")}
    assert {n for _, n in rows} >= {"lcm-sd15", "lcm-sdxl", "tcd-sd15", "tcd-sdxl", "taesd", "taesdxl",
                                    "tiny-lcm", "tiny-taesd"}
    assert rows[("fast", "lcm-sd15")].size_text == "135.0 MB"
    assert rows[("fast", "tiny-lcm")].size_text == "built in code"
    for spec in weights.specs("fast"):
        assert spec.family in ("sd15", "sdxl", "tiny") and spec.task == "fast"
        assert spec.kind.startswith("tiny") or (spec.repo_id and spec.size_bytes)
    assert {s.task for s in weights.specs()} == set(weights.TASKS)


def test_missing_lora_and_taesd_messages(weights_dir):
    for name, size in (("lcm-sdxl", "394.0 MB"), ("taesd", "9.8 MB")):
        with pytest.raises(MissingWeightsError) as e:
            weights.resolve(name, "fast")
        msg = str(e.value)
        assert "\n" not in msg and size in msg and f"python -m core models download {name}" in msg


def test_fast_addon_download_offline_is_one_line_and_leaves_nothing(weights_dir):
    with pytest.raises(DownloadError) as e:
        weights.download("lcm-sd15", "fast")
    assert "\n" not in str(e.value) and "latent-consistency/lcm-lora-sdv1-5" in str(e.value)
    assert not (weights_dir / "lcm-sd15").exists()


def test_tiny_fast_addons_build_in_code(weights_dir):
    lora = weights.download("tiny-lcm", "fast")
    assert weights.lora_file(weights.get_spec("tiny-lcm", "fast")).is_file()
    assert weights.resolve("tiny-lcm", "fast") == lora
    tae = weights.download("tiny-taesd", "fast")
    assert (tae / "config.json").is_file() and weights.resolve("tiny-taesd", "fast") == tae


def test_model_family_from_the_registry_or_the_folder(tmp_path, tiny_inpaint):
    import json
    import shutil
    assert weights.model_family("sdxl-inpainting") == "sdxl"
    folder = tmp_path / "m"
    shutil.copytree(tiny_inpaint, folder)
    assert weights.model_family(str(folder)) == "tiny"
    cfg = folder / "unet" / "config.json"
    for dim, family in ((768, "sd15"), (2048, "sdxl"), (1024, "sd2"), (77, None)):
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "cross_attention_dim": dim}))
        assert weights.model_family(str(folder)) == family
    assert weights.model_family("someone/not-downloaded") is None


# -- what a model needs, sets of models, and `models download` --------------------------------------

def test_download_plan_brings_the_fast_addons_where_fast_is_the_default(monkeypatch):
    def plan(name, **kw):
        return [(s.task, s.name) for s in weights.download_plan(name, "inpaint", **kw)]

    monkeypatch.setenv("BACKDROP_MODE", "fast")
    assert plan("sd15-inpainting") == [("inpaint", "sd15-inpainting"), ("fast", "lcm-sd15"), ("fast", "taesd")]
    assert plan("sdxl-inpainting") == [("inpaint", "sdxl-inpainting"), ("fast", "lcm-sdxl"), ("fast", "taesdxl")]
    assert plan("sd15-inpainting", addons_for=False) == [("inpaint", "sd15-inpainting")]
    assert plan("someone/not-downloaded") == [("inpaint", "someone/not-downloaded")]   # family unknown yet
    monkeypatch.setenv("BACKDROP_MODE", "quality")
    assert plan("sd15-inpainting") == [("inpaint", "sd15-inpainting")]
    assert plan("sd15-inpainting", addons_for=True)[1:] == [("fast", "lcm-sd15"), ("fast", "taesd")]
    assert plan("tiny") == [("inpaint", "tiny"), ("fast", "tiny-lcm"), ("fast", "tiny-taesd")]


def test_starter_set_is_segmenter_model_and_the_default_modes_addons(monkeypatch):
    monkeypatch.delenv("BACKDROP_SEGMENTER", raising=False)
    monkeypatch.delenv("BACKDROP_INPAINT_MODEL", raising=False)
    monkeypatch.setenv("BACKDROP_MODE", "fast")
    assert [s.name for s in weights.starter_set()] == ["sam2-tiny", "sd15-inpainting", "lcm-sd15", "taesd"]
    monkeypatch.setenv("BACKDROP_MODE", "quality")
    assert [s.name for s in weights.starter_set()] == ["sam2-tiny", "sd15-inpainting"]
    assert [s.name for s in weights.starter_set("grabcut", "sdxl-inpainting", "fast")] == [
        "sdxl-inpainting", "lcm-sdxl", "taesdxl"]


def test_run_needs_the_model_and_in_fast_mode_its_lora_and_autoencoder():
    def needs(*args):
        return [s.name for s in weights.run_needs(*args)]

    assert needs("sd15-inpainting", "quality") == ["sd15-inpainting"]
    assert needs("sd15-inpainting", "fast") == ["sd15-inpainting", "lcm-sd15", "taesd"]
    assert needs("sd15-inpainting", "fast", None, "tcd") == ["sd15-inpainting", "tcd-sd15", "taesd"]
    assert needs("tiny", "fast", "tiny-lcm", "lcm") == ["tiny", "tiny-lcm", "tiny-taesd"]


def test_download_many_fetches_the_missing_ones_counting_bytes_over_the_set(server, fake_sam, monkeypatch,
                                                                            tmp_path):
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("BACKDROP_SAM_URL_BASE", f"{server}/ok/")
    chosen = [fake_sam, weights.get_spec("tiny-taesd", "fast"), weights.get_spec("tiny-lcm", "fast")]
    weights.download("tiny-lcm", "fast")                     # already there: skipped
    seen, items = [], []
    paths = weights.download_many(chosen, progress=lambda d, t: seen.append((d, t)),
                                  on_item=lambda i, s: items.append((i, s.name)))
    assert items == [(0, "sam-vit-b"), (1, "tiny-taesd")]
    assert paths == [weights.local_path(s) for s in chosen] and all(weights.is_present(s) for s in chosen)
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and all(t == len(PAYLOAD) for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_cli_models_download_names_the_addons_it_will_fetch(monkeypatch, capsys, tmp_path):
    from core.cli import main
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("BACKDROP_MODE", "fast")
    assert main(["models", "download", "sd15-inpainting", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"sd15-inpainting (inpaint, 4.27 GB) -> {tmp_path / 'sd15-inpainting'}",
        f"+ lcm-sd15 (fast, 135.0 MB) -> {tmp_path / 'lcm-sd15'}  (Fast mode's add-on: Fast is the default here)",
        f"+ taesd (fast, 9.8 MB) -> {tmp_path / 'taesd'}  (Fast mode's add-on: Fast is the default here)"]
    assert list(tmp_path.iterdir()) == []
    assert main(["models", "download", "sd15-inpainting", "--dry-run", "--no-addons"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_cli_models_download_offline_is_the_plain_line(monkeypatch, capsys, tmp_path):
    from core.cli import main
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    assert main(["models", "download", "taesd"]) == 2          # HF_HUB_OFFLINE=1 (conftest)
    err = capsys.readouterr().err.strip()
    assert err == (f"error: can't reach the model host — offline? taesd (9.8 MB): to install it by hand, "
                   f"put config.json and diffusion_pytorch_model.safetensors from "
                   f"https://huggingface.co/madebyollin/taesd in {tmp_path / 'taesd'}/")


def test_cli_models_download_tiny_builds_its_addons_too(monkeypatch, capsys, tmp_path):
    from core.cli import main
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))     # BACKDROP_MODE=quality (conftest)
    assert main(["models", "download", "tiny"]) == 0
    out = capsys.readouterr().out
    for task, name in (("segment", "tiny"), ("inpaint", "tiny"), ("fast", "tiny-lcm"),
                       ("fast", "tiny-taesd"), ("matte", "tiny")):
        assert weights.is_present(weights.get_spec(name, task)) and f"{name} ({task}): " in out


def test_what_sits_where_a_model_goes_is_never_replaced_and_the_cli_says_so(monkeypatch, capsys, tmp_path):
    """A file where a model's folder goes, a folder of someone's files where a download would land,
    a folder where a checkpoint file goes: one line naming the place, and the thing left as it was."""
    from core.cli import main
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "tiny-vitmatte").write_bytes(b"my notes")
    assert main(["models", "download", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot install tiny: ") and "tiny-vitmatte is a file" in err
    assert "\n" not in err and "Error" not in err
    assert (tmp_path / "tiny-vitmatte").read_bytes() == b"my notes"

    mine = tmp_path / "sd15-inpainting" / "keep.txt"      # checked before any network use
    mine.parent.mkdir()
    mine.write_text("mine")
    with pytest.raises(DownloadError, match="not a complete copy of the model; nothing was changed"):
        weights.download("sd15-inpainting", "inpaint")
    assert mine.read_text() == "mine"

    other = tmp_path / "other"
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(other))
    (other / "sam_tiny.pth").mkdir(parents=True)
    (other / "sam_tiny.pth" / "x").write_text("x")
    with pytest.raises(DownloadError, match="sam_tiny.pth is a folder"):
        weights.download("tiny", "segment")
    assert (other / "sam_tiny.pth" / "x").read_text() == "x"
