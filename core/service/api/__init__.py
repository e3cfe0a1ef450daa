"""The HTTP API (see routes.py): the FastAPI `app` and the `Api` ingress deployment; bodies.py,
parse.py, errors.py and openapi.py hold its parts."""
from core.service.api.errors import authorized
from core.service.api.routes import API_VERSION, Api, app

__all__ = ["API_VERSION", "Api", "app", "authorized"]
