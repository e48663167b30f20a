"""Config loading: defaults, valid files, and errors that name file, line and field."""

from pathlib import Path

import pytest

from ostracon.config import Config, ConfigError, load_config, parse_config


def test_no_file_means_defaults_with_embedded_broker() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.kafka.bootstrap_servers is None
    assert cfg.topics.inbound == ["agents.inbound"]
    assert cfg.output_topics == ["agents.delivered", "ostracon.quarantine", "ostracon.dead-letter"]


def test_empty_file_means_defaults() -> None:
    assert parse_config("# nothing here\n") == Config()


def test_valid_file(tmp_path: Path) -> None:
    p = tmp_path / "ostracon.yaml"
    p.write_text(
        "kafka:\n"
        "  bootstrap_servers: broker:9092\n"
        "topics:\n"
        "  inbound: [a, b]\n"
        "  delivered: out\n"
        "blocklist:\n"
        "  verdict: quarantine\n"
        "  agents:\n"
        "    mallory: forged tool output\n"
    )
    cfg = load_config(p)
    assert cfg.kafka.bootstrap_servers == "broker:9092"
    assert cfg.topics.inbound == ["a", "b"] and cfg.topics.delivered == "out"
    assert cfg.blocklist.agents == {"mallory": "forged tool output"}
    assert cfg.blocklist.verdict == "quarantine"


@pytest.mark.parametrize(
    ("text", "line", "field", "needle"),
    [
        ("kafka:\n  group_id: 7\n", 2, "kafka.group_id", "Expected `str`, got `int`"),
        ("topics:\n  inbound:\n    - a\n    - 5\n", 4, "topics.inbound[1]", "Expected `str`"),
        ("topics:\n  inbound: []\n", 2, "topics.inbound", "length"),
        ("\nlimits:\n  max_batch: 0\n", 3, "limits.max_batch", ">= 1"),
        ("kafka:\n  group_id: g\ntopcs:\n  inbound: [x]\n", 3, "topcs", "unknown field"),
        ("blocklist:\n  verdict: deliver\n", 2, "blocklist.verdict", "Invalid enum value"),
        ("log:\n  level: loud\n", 2, "log.level", "loud"),
    ],
)
def test_errors_name_file_line_and_field(text: str, line: int, field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "ostracon.yaml")
    err = info.value
    assert (err.file, err.line, err.field) == ("ostracon.yaml", line, field)
    assert needle in err.problem
    assert str(err).startswith(f"ostracon.yaml:{line}: {field}: ")


def test_heartbeat_must_be_below_session_timeout() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            "kafka:\n  session_timeout_ms: 3000\n  heartbeat_interval_ms: 3000\n", "k.yaml"
        )
    assert info.value.line == 3 and info.value.field == "kafka.heartbeat_interval_ms"


def test_unsafe_yaml_tags_are_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("kafka: !!python/object:os.system {}\n", "x.yaml")
    assert "invalid YAML" in str(info.value)


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("kafka:\n  group_id: [unclosed\n", "x.yaml")
    assert info.value.line is not None and info.value.line >= 2
    assert "invalid YAML" in str(info.value)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("- a\n- b\n", "x.yaml")
    assert info.value.line == 1 and "object" in info.value.problem


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value) and "cannot read" in str(info.value)


def test_example_config_is_valid_and_lists_the_defaults() -> None:
    example = Path(__file__).parents[2] / "examples" / "ostracon.yaml"
    assert load_config(example) == Config()


def test_relative_rule_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like Prometheus' rule_files: the same config works from any working directory."""
    conf = tmp_path / "etc" / "ostracon.yaml"
    conf.parent.mkdir()
    conf.write_text(f"rules:\n  paths: [rules/, ../packs/strict.yaml, {tmp_path}/abs.yaml]\n")
    monkeypatch.chdir(tmp_path.parent)
    cfg = load_config(conf)
    assert cfg.rules.paths == [
        str(tmp_path / "etc" / "rules"),
        str(tmp_path / "packs" / "strict.yaml"),
        str(tmp_path / "abs.yaml"),
    ]
    # Text without a file (parse_config) has no directory to be relative to.
    assert parse_config("rules:\n  paths: [rules/]\n").rules.paths == ["rules/"]
