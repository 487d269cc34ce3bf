"""The exception tree of the scanner.

Every error the scanner raises on purpose derives from :class:`ScannerError`
and from the built-in exception it most resembles, so callers may catch
either::

    ScannerError(Exception)
    ├── ConfigError(ScannerError, ValueError)      a config file is wrong: exit 78
    ├── UsageError(ScannerError, ValueError)       the command line asks the impossible: exit 2
    ├── OutputError(ScannerError, OSError)         a file asked for cannot be written: exit 73
    ├── KeyFileError(ScannerError, ValueError)     a key file is unusable: exit 78
    ├── ProtocolError(ScannerError, ValueError)    bytes that break protocol v1 (code, status)
    ├── UplinkError(ScannerError, RuntimeError)    a capture could not be delivered
    └── HardwareError(ScannerError, RuntimeError)  a device misbehaves
        ├── CameraError                            frames do not arrive or make no sense
        └── LedError                               the ring or indicator cannot be driven

Foreign errors (picamera2, gpiozero, OS) are translated at the boundary with
``raise ... from``. Messages never carry pixels or key material.
"""

from __future__ import annotations

EX_CONFIG = 78  # sysexits.h: configuration error


class ScannerError(Exception):
    """Root of every error the scanner raises on purpose."""

    exit_code = 1


class ConfigError(ScannerError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""

    exit_code = EX_CONFIG


class HardwareError(ScannerError, RuntimeError):
    """A hardware role (camera, LED ring, indicator) cannot do what was asked."""


class CameraError(HardwareError):
    """The camera cannot be opened, or delivers no usable frame."""


class LedError(HardwareError):
    """The LED ring or the status indicator cannot be driven."""


class UsageError(ScannerError, ValueError):
    """The command line asks for something that cannot be done (exit 2, like argparse)."""

    exit_code = 2


class OutputError(ScannerError, OSError):
    """A file a person asked for cannot be written (exit 73, EX_CANTCREAT)."""

    exit_code = 73


class KeyFileError(ScannerError, ValueError):
    """A key file is missing, readable by others, malformed or of the wrong kind (exit 78)."""

    exit_code = EX_CONFIG


class ProtocolError(ScannerError, ValueError):
    """Bytes that do not follow capture upload protocol v1.

    ``code`` is the protocol's error word (``malformed``, ``stale``, ...) and
    ``status`` the HTTP status an ingest answers with.
    """

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status


class UplinkError(ScannerError, RuntimeError):
    """A sealed capture could not be delivered."""
