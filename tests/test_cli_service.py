"""The CLI as a client of the team service (BACKDROP_SERVER_URL): `replace` and `batch` hand the
work to the running service (tests/conftest.py `service`), which records the runs in its history."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from serve_kit import TOKEN
from test_cli import assert_one_line_error, cli

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
