"""Debian packages the integration tests need (Prometheus, Alertmanager, Chromium).

The test command installs them on first use when it runs as root (as CI does on a fresh
machine); elsewhere the test is skipped with the command that installs them. One lock file
serialises apt, so two test processes never run it at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

_LOCK = Path("/tmp/ostracon-apt.lock")
_updated = False


def ensure_debian(binary: str, package: str) -> str:
    """Path of ``binary``, installing Debian ``package`` first if it is missing.

    Skips the calling test (with the install command) when not root and not installed.
    """
    global _updated
    found = shutil.which(binary) or (binary if os.path.isabs(binary) else None)
    if found and os.access(found, os.X_OK):
        return found
    if os.geteuid() != 0:
        pytest.skip(f"needs {binary}: sudo apt-get install -y {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = shutil.which(binary)
        if found is None:
            if not _updated:
                subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=600)
                _updated = True
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
                check=True,
                env=env,
                timeout=900,
            )
            found = shutil.which(binary)
    if found is None:
        raise RuntimeError(f"{package} installed but {binary} is not on PATH")
    return found
