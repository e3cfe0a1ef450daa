"""Shared fixtures for every tier (tests/unit, tests/integration, tests/browser; docs/testing.md): every test runs offline, with its own data dir, and a session-wide weights dir
where the tiny random-initialised models are built on demand (never downloaded).

Markers (registered in pyproject.toml), set here by `pytest_collection_modifyitems`:
  browser  every test under tests/browser/ (a real Chromium through Playwright)
  slow     every test that uses the tiny Stable Diffusion pipeline (fixture `tiny_inpaint`, directly
           or through another fixture), i.e. runs diffusion
  postgres every test that uses the PostgreSQL server (fixture `postgres`, directly or through
           `history_url`'s "postgres" case, or `pg_url`)
The quick loop is the unit tier, `bash scripts/test.sh --quick` (tests/unit without its postgres and
s3 cases). The kits the test modules import (apptest_kit, browser_helpers, cli_kit, runs, pg,
serve_kit) live in tests/kit/, put on sys.path here.

S3: one local server per test session (moto, fixture `s3_server`; `s3_url` gives each test a fresh
bucket, `s3_env` points the AWS settings at an endpoint); the tests using it carry the `s3` marker.

PostgreSQL: one real server per test session (tests/kit/pg.py: initdb + pg_ctl in a temp folder, run
as `nobody` when we are root), a fresh database per test. No binaries: the tests skip, unless
BACKDROP_REQUIRE_POSTGRES=1 (what .ci/run sets), where they fail."""
from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch  # imported once, here: tests start app and generation threads that import it,
#               and two threads importing torch for the first time at once can see it half-initialised

if os.environ.get("PYTEST_XDIST_WORKER"):      # --quick runs two workers: one core each, not two threads
    torch.set_num_threads(1)                   # fighting over each core

sys.path.insert(0, str(Path(__file__).resolve().parent / "kit"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


SLOW_FIXTURES = {"tiny_inpaint"}
POSTGRES_FIXTURES = {"postgres", "pg_url"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.parent.name == "browser":
            item.add_marker(pytest.mark.browser)
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
        if "service" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.service)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("history_url") == "postgres":
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path, weights_dir):
    """Point data and weights at temp dirs so no test touches ./data or ./weights."""
    monkeypatch.setenv("BACKDROP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(weights_dir))
    # a developer's team settings never leak into the tests
    for name in ("BACKDROP_DATABASE_URL", "BACKDROP_BLOB_URL", "BACKDROP_SERVER_URL", "BACKDROP_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The app and CLI start in fast mode without a CUDA GPU; tests that want fast mode say so.
    monkeypatch.setenv("BACKDROP_MODE", "quality")
    # PyTorch on the CPU unless a test asks for the OpenVINO engine (tests/integration/test_cpu_engine.py)
    monkeypatch.setenv("BACKDROP_CPU_BACKEND", "torch")


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the whole session (tests/kit/pg.py), stopped at the end."""
    from pg import PostgresServer, PostgresUnavailable
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as e:
        if os.environ.get("BACKDROP_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (BACKDROP_REQUIRE_POSTGRES=1): {e}")
        pytest.skip(f"PostgreSQL tests skipped: {e}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres, monkeypatch):
    """A fresh, empty PostgreSQL database for this test, set as BACKDROP_DATABASE_URL; dropped
    (with this process's engines and stores for it) afterwards."""
    url = postgres.create_database()
    monkeypatch.setenv("BACKDROP_DATABASE_URL", url)
    yield url
    from core.history import db, store
    with store._stores_lock:
        for key in [k for k in store._stores if k[1] == url]:
            del store._stores[key]
    db.forget(url)
    postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def history_url(request):
    """The history backend under test: "sqlite" (the default URL, a file in the test's data dir)
    or "postgres" (a fresh database on the session's server). Returns the URL in use."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    from core import config
    return config.database_url()


@pytest.fixture(scope="session")
def s3_server():
    """One local S3 server (moto's ThreadedMotoServer) for the whole session: its endpoint URL.
    Skipped where moto is not installed."""
    server_mod = pytest.importorskip("moto.server", reason="pip install 'moto[server]'")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)      # no line per request
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(monkeypatch):
    """A function pointing this test's AWS settings (test credentials, no profile or config file)
    and BACKDROP_S3_ENDPOINT_URL at an S3 endpoint URL."""
    def point(endpoint: str) -> None:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "backdrop-test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "backdrop-test")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        monkeypatch.setenv("BACKDROP_S3_ENDPOINT_URL", endpoint)
    return point


@pytest.fixture
def s3_url(s3_server, s3_env):
    """s3://<a fresh bucket>/team, with the AWS settings pointing at the session's S3 server."""
    import boto3
    s3_env(s3_server)
    bucket = f"backdrop-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/team"


@pytest.fixture(scope="session")
def tiny_sam(weights_dir):
    """Path of the tiny SAM checkpoint, built in code and saved where the registry expects it."""
    from core.segment import build_tiny_sam
    return build_tiny_sam(weights_dir / "sam_tiny.pth")


@pytest.fixture(scope="session")
def tiny_inpaint(weights_dir):
    """Folder of the tiny diffusers inpainting pipeline, built in code and saved with save_pretrained."""
    from core.inpaint import build_tiny_inpaint
    return build_tiny_inpaint(weights_dir / "tiny-inpainting")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photograph (512x512 RGB uint8) bundled with scikit-image."""
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    """A real photograph of a cat (300x451 RGB uint8): landscape, odd size."""
    from skimage import data
    return data.chelsea()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    """A real photograph of a coffee cup (400x600 RGB uint8)."""
    from skimage import data
    return data.coffee()


@pytest.fixture(scope="session")
def tiny_fast(weights_dir, tiny_inpaint):
    """The tiny model's few-step LoRA and tiny autoencoder (task "fast"), built in code through
    the same registry download path as the real LCM-LoRA and TAESD."""
    from core import weights
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_WEIGHTS_DIR", str(weights_dir))
        return weights.download("tiny-lcm", "fast"), weights.download("tiny-taesd", "fast")


@pytest.fixture(scope="session")
def service(tmp_path_factory, weights_dir, tiny_sam):
    """Base URL of the running service (tests/serve_kit.py: TOKEN, PREFIX) and its data dir; one
    Ray cluster for the session, shut down at the end. Skipped where Ray is not installed."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.serve")
    from ray import serve

    from core.service import ServiceConfig, build_app
    from serve_kit import PREFIX, TOKEN, free_port

    data = tmp_path_factory.mktemp("service-data")
    env = {"BACKDROP_DATA_DIR": str(data), "BACKDROP_WEIGHTS_DIR": str(weights_dir),
           "BACKDROP_DATABASE_URL": f"sqlite:///{data / 'history.db'}", "BACKDROP_MODE": "quality",
           # the service's defaults are the tiny models (a request that names none runs them)
           "BACKDROP_SEGMENTER": "tiny", "BACKDROP_INPAINT_MODEL": "tiny",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        cfg = ServiceConfig(token=TOKEN, max_upload_bytes=8 * 2**20, num_cpus=0, num_gpus=0, env=env)
        serve.run(build_app(cfg), name="backdrop-test", route_prefix=PREFIX)
        yield {"url": f"http://127.0.0.1:{port}{PREFIX}", "data": data}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
