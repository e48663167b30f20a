"""``ostracon demo`` ends by serving the review UI until Ctrl-C: its printed address and token
work, and the demo's contained messages are in the queue."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx

from ostracon.transport.embedded import free_port


def test_demo_prints_and_serves_the_review_ui() -> None:
    port = free_port()
    command = [sys.executable, "-m", "ostracon", "demo", "--delay", "0.05"]
    command += ["--serve-seconds", "120", "--port", str(port)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 90
        found = None
        while found is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"review UI: (http://127\.0\.0\.1:(\d+))/ui/#token=(\S+)", line)
        assert found is not None, "".join(lines)
        url, served_port, token = found.group(1), int(found.group(2)), found.group(3)
        assert served_port == port
        assert "containment 100%" in "".join(lines)
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/api/quarantine", timeout=10).status_code == 401
        while httpx.get(f"{url}/ready", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the review queue never caught up"
            time.sleep(0.1)
        held = httpx.get(f"{url}/api/quarantine", headers=headers, timeout=10).json()["items"]
        # the hub's unverified rumour, held; the Red claim and the blocklisted agent, blocked
        assert sorted((h["sender"], h["verdict"]) for h in held) == [
            ("analyst", "block"),
            ("mallory", "block"),
            ("writer", "hold"),
        ]
        assert httpx.get(f"{url}/ui/", timeout=10).status_code == 200
        # Ctrl-C in a terminal signals the whole foreground process group (the embedded
        # broker too, unless it runs in a session of its own): the demo still exits 0.
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "review UI stopped" in out and "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
