"""Whether testcontainers can be used here: a Docker engine that answers /_ping."""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlsplit


@functools.cache
def docker_engine_answers(timeout: float = 1.0) -> bool:
    """Ping the engine named by DOCKER_HOST (default: the local unix socket)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: object = parts.path
        elif parts.scheme == "tcp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (parts.hostname, parts.port or 2375)
        else:
            return False
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256)
    except OSError:
        return False
