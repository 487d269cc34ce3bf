"""A requests Session that nothing in the environment can weaken.

``trust_env = False`` ignores proxy and CA-bundle variables and .netrc;
certificate verification is always on (against the system store or a private CA
bundle); an optional pin compares the server certificate's SHA-256 right after
the handshake, before a byte of the request is sent.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool


class PinMismatch(ssl.SSLError):
    """The server's certificate is valid but not the pinned one."""


def _pinned_pool(pin: bytes) -> type[HTTPSConnectionPool]:
    class PinnedConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()  # CA chain and host name are checked here, as always
            der = self.sock.getpeercert(binary_form=True) if self.sock is not None else None  # type: ignore[union-attr]
            if der is None or hashlib.sha256(der).digest() != pin:
                got = hashlib.sha256(der).hexdigest() if der else "none"
                self.close()
                raise PinMismatch(f"server certificate sha256 {got} is not the pinned {pin.hex()}")

    class PinnedPool(HTTPSConnectionPool):
        ConnectionCls = PinnedConnection

    return PinnedPool


class _PinningAdapter(HTTPAdapter):
    def __init__(self, pin: bytes) -> None:
        self._pin = pin
        super().__init__(max_retries=0)  # retries are the uplink's, by the protocol's rules

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme,
            "https": _pinned_pool(self._pin),
        }


def make_session(*, ca_bundle: Path | None, pin_sha256: str | None, user_agent: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_bundle) if ca_bundle is not None else True
    session.headers["User-Agent"] = user_agent
    session.mount("http://", HTTPAdapter(max_retries=0))
    session.mount(
        "https://", _PinningAdapter(bytes.fromhex(pin_sha256)) if pin_sha256 else HTTPAdapter(max_retries=0)
    )
    return session
