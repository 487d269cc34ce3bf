"""``palm run``'s hardware path on gpiozero's mock pins and the picamera2 stand-in.

A child process of the test (the daemon hardens the process it runs in: undumpable,
no core, memory locked where it may). Serves until /healthz says ready, then stops
as SIGTERM would, and prints what it saw as the last line: ``RESULT {json}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from device.clock import FakeClock
from device.config import Config, load_config
from device.daemon import logs
from device.daemon.hardware import Options, run_on_hardware
from device.daemon.service import Service
from device.hardware.scanner import RealScanner
from tests.fake_picamera2 import FakePicamera2


def main(config_path: str) -> int:
    logs.setup(sys.stdout, as_json=True)
    clock = FakeClock()

    class Camera(FakePicamera2):
        clock_for_next = clock

        def output(self, k: int) -> float:
            return 30.0  # an empty, dim shop

    factory = MockFactory(pin_class=MockPWMPin)
    seen: dict[str, Any] = {}

    def open_scanner(config: Config) -> RealScanner:
        return RealScanner(config, clock=clock, pin_factory=factory, camera_backend=Camera)

    def before_serving(service: Service, port: int | None) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                        seen["healthz"] = [r.status, r.read().decode()]
                        break
                except OSError as e:  # not ready yet: 503, or not listening
                    seen["waiting"] = str(e)
                time.sleep(0.05)
            service.request_stop("the test")

        threading.Thread(target=watch, daemon=True).start()

    summary = run_on_hardware(
        load_config(config_path),
        Options(status_port=0, signals=False, open_scanner=open_scanner, before_serving=before_serving),
    )
    seen["scans"] = summary.count
    seen["pins"] = {getattr(n, "name", str(n)): pin.state for n, pin in factory.pins.items()}
    print("RESULT " + json.dumps(seen), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
