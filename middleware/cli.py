"""The ``ostracon`` command line: run the sidecar, run the demo, print the version."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from . import __version__
from .config import ConfigError, load_config
from .logs import configure

# numpy (the cascade monitor's spectral radius, quorum aggregation) works on matrices of a
# few agents; OpenBLAS would start a thread per core that spins after every call, taking a
# core from the event loop (measured: the rules benchmark's p50 moved between 40 and 60 us
# with it, 39-40 us without). This process owns its BLAS: one thread, unless told otherwise.
# (Set before numpy is first imported, which no import above does.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

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
    serve: Annotated[
        bool, typer.Option(help="After the run, serve the review UI until Ctrl-C.")
    ] = True,
    serve_seconds: Annotated[
        float | None,
        typer.Option(min=0, help="Serve the review UI this long, then exit (for scripts)."),
    ] = None,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Loopback port of the UI (taken: any free).")
    ] = 8470,
) -> None:
    """Embedded broker + sidecar + a scripted team in which one agent seeds a false claim.

    Then prints the review UI's address and token and serves it (release or deny the held
    messages there) until Ctrl-C; --no-serve exits after the run.
    """
    from .demo import run_demo

    configure("error", "console")  # the demo narrates; logs would interleave
    seconds = serve_seconds if serve else 0  # None: until Ctrl-C
    raise typer.Exit(asyncio.run(run_demo(delay=delay, serve=seconds, api_port=port)))


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


identity_app = typer.Typer(help="Agent keys and signed envelopes.", no_args_is_help=True)
app.add_typer(identity_app, name="identity")


@identity_app.command("keygen")
def identity_keygen(
    agent: Annotated[str, typer.Option("--agent", "-a", help="The agent's sender name.")] = "agent",
    hmac_secret: Annotated[
        bool, typer.Option("--hmac", help="A shared HMAC-SHA256 secret instead of Ed25519.")
    ] = False,
) -> None:
    """Print a new Ed25519 key pair (or HMAC secret) for one agent, ready for the config."""
    import re

    from .identity import ED25519, HMAC, keygen

    var = (
        "OSTRACON_"
        + ("SECRET_" if hmac_secret else "KEY_")
        + re.sub(r"[^A-Z0-9]+", "_", agent.upper()).strip("_")
    )
    secret, public = keygen(HMAC if hmac_secret else ED25519)
    if hmac_secret:
        typer.echo(
            f"# shared secret: in the agent's and the sidecar's environment only\n{var}={secret}"
        )
        entry = f"hmac_secret_env: {var}"
    else:
        typer.echo(f"# private key: give it to the agent only (e.g. as {var})\n{var}={secret}")
        entry = f"ed25519_public_key: {public}"
    typer.echo(f"# ostracon.yaml\nidentity:\n  agents:\n    {agent}:\n      {entry}")


@identity_app.command("sign")
def identity_sign(
    key_env: Annotated[
        str, typer.Option("--key-env", help="Env var holding the Ed25519 private key or secret.")
    ],
    hmac_secret: Annotated[bool, typer.Option("--hmac", help="The key is an HMAC secret.")] = False,
    file: Annotated[
        Path | None, typer.Argument(help="JSON-lines envelopes; omitted = stdin.")
    ] = None,
) -> None:
    """Sign envelopes (one JSON object per line) and print them with ``sig`` set."""
    import os
    import sys

    from .envelope import InvalidEnvelope, decode, encode
    from .identity import Ed25519Signer, HmacSigner, Signer, sign

    key = os.environ.get(key_env, "")
    if not key:
        err.print(f"[red]error:[/red] environment variable {key_env} is unset", highlight=False)
        raise typer.Exit(2)
    try:
        signer: Signer = HmacSigner(key) if hmac_secret else Ed25519Signer(key)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {key_env}: {exc}", highlight=False)
        raise typer.Exit(2) from None
    lines = file.read_text(encoding="utf-8").splitlines() if file else sys.stdin
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            envelope = decode(line.encode(), 1 << 30)
        except InvalidEnvelope as exc:
            err.print(f"[red]error:[/red] {file or '<stdin>'}:{n}: {exc}", highlight=False)
            raise typer.Exit(2) from None
        typer.echo(encode(sign(envelope, signer)).decode())


blocklist_app = typer.Typer(
    help="The shared blocklist: human blocks and unblocks as state events (audited).",
    no_args_is_help=True,
)
app.add_typer(blocklist_app, name="blocklist")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config with kafka.bootstrap_servers.")
]
ByOpt = Annotated[
    str | None, typer.Option("--by", help="Who decides (audit); default human:$USER.")
]


def _state_cli(config: Path | None, action: object) -> None:
    """Run one state-topic client action (ostracon.transport.state) against the cluster of
    ``config``; a config without kafka.bootstrap_servers, or a broker error, exits 2."""
    from rich.markup import escape

    from .transport.state import cli_action

    try:
        cfg = load_config(config)
        if cfg.kafka.bootstrap_servers is None:
            where = str(config or "--config")
            problem = "needed to reach the running cluster"
            raise ConfigError(where, None, "kafka.bootstrap_servers", problem)
        typer.echo(asyncio.run(cli_action(cfg, action)))  # type: ignore[arg-type]
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (OSError, RuntimeError, TimeoutError) as exc:  # broker unreachable, ...
        err.print(f"[red]error:[/red] {escape(repr(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@blocklist_app.command("add")
def blocklist_add(
    agent: Annotated[str, typer.Argument(help="The agent to block.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (shown on its messages).")],
    by: ByOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Block an agent on every instance (an AgentBlocked event on topics.state)."""
    from .transport.state import HumanAction

    _state_cli(config, HumanAction("block", agent, reason, by))


@blocklist_app.command("remove")
def blocklist_remove(
    agent: Annotated[str, typer.Argument(help="The agent to unblock.")],
    why: Annotated[str, typer.Option("--why", help="Why (audit).")] = "",
    by: ByOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Unblock an agent: overrides every accusation and block made before now."""
    from .transport.state import HumanAction

    _state_cli(config, HumanAction("unblock", agent, why, by))


@blocklist_app.command("list")
def blocklist_list(
    config: ConfigOpt = None,
    fmt: Annotated[Literal["text", "json"], typer.Option("--format", "-f")] = "text",
) -> None:
    """The blocklist every instance computes from the state topic, with the accusations
    against each agent and the accusers' credibility."""
    from .transport.state import HumanAction

    _state_cli(config, HumanAction("list", "", fmt, None))


@app.command()
def accuse(
    accused: Annotated[str, typer.Argument(help="The agent accused.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why.")],
    evidence: Annotated[
        list[str] | None, typer.Option("--evidence", "-e", help="Message id (repeat).")
    ] = None,
    conversation: Annotated[str, typer.Option(help="Where the evidence is.")] = "",
    by: ByOpt = None,
    config: ConfigOpt = None,
) -> None:
    """A human accusation (AccusationMade, source human) for the blocklist strategy to weigh."""
    from .transport.state import HumanAction

    _state_cli(
        config, HumanAction("accuse", accused, reason, by, list(evidence or ()), conversation)
    )


@app.command()
def version() -> None:
    """Print the ostracon version."""
    typer.echo(f"ostracon {__version__}")


if __name__ == "__main__":  # pragma: no cover
    app()
