"""`palm ingest --enrol`: the reference matcher behind the development ingest, over HTTP on
127.0.0.1, fed captures sealed by the scanner's own sealer from the crops the scanner would seal of
simulated identities."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from device.config import defaults_for_simulation
from device.evaluation import present, sim_flat_field
from device.ingest import matcher
from device.ingest.gallery import Gallery
from device.ingest.server import Ingest, IngestServer
from device.protocol import multipart
from device.protocol.archive import CaptureFrame
from device.protocol.seal import SealedCapture
from device.sim.scene import make_scene
from device.utility import IDENTITY_SEEDS
from tests.helpers import DEVICE_ID, new_keys

KEYS = new_keys()


def _crop(identity: int, j: int) -> CaptureFrame:
    config = defaults_for_simulation()
    scene = make_scene("genuine", IDENTITY_SEEDS + identity * 1000 + j, identity=identity)
    p = present(config, scene, sim_flat_field(config), None, crop=True)
    assert p.crop is not None
    return CaptureFrame("flood", p.crop, (0, 0, *p.crop.shape[::-1]), 3000, 2.0, "all", 1)


@pytest.fixture(scope="module")
def crops() -> dict[tuple[int, int], CaptureFrame]:
    # identities 4 and 5: presentations 1 and 3 of each score 0.78 and 0.80 against each other in
    # the simulator, over the threshold at 0.1 % FMR; identity 9 was never enrolled
    return {k: _crop(*k) for k in ((4, 0), (5, 0), (4, 2), (5, 2), (9, 0))}


def _send(url: str, c: SealedCapture) -> requests.Response:
    body, ctype = multipart.encode(c.envelope, c.sealed)
    headers = {"Content-Type": ctype, "Palm-Signature": c.signature, "Idempotency-Key": c.capture_id}
    return requests.post(url + "/v1/captures", data=body, headers=headers, timeout=30)


@pytest.fixture()
def server() -> Iterator[tuple[IngestServer, io.StringIO]]:
    log = io.StringIO()
    gallery = Gallery(["4", "5", "4"])
    ingest = Ingest(
        recipients=[KEYS.recipient], devices={DEVICE_ID: KEYS.device.public_key()}, result=gallery
    )
    s = IngestServer(ingest, log_stream=log).start()
    yield s, log
    s.stop()


def test_the_first_capture_of_a_label_is_enrolled_and_later_ones_identified(
    server: tuple[IngestServer, io.StringIO], crops: dict[tuple[int, int], CaptureFrame]
) -> None:
    srv, log = server
    sealer = KEYS.sealer()
    results = []
    for key in ((4, 0), (5, 0), (4, 2), (5, 2), (9, 0)):
        c = sealer.seal([crops[key]], checks={}, calibration=None)
        r = _send(srv.url, c)
        assert r.status_code == 201, r.text
        results.append(r.json()["result"])
    assert results[0] == {"decision": "enrolled", "subject": "4", "enrolled": 1}
    assert results[1] == {"decision": "enrolled", "subject": "5", "enrolled": 2}
    t = matcher.THRESHOLDS[matcher.DEFAULT_FMR]
    # labelled 4 and identified as 4; past the labels, identified as 5; 9 matches no one
    assert results[2]["decision"] == "match" and results[2]["subject"] == "4" and results[2]["label"] == "4"
    assert results[3]["decision"] == "match" and results[3]["subject"] == "5" and results[3]["label"] is None
    assert results[2]["score"] >= t and results[3]["score"] >= t
    assert results[4]["decision"] == "no_match" and results[4]["subject"] is None and results[4]["score"] < t
    assert all(r["threshold"] == t and r["fmr"] == matcher.DEFAULT_FMR for r in results[2:])
    # the log says the decision and never a pixel
    lines = log.getvalue().splitlines()
    logged = [json.loads(line) for line in lines]
    assert [x.get("result", {}).get("decision") for x in logged] == [
        "enrolled",
        "enrolled",
        "match",
        "match",
        "no_match",
    ]
    assert all(len(line) < 2000 for line in lines)


def test_a_retry_gets_the_answer_it_had_and_takes_no_label(
    server: tuple[IngestServer, io.StringIO], crops: dict[tuple[int, int], CaptureFrame]
) -> None:
    srv, _ = server
    sealer = KEYS.sealer()
    first = sealer.seal([crops[(4, 0)]], checks={}, calibration=None)
    a, b = _send(srv.url, first), _send(srv.url, first)
    assert a.status_code == 201 and b.status_code == 200
    assert a.json()["result"] == b.json()["result"] == {"decision": "enrolled", "subject": "4", "enrolled": 1}
    # the next capture takes the second label, 5: the retry did not use one up
    r = _send(srv.url, sealer.seal([crops[(5, 0)]], checks={}, calibration=None))
    assert r.json()["result"]["subject"] == "5" and r.json()["result"]["decision"] == "enrolled"


def test_palm_ingest_refuses_a_bad_label_list_and_an_unmeasured_rate(tmp_path: Path) -> None:
    key = tmp_path / "recipient.pem"
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from device.protocol.keys import write_private_key

    write_private_key(key, X25519PrivateKey.generate())
    for extra, said in (
        (["--enrol", "alice,,bob"], "has an empty label"),
        (["--enrol", "alice", "--fmr", "0.05"], "has no measured threshold: one of 0.001, 0.01"),
        (["--fmr", "0.01"], "--fmr goes with --enrol"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "device", "ingest", "--port", "0", "--recipient-key", str(key), *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2 and said in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_a_log_line_carries_only_the_clouds_decision_word() -> None:
    from device.daemon.loop import cloud_decision

    assert cloud_decision({"decision": "match", "subject": "alice", "token": "pay-123"}) == "match"
    assert cloud_decision({"decision": "no_match"}) == "no_match"
    for hostile in (None, "match", ["match"], {"decision": 1}, {"decision": "x" * 33}, {"decision": "a\nb"}):
        assert cloud_decision(hostile) is None, hostile
    assert cloud_decision({"decision": "tōken"}) is None
