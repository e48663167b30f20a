"""Hot reload of rule files in a running sidecar.

A :class:`RulesReloader` watches the configured ``rules.paths`` (files, and directories with
their ``*.yaml`` / ``*.yml``) by polling a cheap signature (each file's path, inode, mtime and
size) every ``rules.reload_interval_s``, and reloads at once on :meth:`RulesReloader.request`
(the sidecar's SIGHUP handler; SIGHUP reloads even with ``rules.reload: false``).

A reload loads and validates the whole new set with :func:`ostracon.rules.load_rules`. On
success it swaps it into the :class:`~ostracon.rules.RulesStage`: the swap runs on the event
loop while the sidecar routes each record synchronously, so it falls between two messages and
every message is decided by exactly one set; nothing is re-read, nothing is lost. A file that
fails to load (e.g. a half-edited condition) leaves the running set in place, logs the error
and raises a critical ``rules-reload-failed`` alert whose summary is the positioned error
(``file:line:col: field: problem``); a successful reload raises an info ``rules-reloaded``
alert with the counts. A broken file is reported once, not on every poll; fixing it reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

from .config import ConfigError, RulesConfig
from .core import Core
from .decision import Alert, Severity
from .logs import get_logger
from .rules import RulesStage, _files, load_rules

log = get_logger("ostracon.reload")

# (path, inode, mtime_ns, size) per file; -1s for a file that cannot be stat-ed
Signature = tuple[tuple[str, int, int, int], ...]

ALERT_FAILED = "rules-reload-failed"
ALERT_RELOADED = "rules-reloaded"


def signature(paths: Iterable[str | Path]) -> Signature:
    """What changes whenever a rule file is added, removed, replaced or edited.

    Lists the files exactly as :func:`load_rules` does. Never raises: an unreadable path is
    part of the signature (its load will fail with a positioned error).
    """
    out: list[tuple[str, int, int, int]] = []
    for path in paths:
        try:
            files = _files([path])
        except OSError:  # e.g. a directory removed or unreadable while being listed
            out.append((str(path), -1, -1, -1))
            continue
        for f in files:
            try:
                st = f.stat()
            except OSError:
                out.append((str(f), -1, -1, -1))
            else:
                # The inode catches a same-size replace by rename within one mtime tick.
                out.append((str(f), st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class RulesReloader:
    """Reloads a :class:`RulesStage` when its files change or on :meth:`request`."""

    def __init__(
        self,
        stage: RulesStage,
        paths: Sequence[str | Path],
        interval_s: float = 1.0,
        watch: bool = True,
        publish: Callable[[Alert], Awaitable[None]] | None = None,
    ) -> None:
        self.stage = stage
        self.paths = list(paths)
        self.interval_s = interval_s
        self.watch = watch
        self.publish = publish  # sends an alert record (the sidecar's alerts topic)
        # Taken right after the stage's set was loaded: a change in between goes unnoticed
        # until the next edit or SIGHUP.
        self.seen = signature(self.paths)
        self.reloads = 0
        self.failures = 0
        self._forced = False
        self._retry = False  # a load that failed while the files were being written
        self._wake = asyncio.Event()

    @classmethod
    def for_core(
        cls,
        core: Core,
        config: RulesConfig,
        publish: Callable[[Alert], Awaitable[None]] | None = None,
    ) -> RulesReloader | None:
        """The reloader for ``core``'s rules stage, or None when there are no rule files."""
        stage = next((s for s in core.stages if isinstance(s, RulesStage)), None)
        if stage is None or not config.paths:
            return None
        return cls(stage, config.paths, config.reload_interval_s, config.reload, publish)

    def request(self) -> None:
        """Reload now, changed or not (the SIGHUP handler; call on the event loop)."""
        self._forced = True
        self._wake.set()

    def check(self, force: bool = False) -> Alert | None:
        """Reload if asked to or if the files changed; the alert to publish, if any.

        Synchronous, so the swap happens between two messages. Never raises.
        """
        if not (force or self._retry or self.watch):
            return None
        sig = signature(self.paths)
        if not (force or self._retry) and sig == self.seen:
            return None
        return self._load(sig, "sighup" if force else "change")

    def _load(self, sig: Signature, trigger: str) -> Alert | None:
        self._retry = False
        try:
            new = load_rules(self.paths)
        except Exception as exc:
            if signature(self.paths) != sig:
                # Written to while we read it (an editor mid-save): not a broken file yet.
                self._retry = True
                return None
            self.seen = sig  # report a broken file once; the next edit reloads
            self.failures += 1
            if isinstance(exc, ConfigError):  # RuleError: file:line:col: field: problem
                problem = str(exc)
            else:  # a bug in the loader must not stop the sidecar either
                problem = f"{', '.join(map(str, self.paths))}: internal error: {exc!r}"
                log.exception("rules reload crashed", trigger=trigger)
            log.error("rules reload failed; previous rules kept", error=problem, trigger=trigger)
            return Alert(
                kind=ALERT_FAILED,
                severity=Severity.CRITICAL,
                summary=problem,
                conversation="",
                ts=time.time(),  # the sidecar is a sink: it stamps wall-clock time
            )
        self.stage.swap(new)
        self.seen = sig
        self.reloads += 1
        enabled = len(new.enabled)
        log.info(
            "rules reloaded",
            trigger=trigger,
            rules=len(new.rules),
            enabled=enabled,
            files=len(new.files),
        )
        return Alert(
            kind=ALERT_RELOADED,
            severity=Severity.INFO,
            summary=f"rules reloaded ({trigger}): {len(new.rules)} rules, {enabled} enabled, "
            f"from {len(new.files)} files",
            conversation="",
            rules=[r.name for r in new.enabled],
            ts=time.time(),
        )

    async def run(self) -> None:
        """Poll every ``interval_s`` (and wake on :meth:`request`) until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            forced, self._forced = self._forced, False
            try:
                alert = self.check(forced)
            except Exception:  # check() does not raise; this keeps the watcher alive if it did
                log.exception("rules watcher error")
                continue
            if alert is not None and self.publish is not None:
                try:
                    await self.publish(alert)
                except Exception as exc:
                    log.error("rules alert not published", kind=alert.kind, error=repr(exc))
