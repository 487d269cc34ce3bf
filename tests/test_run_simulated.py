"""palm run --simulate as a person reads it; palm run without --simulate.

The JSON run with its figures, the strace proof and the signals are in
test_daemon_process.py.
"""

from __future__ import annotations

import re
import subprocess
import sys


def test_run_simulate_prints_a_story_a_person_can_follow() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "device", "run", "--simulate", "--scans", "3", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    events = [line for line in lines if re.match(r"^\[\s*\d+\.\d\d s\] ", line)]
    assert any("hand seen (bona fide palm)" in line for line in events)
    assert sum("result: " in line for line in events) == 3
    assert any(
        re.search(r"sealed and uploaded in \d+ ms \(HTTP 201, capture [0-9a-f-]{36}\)", e) for e in events
    )
    summary = lines[lines.index("summary: 3 scans") :]
    assert any(line.strip().startswith("end_to_end") for line in summary)
    assert re.search(r"^  bona_fide +presented +\d+: accepted \d", "\n".join(summary), re.M)
    # The log lines on stderr are plain sentences, not JSON, and nothing went wrong.
    assert "palm: info: ready: the camera delivers frames" in proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr
