"""The running service shared by the tests that need one (tests/conftest.py `service`): one Ray
cluster and one Serve application per test session, tiny models, a bearer token."""
from __future__ import annotations

import socket

TOKEN = "s3cret-token"
PREFIX = "/bd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
