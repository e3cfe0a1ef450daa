"""Team mode's service: Backdrop on Ray Serve behind a versioned HTTP API.

    python -m core serve [--host 0.0.0.0] [--port 8000] [--address auto]     (= core.service.main)

                 HTTP  ┌──────────────────────────┐  handles  ┌──────────────────────────────┐
    app / CLI / ──────▶│ api (FastAPI ingress)    │──────────▶│ segmenter  (image encoder +  │
    scripts            │ auth, limits, validation,│           │  click decoder; N replicas)  │
                       │ history reads, files     │──────────▶│ inpainter  (photo decoding,  │
                       └──────────────────────────┘           │  mask from the segmenter,    │
                                                              │  run_job: model, compose,    │
                                                              │  history write; N replicas)  │
                                                              └──────────────────────────────┘
                                    │ reads                              │ writes (once per run)
                                    ▼                                    ▼
                             history database (BACKDROP_DATABASE_URL) + image store (data dir)

Modules: config.py (ServiceConfig from the environment: token, upload limit, replicas, GPUs),
deployments.py (Segmenter, Inpainter), api.py (the FastAPI app and the Api ingress),
client.py (ServiceClient, a small httpx client of the API). Ray is imported only here, never by
the embedded app or CLI.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Optional, Sequence

from core.service.config import ServiceConfig

__all__ = ["ServiceConfig", "build_app", "start", "serve_forever", "main"]

APP_NAME = "backdrop"


def build_app(cfg: Optional[ServiceConfig] = None):
    """The Serve application (ingress bound to the two model deployments), built with `cfg`
    (default: ServiceConfig.from_env())."""
    from core.service.api import Api
    from core.service.deployments import Inpainter, Segmenter

    cfg = cfg or ServiceConfig.from_env()
    model = {"ray_actor_options": cfg.actor_options(), "autoscaling_config": cfg.autoscaling()}
    segmenter = Segmenter.options(max_ongoing_requests=max(4, cfg.max_ongoing_requests),
                                  **model).bind(cfg.env, cfg.preload)
    inpainter = Inpainter.options(max_ongoing_requests=cfg.max_ongoing_requests,
                                  **model).bind(cfg.env, cfg.preload, segmenter)
    return Api.options(ray_actor_options={"num_cpus": cfg.ingress_num_cpus}).bind(
        segmenter, inpainter, cfg)


def start(cfg: Optional[ServiceConfig] = None, *, host: str = "127.0.0.1", port: int = 8000,
          route_prefix: str = "/", name: str = APP_NAME, address: Optional[str] = None,
          num_cpus: Optional[int] = None):
    """Start (or join, with `address`) a Ray cluster, Serve's HTTP proxy on host:port, and the
    application; returns its ingress handle once every replica is up."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        kwargs = {"include_dashboard": False}
        if address:
            kwargs["address"] = address
        elif num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
    serve.start(http_options={"host": host, "port": port})
    return serve.run(build_app(cfg), name=name, route_prefix=route_prefix)


def _loopback(host: str) -> bool:
    """Whether `host` only reaches this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:        # a host name: it may be on any interface
        return False


def check_listen(host: str, port: int, token: Optional[str], *, free: bool = True) -> None:
    """Refuse, before Ray starts, what `serve` must not do: listen beyond this machine without a
    token (anyone on the network could read the history and run jobs), or (`free`) on a port that
    is in use. InvalidOptionError with the fix."""
    import errno
    import socket

    from core.errors import InvalidOptionError
    if not 1 <= port <= 65535:
        raise InvalidOptionError(f"--port must be from 1 to 65535, got {port}")
    if not token and not _loopback(host):
        raise InvalidOptionError(f"--host {host} would serve the whole history to the network without a "
                                 "token: set BACKDROP_API_TOKEN (e.g. to the output of `openssl rand -hex "
                                 "32`) or listen on --host 127.0.0.1")
    try:
        family, kind, proto, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise InvalidOptionError(f"cannot listen on {host!r}: not an address of this machine") from None
    if not free:
        return
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # as Serve's proxy binds it
        try:
            s.bind(where)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise InvalidOptionError(f"port {port} on {host} is in use: stop what listens there or "
                                         "pick another port with --port") from None
            raise InvalidOptionError(f"cannot listen on {host} port {port}: {e.strerror}") from None


def serve_forever(host: str = "127.0.0.1", port: int = 8000, *, address: Optional[str] = None,
                  num_cpus: Optional[int] = None) -> int:
    """`python -m core serve`: start the service and keep it up until Ctrl-C (then shut down).
    A non-loopback host without BACKDROP_API_TOKEN, or a port in use, is refused before Ray starts."""
    cfg = ServiceConfig.from_env()
    # joining a cluster (--address), Serve's proxy may already hold the port: Serve reuses it
    check_listen(host, port, cfg.token, free=address is None)
    from ray import serve

    start(cfg, host=host, port=port, address=address, num_cpus=num_cpus)
    print(f"Backdrop API on http://{host}:{port}/v1 (OpenAPI page: http://{host}:{port}/docs); "
          f"model replicas {cfg.min_replicas}-{cfg.max_replicas}, {cfg.num_gpus:g} GPU each, "
          f"token {'required' if cfg.token else 'not set'}. Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping…", flush=True)
    finally:
        serve.shutdown()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m core serve` (for core/cli.py's sub-parser)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster (e.g. auto, or ray://head:10001) instead of starting one")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local cluster started here")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: `python -m core.service [options]` / `python -m core serve [options]`."""
    parser = argparse.ArgumentParser(prog="python -m core serve",
                                     description="Serve Backdrop over HTTP on Ray Serve (team mode).")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from core.errors import BackdropError
    try:
        return serve_forever(args.host, args.port, address=args.address, num_cpus=args.num_cpus)
    except BackdropError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
