"""The simulated scanner armed by a till: the till API of a running `palm run --simulate`, driven over
HTTPS by a client that pins the certificate's fingerprint, uploading to a receiver built on
pycryptodome alone (tests.test_xwing) that shows the checkout in each envelope; and a long run with
shoppers walking up on their own, in which nobody is captured without an armed checkout."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device.config import Config, TillConfig, load_config, parse_config
from device.daemon.simulate import Options, run_simulated
from device.errors import ConfigError
from device.protocol.keys import b64, raw_public, write_private_key, xwing_from_seed
from device.till.link import TillLink
from tests.test_till import Pinned
from tests.test_xwing import PycryptodomeReceiver, receiving

ROOT = Path(__file__).resolve().parents[1]
FINAL = {"accepted", "not_accepted", "timed_out", "cancelled", "failed"}


@pytest.fixture
def cloud(tmp_path: Path, config: Config) -> Iterator[tuple[Config, PycryptodomeReceiver]]:
    with cloud_for(tmp_path, config) as both:
        yield both


@contextlib.contextmanager
def cloud_for(tmp_path: Path, config: Config) -> Iterator[tuple[Config, PycryptodomeReceiver]]:
    """The scanner's config (its own device key) and an independent receiver it uploads to."""
    device = Ed25519PrivateKey.generate()
    write_private_key(tmp_path / "device-key.pem", device)
    seed = secrets.token_bytes(32)
    with receiving(seed, config.device.id, raw_public(device)) as receiver:
        cfg = dataclasses.replace(
            config,
            device=dataclasses.replace(config.device, key_file=tmp_path / "device-key.pem"),
            cloud=dataclasses.replace(
                config.cloud,
                endpoint=receiver.url,
                recipient_public_key=b64(xwing_from_seed(seed).public_raw),
            ),
        )
        yield cfg, receiver


class Events:
    """A till's /v1/events stream, read in a thread."""

    def __init__(self, till: Pinned) -> None:
        self.conn = till.connect()
        self.conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {till.token}"})
        self.r = self.conn.getresponse()
        assert self.r.status == 200
        self.q: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.r.fp:
                if line.startswith(b"data: "):
                    self.q.put(json.loads(line[6:]))
        except (OSError, ValueError):
            return

    def until_final(self, checkout_id: str, timeout_s: float = 120) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            e = self.q.get(timeout=end - time.monotonic())
            if e.get("checkout_id") == checkout_id:
                seen.append(e)
                if e["state"] in FINAL:
                    return seen
        raise AssertionError(f"{checkout_id} did not end: {seen}")

    def close(self) -> None:  # the till goes away
        self.r.close()
        self.conn.close()


def test_a_till_drives_the_simulated_scanner_over_pinned_https(
    cloud: tuple[Config, PycryptodomeReceiver],
) -> None:
    config, receiver = cloud
    links: queue.Queue[TillLink] = queue.Queue()
    out = io.StringIO()
    # seed 17: a palm, then a flat print, then a palm (the scenario brings them in this order)
    opts = Options(scans=3, seed=17, as_json=True, endpoint=receiver.url, signals=False, till_port=0)
    opts = dataclasses.replace(opts, on_till=links.put)
    result: dict[str, Any] = {}
    run = threading.Thread(target=lambda: result.update(s=run_simulated(config, opts, out=out)))
    run.start()
    link = links.get(timeout=120)
    ready = json.loads(out.getvalue().splitlines()[0])  # the first line: how a till reaches the scanner
    assert ready == {
        "event": "till_ready",
        "port": link.port,
        "token": link.token,
        "fingerprint_sha256": link.fingerprint_sha256,
    }
    till = Pinned(ready["port"], ready["token"], ready["fingerprint_sha256"])
    events = Events(till)
    assert till.call("GET", "/v1/device", token="palm_till_wrong")[0] == 401
    assert till.call("POST", "/v1/checkouts", {"checkout_id": "sale 1"})[0] == 400
    status, device = till.call("GET", "/v1/device")
    assert status == 200 and device["protocol"] == 2 and device["suite"] == "XWING-SHA256-AES256GCM"
    assert device["id"] == config.device.id and device["calibration"].startswith("cal-")

    # 1. a palm: armed, capturing, sent, accepted with the cloud's result passed on unread
    status, c = till.call("POST", "/v1/checkouts", {"checkout_id": "sale-1", "timeout_s": 60})
    assert status == 201 and c["state"] == "armed"
    assert (
        till.call("POST", "/v1/checkouts", {"checkout_id": "sale-x", "timeout_s": 60})[1]["error"] == "busy"
    )
    states = [e["state"] for e in events.until_final("sale-1")]
    assert states[0] == "armed" and states[-1] == "accepted", states
    order = [s for s in states if s != "guiding"]
    assert order == ["armed", "capturing", "sent", "accepted"], states
    _, c = till.call("GET", "/v1/checkouts/sale-1")
    assert c["result"] == {"by": "pycryptodome"} and c["capture_id"]
    (opened,) = receiver.opened
    env = opened["envelope"]
    assert env["capture_id"] == c["capture_id"] and env["v"] == 2
    assert env["checkout"]["id"] == "sale-1" and env["checkout"]["till"] == "sim-till"
    assert env["checkout"]["armed_at"].endswith("Z")

    # 2. a flat print, the till gone mid-checkout: refused, nothing sealed, the state still kept
    assert till.call("POST", "/v1/checkouts", {"checkout_id": "sale-2", "timeout_s": 60})[0] == 201
    events.close()
    end = time.monotonic() + 120
    while (c := till.call("GET", "/v1/checkouts/sale-2")[1])["state"] not in FINAL:
        assert time.monotonic() < end, c
        time.sleep(0.2)
    assert c["state"] == "not_accepted" and c["reasons"] and c["capture_id"] is None, c
    assert len(receiver.opened) == 1

    # 3. cancelled at once: the palm that steps up is not captured
    assert till.call("POST", "/v1/checkouts", {"checkout_id": "sale-3", "timeout_s": 60})[0] == 201
    status, c = till.call("DELETE", "/v1/checkouts/sale-3")
    assert status == 200 and c["state"] == "cancelled"
    run.join(timeout=120)
    assert not run.is_alive()
    summary = json.loads(out.getvalue().splitlines()[-1])["summary"]
    assert summary["checkouts"] == {"accepted": 1, "cancelled": 1, "not_accepted": 1}
    assert len(receiver.opened) == 1
    assert "pixels" not in out.getvalue() and "sealed" not in json.dumps(summary["checkouts"])


