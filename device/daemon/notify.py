"""sd_notify(3) without libsystemd: READY, STOPPING, STATUS and the watchdog, over NOTIFY_SOCKET.

systemd passes the socket's path (or an abstract name starting with '@') in
NOTIFY_SOCKET and the watchdog interval in WATCHDOG_USEC; outside systemd both are
absent and every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.dropped = 0  # notifications the supervisor's socket did not take
        path = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if path.startswith("@"):
            self._address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self._address = path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        #: ping at half the interval systemd waits, as sd_watchdog_enabled(3) advises
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str) -> None:
        if self._address is None:
            return
        text = "\n".join(f"{k.upper()}={v}" for k, v in fields.items())
        # Never blocking the scanner on its supervisor: a full queue (nobody reading) drops the
        # message; systemd reading nothing restarts the service anyway, by its watchdog.
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)
                s.connect(self._address)
                s.send(text.encode())
        except OSError as e:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("systemd notification not delivered", extra={"error": str(e)})

    def ready(self, status: str) -> None:
        self.send(ready="1", status=status)

    def status(self, status: str) -> None:
        self.send(status=status)

    def watchdog(self) -> None:
        self.send(watchdog="1")

    def stopping(self) -> None:
        self.send(stopping="1")
