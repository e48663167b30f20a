"""Hot reload of rule files: the watcher's signature, swaps, broken files, SIGHUP requests."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ostracon.config import Config, ContainmentConfig, RulesConfig
from ostracon.core import Core
from ostracon.decision import Alert, Severity, Verdict
from ostracon.envelope import Envelope, Kind
from ostracon.pipeline import build_core
from ostracon.reload import ALERT_FAILED, ALERT_RELOADED, RulesReloader, signature
from ostracon.rules import RulesStage, load_rules

QUARANTINE = """\
- rule: flagged
  condition: meta.flag == "x"
  actions: {quarantine: {reason: "flagged"}}
"""
BLOCK = """\
- rule: flagged
  condition: meta.flag == "x"
  actions: {block: {reason: "flagged"}}
"""
BROKEN = """\
- rule: flagged
  condition: meta.flag == "x" and nonsense > 1
  actions: {block: {reason: "flagged"}}
"""


def bump(path: Path, text: str | None = None) -> None:
    """Rewrite ``path`` (same text by default) with an mtime surely different from before."""
    if text is not None:
        path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_signature_sees_files_added_changed_and_removed_in_a_directory(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(QUARANTINE)
    (rules / "notes.txt").write_text("not a rule file")
    paths = [str(rules)]
    first = signature(paths)
    assert [Path(f).name for f, *_ in first] == ["a.yaml"]
    assert signature(paths) == first  # unchanged: no reload

    (rules / "notes.txt").write_text("other files do not count")
    assert signature(paths) == first

    (rules / "b.yml").write_text(BLOCK)
    added = signature(paths)
    assert added != first and len(added) == 2

    bump(rules / "b.yml")  # same content, touched: a save counts
    touched = signature(paths)
    assert touched != added

    (rules / "b.yml").write_text(BLOCK + "# a comment\n")
    assert signature(paths) != touched

    (rules / "b.yml").unlink()
    assert signature(paths) == first


def test_signature_of_a_missing_file_never_raises(tmp_path: Path) -> None:
    f = tmp_path / "gone.yaml"
    assert signature([f]) == ((str(f), -1, -1, -1),)
    f.write_text(QUARANTINE)
    assert signature([f])[0][1:] != (-1, -1, -1)
    assert signature([tmp_path / "no-dir" / "x.yaml"])[0][1] == -1


def core_with(path: Path, **rules: object) -> tuple[Core, RulesReloader]:
    cfg = Config(
        containment=ContainmentConfig(policy="low-intervention"),
        rules=RulesConfig(paths=[str(path)], **rules),  # type: ignore[arg-type]
    )
    core = build_core(cfg)
    reloader = RulesReloader.for_core(core, cfg.rules)
    assert reloader is not None
    return core, reloader


def verdict(core: Core, n: int) -> Verdict:
    env = Envelope(
        id=f"m-{n}", conversation="c", sender="a", kind=Kind.CHAT, content="", meta={"flag": "x"}
    )
    return core.decide(env).verdict


def test_a_changed_file_is_swapped_in_and_an_unchanged_one_is_not_reloaded(
    tmp_path: Path,
) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(QUARANTINE)
    core, reloader = core_with(f)
    assert reloader.check() is None  # nothing changed
    assert verdict(core, 1) is Verdict.QUARANTINE

    bump(f, BLOCK)
    alert = reloader.check()
    assert alert is not None and alert.kind == ALERT_RELOADED
    assert alert.severity is Severity.INFO and alert.rules == ["flagged"]
    assert "1 rules, 1 enabled, from 1 files" in alert.summary
    assert verdict(core, 2) is Verdict.BLOCK
    assert reloader.check() is None and reloader.reloads == 1


def test_a_broken_file_keeps_the_old_set_and_alerts_once_with_its_position(
    tmp_path: Path,
) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(QUARANTINE)
    core, reloader = core_with(f)
    stage = reloader.stage
    before = stage.ruleset

    bump(f, BROKEN)
    alert = reloader.check()
    assert alert is not None and alert.kind == ALERT_FAILED
    assert alert.severity is Severity.CRITICAL and alert.conversation == ""
    assert alert.summary.startswith(f"{f}:2:")  # file:line:col: field: problem
    assert "rule flagged.condition" in alert.summary and "nonsense" in alert.summary
    assert stage.ruleset is before and verdict(core, 1) is Verdict.QUARANTINE
    assert reloader.check() is None  # reported once, not on every poll

    bump(f, BLOCK)  # fixed: reloads
    alert = reloader.check()
    assert alert is not None and alert.kind == ALERT_RELOADED
    assert verdict(core, 2) is Verdict.BLOCK
    assert (reloader.reloads, reloader.failures) == (1, 1)


def test_a_forced_reload_runs_even_unchanged_or_with_watching_off(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(QUARANTINE)
    core, reloader = core_with(f, reload=False)
    bump(f, BLOCK)
    assert reloader.check() is None  # not watching: the edit waits for SIGHUP
    assert verdict(core, 1) is Verdict.QUARANTINE
    alert = reloader.check(force=True)
    assert alert is not None and alert.kind == ALERT_RELOADED and "(sighup)" in alert.summary
    assert verdict(core, 2) is Verdict.BLOCK
    assert reloader.check(force=True) is not None  # unchanged, still reloads when asked


def test_a_file_written_during_the_load_is_retried_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A half-saved file fails to load; if it moved meanwhile, no alert: the next poll retries."""
    f = tmp_path / "rules.yaml"
    f.write_text(QUARANTINE)
    core, reloader = core_with(f)
    import ostracon.reload as reload_mod

    real = reload_mod.load_rules

    def half_saved(paths: list[str]) -> object:
        bump(f, BLOCK)  # the editor finishes its save while we read
        raise reload_mod.ConfigError(str(f), 1, "", "invalid YAML: truncated")

    monkeypatch.setattr(reload_mod, "load_rules", half_saved)
    bump(f, "- rule: fla")
    assert reloader.check() is None and reloader.failures == 0
    monkeypatch.setattr(reload_mod, "load_rules", real)
    alert = reloader.check()
    assert alert is not None and alert.kind == ALERT_RELOADED
    assert verdict(core, 1) is Verdict.BLOCK


