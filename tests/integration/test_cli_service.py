"""The CLI as a client of the team service (BACKDROP_SERVER_URL): `replace` and `batch` hand the
work to the running service (tests/conftest.py `service`), which records the runs in its history."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from serve_kit import TOKEN, free_port
from cli_kit import ROOT, assert_one_line_error, cli
from waiting import wait_until

pytest.importorskip("httpx")


def _ellipse(h, w):
    yy, xx = np.mgrid[:h, :w]
    return np.where(((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1, 255, 0).astype(np.uint8)


@pytest.fixture
def remote(service, monkeypatch):
    monkeypatch.setenv("BACKDROP_SERVER_URL", service["url"])
    monkeypatch.setenv("BACKDROP_API_TOKEN", TOKEN)
    from core.service.client import ServiceClient
    with ServiceClient() as client:
        yield client


def _service_runs(client, name_part: str) -> list[dict]:
    return [r for r in client.runs(limit=100)["runs"] if name_part in (r.get("source_name") or "")]


def test_replace_runs_on_the_service_and_is_recorded_there(remote, tmp_path, chelsea):
    photo, mask = tmp_path / "kitty-remote.png", tmp_path / "kitty-mask.png"
    Image.fromarray(chelsea[:160, :200]).save(photo)
    Image.fromarray(_ellipse(160, 200)).save(mask)
    out = tmp_path / "out.png"
    proc = cli("replace", photo, "--mask", mask, "--background", "color:#00ff00", "--out", out)
    assert "history run" in proc.stdout
    result = np.asarray(Image.open(out))
    assert result.shape == (160, 200, 3) and (result[0, 0] == (0, 255, 0)).all()
    assert _service_runs(remote, "kitty-remote.png")                      # in the service's history
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.png"))


def test_batch_fans_out_over_the_service_and_resumes(remote, tmp_path, coffee):
    folder, masks = tmp_path / "remote-shoot", tmp_path / "masks"
    folder.mkdir(), masks.mkdir()
    for i in range(4):
        img = np.roll(coffee[:120, :150], 7 * i, axis=1)
        Image.fromarray(img).save(folder / f"p{i}.png")
        Image.fromarray(_ellipse(120, 150)).save(masks / f"p{i}.png")
    (folder / "bad.png").write_bytes(b"\x89PNG garbage")
    out = tmp_path / "out"
    first = cli("batch", folder, "--out", out, "--masks", masks, "--background", "color:#102030",
                "--workers", "3", check=False)
    assert first.returncode == 1 and "4 done, 0 already done, 1 failed" in first.stdout
    assert sorted(p.name for p in out.iterdir()) == [f"p{i}.png" for i in range(4)]
    assert len(_service_runs(remote, "remote-shoot/")) == 4
    assert {r["batch"] for r in _service_runs(remote, "remote-shoot/")} == {"remote-shoot"}   # sent as one
    again = cli("batch", folder, "--out", out, "--masks", masks, "--background", "color:#102030",
                check=False)
    assert "0 done, 4 already done, 1 failed" in again.stdout
    assert len(_service_runs(remote, "remote-shoot/")) == 4               # nothing ran twice


def test_a_wrong_token_or_no_service_is_one_line(service, monkeypatch, tmp_path, chelsea):
    photo = tmp_path / "p.png"
    Image.fromarray(chelsea[:64, :64]).save(photo)
    monkeypatch.setenv("BACKDROP_SERVER_URL", service["url"])
    monkeypatch.setenv("BACKDROP_API_TOKEN", "wrong")
    proc = cli("replace", photo, "--box", "5,5,50,50", "--segmenter", "grabcut", "--background",
               "color:#fff", "--out", tmp_path / "o.png", check=False)
    assert_one_line_error(proc)
    monkeypatch.setenv("BACKDROP_SERVER_URL", "http://127.0.0.1:9")     # nothing listens there
    proc = cli("replace", photo, "--box", "5,5,50,50", "--segmenter", "grabcut", "--background",
               "color:#fff", "--out", tmp_path / "o.png", check=False)
    assert_one_line_error(proc, "cannot reach the Backdrop service")


def test_a_password_in_the_service_url_is_never_shown(monkeypatch, tmp_path, chelsea):
    photo = tmp_path / "p.png"
    Image.fromarray(chelsea[:64, :64]).save(photo)
    monkeypatch.setenv("BACKDROP_SERVER_URL", "http://alice:hunter2@127.0.0.1:9")
    proc = cli("replace", photo, "--box", "5,5,50,50", "--segmenter", "grabcut", "--background",
               "color:#fff", "--out", tmp_path / "o.png", check=False)
    line = assert_one_line_error(proc, "http://127.0.0.1:9")
    assert "hunter2" not in proc.stderr + proc.stdout and "alice" not in line


# -------------------------------------------------------- hostile use (issue 18, round 2) --
def _serve(*args, timeout: float = 90) -> subprocess.CompletedProcess:
    """`python -m core serve ...` in its own process group; one that is still running after
    `timeout` s (it did not refuse) is stopped with its whole group and reported as exit -9."""
    proc = subprocess.Popen([sys.executable, "-m", "core", "serve", *map(str, args)], cwd=ROOT,
                            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, -9, out, err)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _photo_and_mask(tmp_path, photo: np.ndarray, name: str):
    h, w = photo.shape[:2]
    path, mask = tmp_path / name, tmp_path / f"mask-{name}"
    Image.fromarray(photo).save(path)
    Image.fromarray(_ellipse(h, w)).save(mask)
    return path, mask


def test_a_token_from_a_secret_file_works_and_a_bad_one_is_never_shown(service, monkeypatch,
                                                                       tmp_path, chelsea):
    from core.service.config import ServiceConfig
    assert ServiceConfig.from_env({"BACKDROP_API_TOKEN": f"{TOKEN}\n"}).token == TOKEN
    photo, mask = _photo_and_mask(tmp_path, chelsea[:48, :64], "token.png")
    monkeypatch.setenv("BACKDROP_SERVER_URL", service["url"])
    monkeypatch.setenv("BACKDROP_API_TOKEN", f" {TOKEN}\n")          # as read from a secret file
    cli("replace", photo, "--mask", mask, "--background", "color:#fff", "--out", tmp_path / "o.png")
    for bad in ("tök-SECRET", "tok-SECRET\x01", "tok SECRET"):
        monkeypatch.setenv("BACKDROP_API_TOKEN", bad)
        proc = cli("replace", photo, "--mask", mask, "--background", "color:#fff",
                   "--out", tmp_path / "o.png", check=False)
        assert_one_line_error(proc, "BACKDROP_API_TOKEN")
        assert "SECRET" not in proc.stderr + proc.stdout


def test_serve_refuses_the_network_without_a_token_and_cross_site_posts(service):
    proc = _serve("--host", "0.0.0.0", "--port", free_port())          # no BACKDROP_API_TOKEN here
    assert_one_line_error(proc, "BACKDROP_API_TOKEN", "--host 127.0.0.1")
    import httpx
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for header in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = httpx.post(f"{service['url']}/v1/replace", headers={**auth, **header},
                       data={"spec": '{"background": "transparent"}'})
        assert r.status_code == 403 and "cross-site" in r.json()["error"], r.text
    host = service["url"].split("/")[2]                    # the service's own pages (/docs) may post
    r = httpx.post(f"{service['url']}/v1/replace", headers={**auth, "Origin": f"http://{host}"}, json={})
    assert r.status_code == 422, r.text


def test_serve_on_a_busy_port_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _serve("--port", port)
    assert_one_line_error(proc, f"port {port} on 127.0.0.1 is in use")


def test_no_history_is_refused_in_team_mode(remote, tmp_path, chelsea):
    photo, mask = _photo_and_mask(tmp_path, chelsea[:48, :64], "no-history.png")
    proc = cli("replace", photo, "--mask", mask, "--background", "color:#fff", "--out", tmp_path / "o.png",
               "--no-history", check=False)
    assert_one_line_error(proc, "--no-history", "team mode")
    folder = tmp_path / "no-history-shoot"
    folder.mkdir()
    Image.fromarray(chelsea[:48, :64]).save(folder / "a.png")
    proc = cli("batch", folder, "--out", tmp_path / "out", "--rel-box", "0.1,0.1,0.9,0.9", "--segmenter",
               "grabcut", "--background", "color:#fff", "--no-history", check=False)
    assert_one_line_error(proc, "--no-history", "team mode")
    assert not (tmp_path / "o.png").exists() and not _service_runs(remote, "no-history")


def test_history_list_in_team_mode_lists_the_services_runs(remote, chelsea):
    out = remote.replace({"background": "transparent"}, photo=chelsea[:40, :50], mask=_ellipse(40, 50),
                         source_name="listed-remotely.png")
    rows = json.loads(cli("history", "list", "--json", "--limit", "3").stdout)
    assert [r["id"] for r in rows] == [r["id"] for r in remote.runs(limit=3)["runs"]]
    assert out["run_id"] in [r["id"] for r in rows]
    text = cli("history", "list", "--limit", "3").stdout
    assert remote.display_url in text and f"{out['run_id']:>6}" in text
    # --batch asks the service for one batch's runs (GET /v1/runs?batch=)
    shoot = remote.replace({"background": "transparent"}, photo=chelsea[:40, :50], mask=_ellipse(40, 50),
                           source_name="listed-shoot/a.png", batch="listed-shoot")   # no other test's
    [row] = json.loads(cli("history", "list", "--json", "--batch", "listed-shoot").stdout)
    assert (row["id"], row["batch"]) == (shoot["run_id"], "listed-shoot")


def test_a_batch_killed_mid_photo_is_recorded_once(remote, tmp_path, astronaut, tiny_inpaint):
    folder, masks, out = tmp_path / "killed-shoot", tmp_path / "masks", tmp_path / "out"
    folder.mkdir(), masks.mkdir()
    Image.fromarray(astronaut).save(folder / "p.png")
    Image.fromarray(_ellipse(512, 512)).save(masks / "p.png")
    args = ["batch", folder, "--out", out, "--masks", masks, "--background", "sd",
            "--prompt", "a quiet harbour", "--model", "tiny", "--mode", "quality", "--steps", "25",
            "--seed", "3"]
    proc = subprocess.Popen([sys.executable, "-m", "core", *map(str, args)], cwd=ROOT, env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:                                   # kill the batch while the service paints its photo
        def painting():
            assert proc.poll() is None, "the batch ended before the service painted"
            return any(r["status"] == "running" for r in _service_runs(remote, "killed-shoot/"))
        wait_until(painting, 180, "the service to paint the batch's photo")
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "p.png").exists()
    again = cli(*args)
    assert "1 done, 0 already done, 0 failed" in again.stdout and (out / "p.png").is_file()
    runs = _service_runs(remote, "killed-shoot/")
    assert [r["status"] for r in runs] == ["succeeded"], runs
    (out / "p.png").unlink()                  # the output lost: the service's run is reused again
    assert "1 done" in cli(*args).stdout and len(_service_runs(remote, "killed-shoot/")) == 1
    (out / "p.png").unlink()                  # another mask is another run
    Image.fromarray(255 - _ellipse(512, 512)).save(masks / "p.png")
    assert "1 done" in cli(*args).stdout and len(_service_runs(remote, "killed-shoot/")) == 2
