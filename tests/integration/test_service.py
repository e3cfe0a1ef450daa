"""The service (core/service): a real Ray Serve application on one local Ray cluster per session,
tiny models, real HTTP through Serve's proxy. Marked `service`.

One cluster for the whole file (ray.init(num_cpus=2) ~6 s); one application with a bearer token,
1 replica per deployment (num_cpus=0, so two CPUs are enough), its own data dir; the weights dir is
the session's, so tiny models built by the conftest fixtures are seen by the replicas.
"""
from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

from core.service.api import authorized  # noqa: E402

pytestmark = pytest.mark.service

from serve_kit import PREFIX, TOKEN  # noqa: E402  (the `service` fixture is in conftest.py)


@pytest.fixture
def api(service):
    with httpx.Client(base_url=service["url"], timeout=120,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def _png(arr: np.ndarray) -> bytes:
    from core.images import encode_png
    return encode_png(arr)


def _ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.where(((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1, 255, 0).astype(np.uint8)


def _decode(blob: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(blob)))


def _one_line_error(r, *statuses):
    assert r.status_code in statuses, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    line = body["error"]
    assert line and "\n" not in line and "Traceback" not in line and "File \"" not in line, line
    assert r.status_code < 500
    return line


# ------------------------------------------------------------------------------------ the API --
def test_replace_color_runs_files_end_to_end(api, service, chelsea):
    h, w = chelsea.shape[:2]
    spec = {"background": "color:#00ff00", "mask": {"feather": 2}}
    r = api.post("/v1/replace", files={"photo": ("cat.png", _png(chelsea), "image/png"),
                                        "mask": ("mask.png", _png(_ellipse(h, w)), "image/png")},
                 data={"spec": json.dumps(spec), "source_name": "cat.png"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "succeeded" and len(out["outputs"]) == 1 and out["mask"]
    run_id, digest = out["run_id"], out["outputs"][0]["hash"]

    listed = api.get("/v1/runs", params={"background": "color", "total": "true"}).json()
    assert run_id in [r["id"] for r in listed["runs"]] and listed["total"] >= 1

    run = api.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["source_name"] == "cat.png"
    assert run["spec"]["background"]["color"] == [0, 255, 0] and run["spec"]["mask"]["feather"] == 2
    assert [o["hash"] for o in run["outputs"]] == [digest]
    assert str(service["data"]) not in json.dumps(run)        # no server paths leak out

    f = api.get(f"/v1/files/{digest}")
    assert f.status_code == 200 and f.headers["content-type"] == "image/png"
    img = _decode(f.content)
    assert img.shape == chelsea.shape
    inside = _ellipse(h, w) == 255
    from core.masks import grow
    core_region = grow(_ellipse(h, w), -3) == 255
    assert np.array_equal(img[core_region], chelsea[core_region])          # the subject kept
    assert (img[~inside] == [0, 255, 0]).all()                            # the new background
    assert api.get(f"/v1/files/{digest}", params={"thumb": "true"}).headers["content-type"] == "image/webp"

    # the same photo again, from the history by its hash, segmented with clicks on tiny SAM
    source = run["source"]["hash"]
    spec2 = {"background": "blur:4", "subject": {"clicks": [[w / 2, h / 2]], "segmenter": "tiny"}}
    r2 = api.post("/v1/replace", json={"source": source, "spec": spec2})
    assert r2.status_code == 200, r2.text
    run2 = api.get(f"/v1/runs/{r2.json()['run_id']}").json()
    assert run2["source"]["hash"] == source and run2["spec"]["subject"]["segmenter"] == "tiny"
    assert api.get("/v1/runs", params={"source": source}).json()["runs"][0]["id"] == run2["id"]


def test_runs_filter_by_batch(api, chelsea):
    """GET /v1/runs?batch=NAME: the runs a batch recorded (`batch` names it, as `python -m core
    batch` does in team mode), each with its batch; one photo's run is in none."""
    h, w = chelsea.shape[:2]
    ids = {}
    for name in ("api-shoot/a.png", "api-shoot/b.png", "api-single.png"):
        batch = {"batch": "api-shoot"} if "/" in name else {}
        r = api.post("/v1/replace", files={"photo": ("p.png", _png(chelsea), "image/png"),
                                           "mask": ("m.png", _png(_ellipse(h, w)), "image/png")},
                     data={"spec": json.dumps({"background": "color:#ffffff"}), "source_name": name,
                           **batch})
        assert r.status_code == 200, r.text
        ids[name] = r.json()["run_id"]
    page = api.get("/v1/runs", params={"batch": "api-shoot", "total": "true"}).json()
    assert sorted(r["id"] for r in page["runs"]) == sorted([ids["api-shoot/a.png"], ids["api-shoot/b.png"]])
    assert page["total"] == 2 and {r["batch"] for r in page["runs"]} == {"api-shoot"}
    assert api.get(f"/v1/runs/{ids['api-single.png']}").json()["batch"] is None
    assert api.get("/v1/runs", params={"batch": "api-nothing"}).json()["runs"] == []


def test_a_source_name_with_a_folder_is_no_batch(api, chelsea):
    """One API run whose source name has a "/" ("slash-shoot/IMG_1.jpg", a client's folder) is a
    run of one photo: its batch is null and GET /v1/runs?batch=slash-shoot does not list it."""
    h, w = chelsea.shape[:2]
    r = api.post("/v1/replace", files={"photo": ("p.png", _png(chelsea), "image/png"),
                                       "mask": ("m.png", _png(_ellipse(h, w)), "image/png")},
                 data={"spec": json.dumps({"background": "color:#ffffff"}),
                       "source_name": "slash-shoot/IMG_1.jpg"})
    assert r.status_code == 200, r.text
    run = api.get(f"/v1/runs/{r.json()['run_id']}").json()
    assert run["source_name"] == "slash-shoot/IMG_1.jpg" and run["batch"] is None
    page = api.get("/v1/runs", params={"batch": "slash-shoot", "total": "true"}).json()
    assert page["runs"] == [] and page["total"] == 0


def test_replace_sd_on_the_tiny_model(api, chelsea, tiny_inpaint):
    h, w = chelsea.shape[:2]
    spec = {"background": "sd", "generation": {"prompt": "a red barn", "steps": 2, "seed": 7,
                                               "variants": 2, "model": "tiny"}}
    r = api.post("/v1/replace", files={"photo": ("cat.png", _png(chelsea), "image/png"),
                                        "mask": ("m.png", _png(_ellipse(h, w)), "image/png")},
                 data={"spec": json.dumps(spec)})
    assert r.status_code == 200, r.text
    out = r.json()
    assert [o["seed"] for o in out["outputs"]] == [7, 8] and "diffusion" in out["timings"]
    run = api.get(f"/v1/runs/{out['run_id']}").json()
    assert run["prompt"] == "a red barn" and run["model"] == "tiny"
    for o in out["outputs"]:
        assert _decode(api.get(o["url"].removeprefix(PREFIX)).content).shape == chelsea.shape
    found = api.get("/v1/runs", params={"q": "barn"}).json()["runs"]
    assert [r["id"] for r in found] == [out["run_id"]]


def test_embed_then_segment_by_handle(api, chelsea):
    h, w = chelsea.shape[:2]
    r = api.post("/v1/embed", files={"photo": ("cat.png", _png(chelsea), "image/png")},
                 data={"segmenter": "tiny"})
    assert r.status_code == 200, r.text
    handle = r.json()["embedding"]
    assert handle.startswith("tiny:") and (r.json()["width"], r.json()["height"]) == (w, h)

    seg = api.post("/v1/segment", json={"embedding": handle,
                                        "request": {"clicks": [[w / 2, h / 2, 1]], "multimask": True}})
    assert seg.status_code == 200, seg.text
    body = seg.json()
    assert len(body["masks"]) == len(body["scores"]) == 3 and 0 <= body["best"] < 3
    assert body["embedded"] is False                   # the click reused the embedding
    import base64
    mask = _decode(base64.b64decode(body["masks"][body["best"]]))
    assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}

    small = api.post("/v1/segment", files={"photo": ("cat.png", _png(chelsea), "image/png")},
                     data={"segmenter": "tiny", "width": "90", "height": "60",
                           "request": json.dumps({"box": [100, 50, 300, 250], "multimask": False})})
    assert small.status_code == 200, small.text
    assert (small.json()["width"], small.json()["height"]) == (90, 60) and len(small.json()["masks"]) == 1

    gone = api.post("/v1/segment", json={"embedding": "tiny:" + "0" * 64,
                                         "request": {"clicks": [[5, 5]]}})
    assert "send the photo again" in _one_line_error(gone, 422)
    outside = api.post("/v1/segment", json={"embedding": handle, "request": {"clicks": [[w + 5, 5]]}})
    assert "outside" in _one_line_error(outside, 422)


def test_bearer_token_is_required(service, chelsea):
    url = service["url"]
    assert httpx.get(f"{url}/v1/runs").status_code == 401
    assert "bearer token" in _one_line_error(httpx.get(f"{url}/v1/runs"), 401)
    wrong = httpx.get(f"{url}/v1/runs", headers={"Authorization": "Bearer nope"})
    assert "not valid" in _one_line_error(wrong, 401)
    assert httpx.post(f"{url}/v1/replace", json={}).status_code == 401
    ok = httpx.get(f"{url}/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and "runs" in ok.json()
    schema = httpx.get(f"{url}/openapi.json").json()            # the OpenAPI page needs no token
    assert schema["info"]["title"] == "Backdrop API" and "/v1/replace" in schema["paths"]
    assert {"RunSpec", "ReplaceJson", "ReplaceForm", "Generation"} <= set(schema["components"]["schemas"])
    docs = httpx.get(f"{url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert authorized(None, None) and authorized("", "")           # no token set: open
    assert authorized(f"Bearer {TOKEN}", TOKEN) and not authorized("Basic abc", TOKEN)


def _huge_png(width: int = 10_000, height: int = 7_000) -> bytes:
    """A real, valid greyscale PNG of width x height zeros (70 MP), ~70 KB compressed."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    z = zlib.compressobj(9)
    row = bytes(width + 1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_bad_inputs_are_4xx_with_one_line(api, chelsea):
    photo = ("cat.png", _png(chelsea), "image/png")
    color = json.dumps({"background": "color:#fff", "subject": {"box": [10, 10, 200, 200],
                                                                 "segmenter": "tiny"}})

    garbage = api.post("/v1/replace", files={"photo": ("x.jpg", b"\x00garbage" * 50, "image/jpeg")},
                       data={"spec": color})
    assert "could not read" in _one_line_error(garbage, 400, 422)

    huge = api.post("/v1/replace", files={"photo": ("big.png", _huge_png(), "image/png")},
                    data={"spec": color})
    assert "70" in _one_line_error(huge, 413, 422)

    too_big = api.post("/v1/embed", files={"photo": ("x.png", b"\0" * (9 * 2**20), "image/png")})
    assert "limit" in _one_line_error(too_big, 413)

    unknown_model = json.dumps({"background": "sd", "subject": {"box": [10, 10, 200, 200],
                                                                "segmenter": "tiny"},
                                "generation": {"prompt": "x", "model": "no-such-model"}})
    r = api.post("/v1/replace", files={"photo": photo}, data={"spec": unknown_model})
    assert "no-such-model" in _one_line_error(r, 422)

    steps = {"background": "sd", "generation": {"prompt": "x", "steps": 0, "model": "tiny"}}
    r = api.post("/v1/replace", json={"source": "a" * 64, "spec": steps})
    assert _one_line_error(r, 422) == "steps must be from 1 to 150, got 0"

    r = api.post("/v1/replace", files={"photo": photo},
                 data={"spec": json.dumps({"background": "color:#fff",
                                           "subject": {"box": [1, 1, 9, 9], "segmenter": "nope"}})})
    assert "unknown segmenter" in _one_line_error(r, 422)
    assert "no subject" in _one_line_error(api.post("/v1/replace", files={"photo": photo},
                                                    data={"spec": '{"background": "transparent"}'}), 422)
    assert "unknown option" in _one_line_error(
        api.post("/v1/replace", json={"spec": {"background": "sd", "wat": 1}}), 422)
    assert "JSON" in _one_line_error(api.post("/v1/replace", content=b"{nope",
                                              headers={"content-type": "application/json"}), 400)
    assert "no photo with hash" in _one_line_error(
        api.post("/v1/replace", json={"source": "b" * 64, "spec": {"background": "transparent",
                                                                   "subject": {"box": [0, 0, 5, 5],
                                                                               "segmenter": "tiny"}}}), 404)
    assert "no run" in _one_line_error(api.get("/v1/runs/999999"), 404)
    assert _one_line_error(api.get("/v1/runs/abc"), 422)
    assert _one_line_error(api.get("/v1/files/" + "c" * 64), 404)
    assert _one_line_error(api.get("/v1/files/..%2Fhistory.db"), 404)
    assert _one_line_error(api.get("/v1/runs", params={"limit": 0}), 422)
    assert _one_line_error(api.get("/v1/runs", params={"cursor": "bogus"}), 422)


def test_python_client_round_trip_and_errors(service, chelsea):
    from core.errors import ImageError, InvalidOptionError
    from core.images import LoadedImage
    from core.service.client import ServiceClient
    from core.spec import RunSpec

    h, w = chelsea.shape[:2]
    with ServiceClient(service["url"], token=TOKEN) as client:
        out = client.replace(RunSpec(background="transparent"), photo=LoadedImage(rgb=chelsea),
                             mask=_ellipse(h, w), source_name="client.png")
        run = client.run(out["run_id"])
        assert run["source_name"] == "client.png" and run["spec"]["background"]["kind"] == "transparent"
        rgba = _decode(client.file(out["outputs"][0]["hash"]))
        assert rgba.shape == (h, w, 4) and rgba[h // 2, w // 2, 3] == 255 and rgba[0, 0, 3] == 0

        first = client.runs(limit=1)
        assert len(first["runs"]) == 1 and first["next_cursor"]
        second = client.runs(limit=1, cursor=first["next_cursor"])
        assert second["runs"][0]["id"] < first["runs"][0]["id"]

        seg = client.segment({"clicks": [[w / 2, h / 2]]}, photo=chelsea, segmenter="tiny")
        assert seg["masks"].dtype == bool and seg["masks"].shape[1:] == (h, w)

        with pytest.raises(ImageError, match="could not read"):
            client.replace(RunSpec(background="transparent"), photo=b"not a photo", mask=_ellipse(h, w))
        with pytest.raises(InvalidOptionError, match="steps must be from 1 to 150"):
            client.replace({"background": "sd", "generation": {"prompt": "x", "steps": 999}},
                           source=run["source"]["hash"])
    with ServiceClient(service["url"], token="wrong") as client:
        with pytest.raises(Exception, match="not valid"):
            client.runs()


# -------------------------------------------------------- hostile requests (issue 18, round 2) --
def _masked(photo: np.ndarray) -> dict:
    h, w = photo.shape[:2]
    return {"photo": ("p.png", _png(photo), "image/png"), "mask": ("m.png", _png(_ellipse(h, w)), "image/png")}


def _named_runs(api, name: str) -> list[dict]:
    return [r for r in api.get("/v1/runs", params={"limit": 200}).json()["runs"] if r["source_name"] == name]


def test_generation_model_is_a_registry_name_and_no_server_path_comes_back(api, chelsea, tiny_inpaint,
                                                                           weights_dir):
    files = _masked(chelsea[:64, :80])
    lines = set()
    for model in ("/etc", "/nonexistent", str(tiny_inpaint), "../tiny-inpainting"):
        spec = {"background": "sd", "generation": {"prompt": "x", "steps": 1, "model": model}}
        r = api.post("/v1/replace", files=files, data={"spec": json.dumps(spec), "source_name": "probe.png"})
        lines.add(_one_line_error(r, 422).replace(repr(model), "MODEL"))
    assert len(lines) == 1 and "never a file" in lines.pop()    # one answer for all: no directory probe
    assert not _named_runs(api, "probe.png")

    # a registry model this service has not downloaded: refused before any work, naming what it
    # has and how to add one (the document's enum lists only those), without server paths
    spec = {"background": "sd", "generation": {"prompt": "x", "steps": 1, "model": "sd15-inpainting"}}
    r = api.post("/v1/replace", files=files, data={"spec": json.dumps(spec), "source_name": "no-weights.png"})
    line = _one_line_error(r, 422)
    assert "'sd15-inpainting'" in line and "tiny" in line and "models download" in line
    assert str(weights_dir) not in line and "/tmp" not in line, line
    assert not _named_runs(api, "no-weights.png")
    doc = api.get("/openapi.json").json()
    assert "sd15-inpainting" not in doc["components"]["schemas"]["Generation"]["properties"]["model"]["enum"]


def test_segment_masks_have_the_upload_pixel_cap(api, chelsea):
    from core.images import MAX_PIXELS
    request = json.dumps({"box": [5, 5, 50, 50], "multimask": False})
    r = api.post("/v1/segment", files={"photo": ("p.png", _png(chelsea[:64, :64]), "image/png")},
                 data={"segmenter": "tiny", "request": request, "width": "65535",
                       "height": str(MAX_PIXELS // 65535 + 1)})
    assert "width must be at most" in _one_line_error(r, 422)     # a side of the cap's square


def test_a_chunked_body_is_cut_off_at_the_limit(service):
    """A body without Content-Length is counted as it arrives: the 413 comes once the limit (8 MB
    here) is passed, not after the whole body was read."""
    import select
    import socket
    import time
    from urllib.parse import urlsplit

    url = urlsplit(service["url"])
    total, chunk = 200 * 2**20, 2**20
    frame = f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"
    sent = 0
    with socket.create_connection((url.hostname, url.port), timeout=5) as s:
        s.sendall(f"POST {url.path}/v1/replace HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
                  f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n".encode())
        try:
            while sent < total and not select.select([s], [], [], 0)[0]:
                s.sendall(frame)
                sent += chunk
                time.sleep(0.005)
            if sent >= total:
                s.sendall(b"0\r\n\r\n")
        except OSError:           # the service answered and closed while we were still sending
            pass
        s.settimeout(60)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            part = s.recv(65536)
            if not part:
                break
            reply += part
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split()[1] == b"413", head
    assert "8 MB" in json.loads(body[body.index(b"{"):body.rindex(b"}") + 1])["error"]
    assert sent <= total // 2, f"{sent / 2**20:.0f} MB were sent before the 413"


def test_out_of_range_ids_dates_and_deep_json_are_4xx(api):
    for run_id in ("9223372036854775808", "13086758435662915584", "0", "-1"):
        _one_line_error(api.get(f"/v1/runs/{run_id}"), 404, 422)
    for when in ("0001-01-01T00:00:00+14:00", "1453-08-19T21:26:13+07:56", "9999-12-31T23:59:59-14:00"):
        for key in ("since", "until"):
            r = api.get("/v1/runs", params={key: when})
            if r.status_code != 200:
                _one_line_error(r, 422)
    deep = b"[" * 100_000 + b"]" * 100_000
    _one_line_error(api.post("/v1/replace", content=deep, headers={"content-type": "application/json"}), 400)
    _one_line_error(api.post("/v1/replace", content=b'{"spec": ' + deep + b"}",
                             headers={"content-type": "application/json"}), 400)
    _one_line_error(api.post("/v1/replace", files={"photo": ("p.png", b"x", "image/png")},
                             data={"spec": deep.decode()}), 400)


def test_form_text_fields_are_never_parsed_as_json(api, chelsea):
    for name in ("[2024] beach.png", "{shoot} 1.png"):
        r = api.post("/v1/replace", files=_masked(chelsea[:48, :64]),
                     data={"spec": json.dumps({"background": "transparent"}), "source_name": name})
        assert r.status_code == 200, r.text
        assert api.get(f"/v1/runs/{r.json()['run_id']}").json()["source_name"] == name


def test_a_file_part_without_a_filename_is_read_as_the_bytes_sent(api, chelsea):
    """multipart/form-data parts for `photo` / `mask` are files whether or not the client names a
    filename (schemathesis and some HTTP libraries don't): the bytes arrive as sent, not decoded as
    text (a PNG is not UTF-8)."""
    boundary = "bd-test-boundary"
    photo = _png(chelsea[:48, :64])
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + photo + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"segmenter\"\r\n\r\ntiny"
            f"\r\n--{boundary}--\r\n").encode()
    r = api.post("/v1/embed", content=body,
                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    from core.images import load_image
    assert r.json()["image"] == load_image(photo).hash and (r.json()["width"], r.json()["height"]) == (64, 48)


def test_a_failed_runs_error_read_through_the_api_shows_no_server_path(api, service, chelsea, monkeypatch):
    """Issue 18 case 8: a run that failed on the service with a path in its error (a model folder,
    the weights dir) is read through /v1/runs and /v1/runs/{id} with the path cut to its last part."""
    from core.history import open_store
    from core.spec import RunSpec
    monkeypatch.setenv("BACKDROP_DATA_DIR", str(service["data"]))
    monkeypatch.setenv("BACKDROP_DATABASE_URL", f"sqlite:///{service['data'] / 'history.db'}")
    store = open_store()
    run_id = store.start_run(source=chelsea[:40, :40].copy(), spec=RunSpec(background="transparent"),
                             source_name="path-probe.png")
    store.fail_run(run_id, "cannot load /srv/backdrop/weights/secret-model/unet: broken file")
    [listed] = _named_runs(api, "path-probe.png")
    one = api.get(f"/v1/runs/{run_id}").json()
    for error in (listed["error"], one["error"]):
        assert "/srv/backdrop" not in error and "secret-model" not in error.replace("…/unet", ""), error
        assert "broken file" in error