def armed_run(
    config: Config, receiver: PycryptodomeReceiver, *, scans: int, seed: int, every_s: float
) -> dict[str, Any]:
    """Shoppers walk up on their own (``--walk-ins``: the scenario's 3 x scans + 5 presentations);
    the till arms a checkout every ``every_s`` of scene time, each for 10 s; the run ends with the
    scenario or after ``scans`` answers. Every frame the camera's main stream gives (metering and
    bursts) is counted against whether a checkout was armed at that moment."""
    links: list[TillLink] = []
    frames = {"armed": 0, "unarmed": 0}
    armed: list[str] = []

    def serving(service: Any, scanner: Any, clock: Any) -> None:
        link = links[0]
        capture = scanner.camera.capture

        def counted(**kw: Any) -> Any:
            frames["armed" if link.checkouts.current() is not None else "unarmed"] += 1
            return capture(**kw)

        scanner.camera.capture = counted

        def arm() -> None:
            armed.append(f"walk-in-{len(armed)}")
            try:
                link.checkouts.arm("sim-till", {"checkout_id": armed[-1], "timeout_s": 10})
            except Exception:  # busy: the last one is still running
                armed.pop()
            clock.call_later(every_s, arm)

        clock.call_later(every_s, arm)

    opts = Options(
        scans=scans,
        seed=seed,
        as_json=True,
        endpoint=receiver.url,
        signals=False,
        till_port=0,
        walk_ins=True,
        paced=False,
        on_till=links.append,
        before_serving=serving,
    )
    out = io.StringIO()
    run_simulated(config, opts, out=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return {"lines": lines, "frames": frames, "armed": armed, "summary": lines[-1]["summary"]}


def test_in_armed_mode_nobody_is_captured_without_a_checkout(
    cloud: tuple[Config, PycryptodomeReceiver],
) -> None:
    config, receiver = cloud
    run = armed_run(config, receiver, scans=10, seed=5, every_s=30.0)
    lines, summary = run["lines"], run["summary"]
    presented = sum(summary["presented"].values())
    unarmed = [e for e in lines if e.get("event") == "hand_unarmed"]
    seen = [e for e in lines if e.get("event") == "hand_seen"]
    # shoppers came on their own, most of them with no checkout armed, and were not captured
    assert presented >= 20 and len(unarmed) >= presented // 3, (presented, len(unarmed))
    assert run["frames"]["unarmed"] == 0 and run["frames"]["armed"] > 0, run["frames"]
    assert seen and all(e.get("checkout_id") in run["armed"] for e in seen)
    # every capture the cloud received carries the checkout it was taken for, one per checkout sent
    sent = {e["checkout_id"] for e in lines if e.get("event") == "checkout" and e["state"] == "sent"}
    got = [o["envelope"]["checkout"]["id"] for o in receiver.opened]
    assert got and len(got) == len(set(got)) and set(got) == sent, (got, sent)
    assert sum(summary["checkouts"].values()) >= len(run["armed"]) - 1  # all ended but the last, maybe
    # each scan was for a checkout (one may take two: "try again" arms it again until its deadline)
    assert summary["scans"] == len(seen) and len(run["armed"]) < presented


def test_the_till_config_section() -> None:
    base = load_config(ROOT / "config.example.toml")
    assert base.till == TillConfig() and base.armed_only  # the example is a store's: armed
    data = {
        "device": {"id": "d", "key_file": "/k"},
        "cloud": {"endpoint": "https://x", "recipient_public_key": base.cloud.recipient_public_key},
    }
    assert parse_config(data).till is None and not parse_config(data).armed_only  # no [till]: a kiosk
    assert parse_config({**data, "till": {"mode": "always"}}).armed_only is False
    assert parse_config({**data, "till": {"listen": "[::1]:9443"}}).till.address == ("::1", 9443)  # type: ignore[union-attr]
    for listen in ("8443", "localhost:8443", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:８４"):
        with pytest.raises(ConfigError, match=r"\[till\] listen = .* IP address and a port"):
            parse_config({**data, "till": {"listen": listen}})
    with pytest.raises(ConfigError, match="mode"):
        parse_config({**data, "till": {"mode": "sometimes"}})
    with pytest.raises(ConfigError, match="protocol = 1 cannot carry a till's checkout"):
        cloud = {**data["cloud"], "recipient_public_key": b64(bytes(range(1, 33))), "protocol": 1}
        parse_config({**data, "cloud": cloud, "till": {}})


def test_palm_run_simulate_till_port_prints_how_to_reach_it_first() -> None:
    """The CLI: the first stdout line is till_ready; with nobody arming, a SIGTERM ends it cleanly
    (exit 0) with a summary of no checkouts."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "device", "run", "--simulate", "--till-port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "till_ready" and ready["token"].startswith("palm_till_")
        till = Pinned(ready["port"], ready["token"], ready["fingerprint_sha256"])
        assert till.call("GET", "/v1/device")[1]["status"] in ("ready", "busy")
        time.sleep(3)  # a few seconds of watching: no till armed, nobody comes
        proc.terminate()
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(rest.splitlines()[-1])["summary"]
    assert summary["scans"] == 0 and summary["checkouts"] == {} and summary["stopped_by"] == "SIGTERM"


def one_checkout(
    config: Config, endpoint: str, *, at_first_frame: Any = None, timeout_s: float = 30
) -> tuple[dict[str, Any], dict[str, Any], TillLink]:
    """A run on call whose till arms one checkout ("c1") at once; ``at_first_frame(link)`` runs when
    the camera's main stream gives its first frame (metering has begun)."""
    links: list[TillLink] = []

    def serving(service: Any, scanner: Any, clock: Any) -> None:
        link = links[0]
        capture, fired = scanner.camera.capture, []

        def first(**kw: Any) -> Any:
            if at_first_frame is not None and not fired:
                fired.append(1)
                at_first_frame(link)
            return capture(**kw)

        scanner.camera.capture = first
        link.checkouts.arm("sim-till", {"checkout_id": "c1", "timeout_s": timeout_s})

    out = io.StringIO()
    opts = Options(
        scans=1, seed=17, as_json=True, endpoint=endpoint, signals=False, till_port=0, paced=False,
        on_till=links.append, before_serving=serving,
    )  # fmt: skip
    run_simulated(config, opts, out=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    c = links[0].checkouts.get("c1")
    assert c is not None
    return c.as_json(), lines[-1]["summary"], links[0]


def test_a_checkout_cancelled_during_the_burst_is_never_sealed(
    cloud: tuple[Config, PycryptodomeReceiver],
) -> None:
    config, receiver = cloud
    c, summary, _ = one_checkout(
        config, receiver.url, at_first_frame=lambda link: link.checkouts.cancel("sim-till", "c1")
    )
    assert c["state"] == "cancelled" and c["capture_id"] is None
    assert receiver.opened == [] and summary["checkouts"] == {"cancelled": 1}
    assert summary["outcomes"] == {"bona_fide": {"cancelled": 1}}


def test_a_capture_the_cloud_never_took_fails_its_checkout_and_is_withdrawn(
    cloud: tuple[Config, PycryptodomeReceiver],
) -> None:
    config, _ = cloud
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    c, summary, _ = one_checkout(config, f"http://127.0.0.1:{dead}")
    assert c["state"] == "failed" and c["capture_id"] and c["reasons"], c
    # never sent later: not waiting in the outbox, counted as withdrawn
    assert summary["outbox"] == {"depth": 0, "dropped": {"withdrawn": 1}}, summary["outbox"]


def main() -> None:
    """``python -m tests.test_till_daemon [SCANS] [SEED]``: a long armed run's counts (the issue's note)."""
    from device.config import load_config as load

    scans = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    import tempfile

    config = load(ROOT / "config.example.toml")
    with tempfile.TemporaryDirectory() as tmp, cloud_for(Path(tmp), config) as (config, receiver):
        run = armed_run(config, receiver, scans=scans, seed=seed, every_s=30.0)
        lines = run["lines"]
        print(json.dumps({
            "presented": run["summary"]["presented"],
            "hand_unarmed": sum(e.get("event") == "hand_unarmed" for e in lines),
            "armed": len(run["armed"]),
            "checkouts": run["summary"]["checkouts"],
            "scans": run["summary"]["scans"],
            "frames_with_checkout": run["frames"]["armed"],
            "frames_without_checkout": run["frames"]["unarmed"],
            "captures_received": len(receiver.opened),
            "received_without_checkout": sum(o["envelope"]["checkout"] is None for o in receiver.opened),
        }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
