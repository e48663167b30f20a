"""The command line: help everywhere, version, and config errors without a traceback."""

from pathlib import Path

from typer.testing import CliRunner

from ostracon import __version__
from ostracon.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"ostracon {__version__}"


def test_help_everywhere() -> None:
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for command in ("run", "demo", "version"):
        assert command in top.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, sub.output
        assert "Usage" in sub.output
    assert "--config" in runner.invoke(app, ["run", "--help"]).output
    assert "--delay" in runner.invoke(app, ["demo", "--help"]).output


def test_run_with_unknown_field_names_it_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "ostracon.yaml"
    cfg.write_text("topics:\n  inbound: [a]\n  deliverd: b\n")
    result = runner.invoke(app, ["run", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "ostracon.yaml:3: topics.deliverd: Object contains unknown field" in result.output
    assert "Traceback" not in result.output
