"""A requests Session that nothing in the environment can weaken.

``trust_env = False`` ignores proxy and CA-bundle variables and .netrc;
certificate verification is always on (against the system store or a private CA
bundle); an optional pin compares the server certificate's SHA-256 right after
the handshake, before a byte of the request is sent. A `Deadline` bounds a whole
request on the clock, however slowly a server drips its bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class PinMismatch(ssl.SSLError):
    """The server's certificate is valid but not the pinned one."""


# -- a deadline on the clock for a whole request ---------------------------------------------------
#
# requests' timeouts are per socket operation: a server that sends a byte every few seconds never
# trips them. Every socket a connection opens, or a request reuses, is known to the deadline the
# calling thread is under; when it passes, a timer shuts those sockets down, and the blocked read
# (in the TLS handshake, the headers or the body) fails at once.

_local = threading.local()


class Deadline:
    """``with Deadline(seconds) as d:`` bounds every HTTP exchange of this module's sessions in the
    block; ``d.expired`` says whether it cut one."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        _local.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _local.deadline = None
        with self._lock:
            self._socks.clear()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._socks.append(sock)
            late = self.expired
        if late:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _watch(sock: Any) -> None:
    deadline = getattr(_local, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)


class _Watched:
    """Mixed into urllib3's connections: the socket it opens, and the one it sends each request on
    (a kept-alive connection), is watched by the thread's Deadline."""

    sock: Any

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self.sock)
        return super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self.sock)  # the TLS socket, once the handshake made it
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTP(_Watched, HTTPConnection):
    pass


class _WatchedHTTPS(_Watched, HTTPSConnection):
    pass


def _pinned(pin: bytes) -> type[HTTPSConnection]:
    class PinnedConnection(_WatchedHTTPS):
        def connect(self) -> None:
            super().connect()  # CA chain and host name are checked here, as always
            der = self.sock.getpeercert(binary_form=True) if self.sock is not None else None
            if der is None or hashlib.sha256(der).digest() != pin:
                got = hashlib.sha256(der).hexdigest() if der else "none"
                self.close()
                raise PinMismatch(f"server certificate sha256 {got} is not the pinned {pin.hex()}")

    return PinnedConnection


class _Adapter(HTTPAdapter):
    """No retries (they are the uplink's, by the protocol's rules), watched connections, and the pin."""

    def __init__(self, pin: bytes | None) -> None:
        self._pin = pin
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        https = _pinned(self._pin) if self._pin else _WatchedHTTPS

        class Plain(HTTPConnectionPool):
            ConnectionCls = _WatchedHTTP

        class Secure(HTTPSConnectionPool):
            ConnectionCls = https

        self.poolmanager.pool_classes_by_scheme = {"http": Plain, "https": Secure}


def make_session(*, ca_bundle: Path | None, pin_sha256: str | None, user_agent: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_bundle) if ca_bundle is not None else True
    session.headers["User-Agent"] = user_agent
    pin = bytes.fromhex(pin_sha256) if pin_sha256 else None
    session.mount("http://", _Adapter(None))
    session.mount("https://", _Adapter(pin))
    return session
