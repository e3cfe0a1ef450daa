"""The running service shared by the tests that need one (tests/conftest.py `service`): one Ray
cluster and one Serve application per test session, tiny models, a bearer token."""
from __future__ import annotations

from browser_helpers import free_port  # noqa: F401  (the one free-port helper of the test servers)

TOKEN = "s3cret-token"
PREFIX = "/bd"