def test_a_loader_bug_is_an_alert_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(QUARANTINE)
    core, reloader = core_with(f)
    import ostracon.reload as reload_mod

    def bug(paths: list[str]) -> object:
        raise RecursionError("deep")

    monkeypatch.setattr(reload_mod, "load_rules", bug)
    alert = reloader.check(force=True)
    assert alert is not None and alert.kind == ALERT_FAILED
    assert "internal error" in alert.summary and "RecursionError" in alert.summary
    assert verdict(core, 1) is Verdict.QUARANTINE


def test_no_reloader_without_rule_files() -> None:
    core = build_core(Config())
    assert RulesReloader.for_core(core, Config().rules) is None
    stage = RulesStage(load_rules([]))
    assert RulesReloader.for_core(Core([stage]), RulesConfig(paths=[])) is None


async def test_the_watcher_polls_publishes_and_wakes_on_request(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(QUARANTINE)
    cfg = Config(rules=RulesConfig(paths=[str(f)], reload_interval_s=0.05))
    core = build_core(cfg)
    published: list[Alert] = []

    async def publish(alert: Alert) -> None:
        published.append(alert)
        if len(published) == 1:
            raise ConnectionError("broker away")  # logged; the watcher keeps going

    reloader = RulesReloader.for_core(core, cfg.rules, publish)
    assert reloader is not None
    task = asyncio.create_task(reloader.run())
    try:

        async def until(n: int) -> None:
            for _ in range(200):
                if len(published) >= n:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"{len(published)} alerts, expected {n}")

        bump(f, BROKEN)
        await until(1)
        assert published[0].kind == ALERT_FAILED
        bump(f, BLOCK)
        await until(2)
        assert published[1].kind == ALERT_RELOADED and "(change)" in published[1].summary
        reloader.interval_s = 60.0  # only a request can wake it now
        await asyncio.sleep(0.1)
        reloader.request()
        await until(3)
        assert "(sighup)" in published[2].summary
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
