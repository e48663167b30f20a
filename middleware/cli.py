"""The ``ostracon`` command line: run the sidecar, run the demo, print the version."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from . import __version__
from .config import ConfigError, load_config
from .logs import configure

app = typer.Typer(
    name="ostracon",
    help="Governance sidecar for LLM multi-agent systems on a Kafka bus.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file; omitted = all defaults."),
    ] = None,
) -> None:
    """Run the sidecar: consume the inbound topics, decide, forward.

    With no kafka.bootstrap_servers in the config, the embedded broker is started on a free
    loopback port and its address is logged. SIGTERM/SIGINT finish the batch in flight,
    commit and exit 0.
    """
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    configure(cfg.log.level, cfg.log.format)
    from .transport.kafka import serve

    asyncio.run(serve(cfg))


@app.command()
def demo(
    delay: Annotated[
        float, typer.Option(help="Seconds between the scripted agents' messages.")
    ] = 0.3,
) -> None:
    """Embedded broker + sidecar + a scripted team in which one agent seeds a false claim."""
    from .demo import run_demo

    configure("error", "console")  # the demo narrates; logs would interleave
    raise typer.Exit(asyncio.run(run_demo(delay=delay)))


@app.command()
def replay(
    file: Annotated[
        Path,
        typer.Argument(
            help="Transcript: JSONL envelopes, a JSON list of chat messages, or a JSON object "
            "with a 'messages' or 'history' list."
        ),
    ],
    fmt: Annotated[
        Literal["text", "json"],
        typer.Option("--format", "-f", help="text: tables; json: one JSON object on stdout."),
    ] = "text",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder; default <FILE stem>.replay/ beside it."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file; omitted = all defaults."),
    ] = None,
    rules: Annotated[
        list[str] | None,
        typer.Option(
            "--rules",
            "-r",
            help="What-if: candidate rule file or directory (repeat, or a comma-separated "
            "list) replacing the config's rules.paths; prints the messages that would change.",
        ),
    ] = None,
) -> None:
    """Replay a recorded transcript through the core; rank the root causes of false claims.

    Writes genealogy.json, genealogy.graphml and a self-contained genealogy.html.
    With --rules, also replays it with the candidate rules and shows what would change
    (the outputs and the ranking stay those of the current rules).
    Unusable input, config or rules exit 2 with the file and line or item.
    """
    from .replay import main as replay_main

    raise typer.Exit(replay_main(file, fmt, out, config, rules))


@app.command()
def judge(
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="YAML config file with judge.enabled: true."),
    ],
) -> None:
    """Run the optional LLM judge: check held claims with an OpenAI-compatible endpoint.

    Consumes the quarantine topic of the sidecar's broker (kafka.bootstrap_servers) and
    publishes its verdicts to the first inbound topic as tool results. Exits 2 when the
    judge is disabled, httpx is missing or no broker address is configured.
    """
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    problem = ""
    if not cfg.judge.enabled:
        problem = f"{config}: judge.enabled is false; set it to true to run the judge"
    elif cfg.kafka.bootstrap_servers is None:
        problem = f"{config}: the judge needs kafka.bootstrap_servers (the sidecar's broker)"
    else:
        try:
            import httpx  # noqa: F401
        except ImportError:
            problem = "the judge needs httpx: pip install 'ostracon[judge]'"
    if problem:
        from rich.markup import escape  # "[judge]" is not markup

        err.print(f"[red]error:[/red] {escape(problem)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    configure(cfg.log.level, cfg.log.format)
    from .judge import run_judge

    asyncio.run(run_judge(cfg))


rules_app = typer.Typer(help="Validate, test and explain rule files.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@rules_app.command("validate")
def rules_validate(
    paths: Annotated[
        list[Path], typer.Argument(help="Rule files or directories of *.yaml, in load order.")
    ],
) -> None:
    """Load, merge and type-check rule files; exit 1 with file:line:col and a hint."""
    from .rules import load_rules

    try:
        ruleset = load_rules(paths)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True, markup=True)
        raise typer.Exit(1) from None
    enabled = len(ruleset.enabled)
    typer.echo(
        f"ok: {len(ruleset.files)} file(s), {len(ruleset.rules)} rule(s) ({enabled} enabled), "
        f"{len(ruleset.macros)} macro(s), {len(ruleset.lists)} list(s)"
    )


@rules_app.command("test")
def rules_test(
    paths: Annotated[
        list[Path], typer.Argument(help="Test files, or directories of them (*.yaml, recursive).")
    ],
) -> None:
    """Run rule test cases (format: rules/README.md): a PASS/FAIL line per case.

    Exit 0 when all pass, 1 when a case fails, 2 for an unusable test or rule file.
    """
    from rich.markup import escape

    from .rules_testing import main

    def fail(message: str) -> None:
        err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)

    raise typer.Exit(main(paths, typer.echo, fail))


@rules_app.command("explain")
def rules_explain(
    message: Annotated[Path, typer.Argument(help="One envelope, as JSON or YAML.")],
    rules: Annotated[
        list[Path] | None,
        typer.Option(
            "--rules", "-r", help="Rule file or directory (repeat); default: the config's."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file; omitted = all defaults."),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option("--history", help="Envelopes decided first: JSONL or a YAML/JSON list."),
    ] = None,
) -> None:
    """Show how each rule evaluates one message: operands, field values, exceptions, the
    winner and the final verdict. The message's conversation defaults to "test", its kind
    to "chat" and its content to "". Unusable input exits 2."""
    import msgspec
    from rich.markup import escape

    from .config import RulesConfig
    from .pipeline import build_core
    from .rules import explain
    from .rules_testing import load_envelope, load_history, print_explanation

    try:
        cfg = load_config(config)
        if rules:
            cfg = msgspec.structs.replace(cfg, rules=RulesConfig(paths=[str(p) for p in rules]))
        if not cfg.rules.paths:
            raise ConfigError(str(config or "--rules"), None, "", "no rule files: give --rules")
        core = build_core(cfg)
        before = load_history(history) if history else []
        env = load_envelope(message)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for past in before:
        core.decide(past)
    print_explanation(explain(core, env), Console(highlight=False))


@app.command()
def version() -> None:
    """Print the ostracon version."""
    typer.echo(f"ostracon {__version__}")


if __name__ == "__main__":  # pragma: no cover
    app()
