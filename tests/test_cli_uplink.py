"""palm keys, palm ingest and palm send-test together, as the README tells an installer to use them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_CONFIG

PALM = (sys.executable, "-m", "device")


def palm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PALM, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _cloud_and_scanner(tmp_path: Path, *ingest_args: str) -> tuple[subprocess.Popen[str], str]:
    """As the README says: the device's keys, the development cloud's, the ingest started (its
    process) and scanner.toml written for it (its text)."""
    init = palm("keys", "init", "--out", "device.pem", "--device-id", "lane-1", cwd=tmp_path)
    register = re.search(r"register it with the cloud as: (\S+)", init.stdout)
    assert register, init.stdout
    rec = palm("keys", "recipient", "--out", "cloud.pem", cwd=tmp_path)
    config_line = re.search(r'recipient_public_key = "([^"]+)"', rec.stdout)
    assert config_line
    ingest = subprocess.Popen(
        [
            *PALM,
            "ingest",
            "--port",
            "0",
            "--recipient-key",
            "cloud.pem",
            "--device",
            register.group(1),
            *ingest_args,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert ingest.stdout is not None
    banner = ingest.stdout.readline()
    url = re.search(r"on (http://127\.0\.0\.1:\d+)/v1/captures", banner)
    assert url, banner
    text = EXAMPLE_CONFIG.read_text()
    text = re.sub(r'(?m)^id = ".*"', 'id = "lane-1"', text)
    text = re.sub(r'(?m)^key_file = ".*"', 'key_file = "device.pem"', text)
    text = re.sub(r'(?m)^endpoint = ".*"', f'endpoint = "{url.group(1)}"', text)
    text = re.sub(
        r'(?m)^recipient_public_key = ".*"', f'recipient_public_key = "{config_line.group(1)}"', text
    )
    (tmp_path / "scanner.toml").write_text(text)
    return ingest, text


def test_keys_ingest_and_send_test_work_together(tmp_path: Path) -> None:
    ingest, text = _cloud_and_scanner(tmp_path, "--busy-first", "1")
    try:
        ok = palm("send-test", "--config", "scanner.toml", cwd=tmp_path)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert re.fullmatch(
            r"accepted: capture \S+ to http://127\.0\.0\.1:\d+, HTTP 201, 2 attempts in \d+ ms\n", ok.stdout
        )
        (tmp_path / "stranger.toml").write_text(text.replace('id = "lane-1"', 'id = "lane-2"'))
        refused = palm("send-test", "--config", "stranger.toml", cwd=tmp_path)
        assert refused.returncode == 1
        assert (
            "rejected: capture" in refused.stdout
            and "HTTP 401, unauthenticated (unknown device 'lane-2')" in refused.stdout
        )
    finally:
        ingest.send_signal(signal.SIGTERM)
        out, err = ingest.communicate(timeout=20)
    assert ingest.returncode == 0, err
    statuses = [int(s) for s in re.findall(r'"status": (\d+)', out)]
    assert statuses == [503, 201, 401]
    assert "Traceback" not in err
    # The cloud gone: the line says it was not delivered and why, and the exit is 1.
    down = palm("send-test", "--config", "scanner.toml", "--wait", "2", cwd=tmp_path)
    assert down.returncode == 1, down.stdout + down.stderr
    assert down.stdout.startswith("not delivered, still retrying when the test stopped waiting: capture ")
    assert "unreachable (" in down.stdout and "Connection refused" in down.stdout
    bad = palm("send-test", "--config", "scanner.toml", "--wait", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--wait 0: give 1 to 120 seconds" in bad.stderr


def test_from_a_hand_to_the_clouds_match_answer(tmp_path: Path) -> None:
    """The simulated scanner's shoppers to an ingest told their labels: what the scanner's story
    says of each capture is what the cloud decided, the first of each label enrolled."""
    ingest, _ = _cloud_and_scanner(tmp_path, "--enrol", "alice,bob")
    try:
        assert ingest.stdout is not None
        assert "enrols the first capture of each of 2 label(s)" in ingest.stdout.readline()
        url = re.search(r'endpoint = "([^"]+)"', (tmp_path / "scanner.toml").read_text())
        assert url
        run = subprocess.run(
            [
                *PALM,
                "run",
                "--simulate",
                "--config",
                "scanner.toml",
                "--endpoint",
                url.group(1),
                "--scans",
                "3",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        ingest.send_signal(signal.SIGTERM)
        out, err = ingest.communicate(timeout=20)
    told = re.findall(r"the cloud says (\w+)", run.stdout)
    decided = [json.loads(line)["result"]["decision"] for line in out.splitlines()]
    assert told == decided and told[:2] == ["enrolled", "enrolled"], (told, decided)
    assert "Traceback" not in err


class _Liar(BaseHTTPRequestHandler):
    """Answers every capture with HTTP 201, but not with the protocol's acknowledgement of it."""

    reply = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.reply)))
        self.end_headers()
        self.wfile.write(self.reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    "reply",
    [
        b'{"capture_id": "01a2aaaa-0000-7000-8000-000000000000", "status": "accepted", "result": null}',
        b"<html>created</html>",
        b"{" + b" " * 3_000_000 + b"}",
    ],
    ids=["another-capture-id", "garbage", "huge"],
)
def test_send_test_fails_unless_its_own_capture_is_acknowledged(tmp_path: Path, reply: bytes) -> None:
    handler = type("Liar", (_Liar,), {"reply": reply})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ingest, text = _cloud_and_scanner(tmp_path)
        ingest.send_signal(signal.SIGTERM)
        ingest.communicate(timeout=20)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        (tmp_path / "liar.toml").write_text(re.sub(r'(?m)^endpoint = ".*"', f'endpoint = "{url}"', text))
        r = palm("send-test", "--config", "liar.toml", "--wait", "2", cwd=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 1, r.stdout + r.stderr
    assert (
        r.stdout.startswith("not delivered")
        and "HTTP 201, bad_reply (reply is not the protocol's)" in r.stdout
    )
