"""Signing benchmark: what signed identities cost per message (ostracon.identity).

Times, per message, on two envelopes (a typical one: 2 claims, 2 recipients, 1 parent,
``meta`` role / model family, 200 chars of content; a large one: 8 claims, a nested ``meta``,
4 KiB of content):

- the canonical bytes alone (RFC 8785 of the signed fields);
- signing (what an agent pays): canonical bytes + HMAC-SHA256 / Ed25519, base64;
- verifying (what the sidecar pays): ``Verifier.check`` (key lookup, canonical bytes,
  base64 decode, HMAC compare / Ed25519 verify);
- the router end to end: ``Router.route`` with identity ``off`` vs ``enforce`` (HMAC and
  Ed25519 senders) over a core with no stages, so the difference is decode-independent
  identity work (check, source-keeping dedupe, ts window).

Each figure is the best of ``--repeat`` runs of ``--messages`` calls (the run least disturbed
by other load on the machine); the router gets distinct message ids, so no call is a
duplicate; the cyclic GC is off while timing.

    python benchmarks/signing.py                     # 20 000 messages, 5 repeats
    python benchmarks/signing.py --messages 5000 --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import platform
import time
from collections.abc import Callable
from functools import partial

import msgspec

from ostracon.config import AgentKeyConfig, Config, IdentityConfig
from ostracon.core import Core
from ostracon.envelope import Claim, Envelope, Kind, encode
from ostracon.identity import Ed25519Signer, HmacSigner, Verifier, canonical, keygen, sign
from ostracon.routing import Router

NOW = 1_700_000_000.0


def typical(i: int = 0, sender: str = "alice") -> Envelope:
    return Envelope(
        id=f"m-{i}",
        conversation=f"conv-{i % 200}",
        sender=sender,
        kind=Kind.CHAT,
        content=("Q3 revenue was 8.1M USD, up 12 % on Q2; churn held at 3 %. " * 4)[:200],
        recipients=["bob", "carol"],
        parents=[f"m-{i - 1}"],
        claims=[
            Claim("q3 revenue", "8.1M USD", ["tool:sql"]),
            Claim("q3 churn", 0.03, []),
        ],
        ts=NOW + i * 0.001,
        meta={"role": "analyst", "model_family": "gpt"},
    )


def large(i: int = 0, sender: str = "alice") -> Envelope:
    return msgspec.structs.replace(
        typical(i, sender),
        content="x" * 4096,
        claims=[Claim(f"metric {k}", k * 1.25, [f"m-{k}", "tool:sql"]) for k in range(8)],
        meta={
            "role": "analyst",
            "model_family": "gpt",
            "trace": {"span": "a" * 32, "attempt": 2, "scores": [0.91, 0.12, 1e-7]},
            "framework": "langgraph",
        },
    )


def per_call_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Best over ``repeat`` runs of the mean µs per call of ``fn()`` (n calls a run)."""
    runs = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter_ns()
            for _ in range(n):
                fn()
            runs.append((time.perf_counter_ns() - start) / n / 1000)
        finally:
            gc.enable()
    return min(runs)


def router(mode: str, agents: dict[str, AgentKeyConfig]) -> Router:
    config = Config(identity=IdentityConfig(mode=mode, agents=agents))  # type: ignore[arg-type]
    return Router.from_config(config, Core([]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, repeat = args.messages, args.repeat

    seed, public = keygen()
    secret = "bench-secret-0123456789abcdef"
    ed, mac = Ed25519Signer(seed), HmacSigner(secret)
    agents = {
        "alice": AgentKeyConfig(ed25519_public_key=public),
        "bob": AgentKeyConfig(hmac_secret=secret),
    }
    verifier = Verifier(IdentityConfig(mode="enforce", agents=agents))

    print(f"python {platform.python_version()} on {platform.machine()}, n={n}, repeat={repeat}")
    print(f"{'envelope':10} {'step':34} {'µs/msg':>8}")
    for name, make in (("typical", typical), ("large", large)):
        env_ed, env_mac = make(0, "alice"), make(0, "bob")
        signed_ed, signed_mac = sign(env_ed, ed), sign(env_mac, mac)
        assert verifier.check(signed_ed)[0] is None and verifier.check(signed_mac)[0] is None
        rows = [
            ("canonical bytes", partial(canonical, env_ed)),
            ("sign HMAC-SHA256 (agent)", partial(sign, env_mac, mac)),
            ("sign Ed25519 (agent)", partial(sign, env_ed, ed)),
            ("verify HMAC-SHA256 (sidecar)", partial(verifier.check, signed_mac)),
            ("verify Ed25519 (sidecar)", partial(verifier.check, signed_ed)),
        ]
        for step, fn in rows:
            print(f"{name:10} {step:34} {per_call_us(fn, n, repeat):8.2f}")
        print(f"  ({len(encode(signed_ed))} bytes on the wire, {len(canonical(env_ed))} signed)")

    print("\nRouter.route, core with no stages (distinct ids; a fresh router per repeat):")
    wires = {
        "off": [encode(typical(i)) for i in range(n)],
        "HMAC": [encode(sign(typical(i, "bob"), mac)) for i in range(n)],
        "Ed25519": [encode(sign(typical(i, "alice"), ed)) for i in range(n)],
    }
    results = {}
    for label, mode in (("off", "off"), ("HMAC", "enforce"), ("Ed25519", "enforce")):
        data = wires[label]
        runs = []
        for _ in range(repeat):
            r = router(mode, agents if mode != "off" else {})
            route = r.route
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter_ns()
                for i, value in enumerate(data):
                    out = route(value, None, (), f"in/0/{i}", NOW + 1)
                runs.append((time.perf_counter_ns() - start) / n / 1000)
            finally:
                gc.enable()
            assert out.decision is not None, out.error  # the last one was delivered
        results[label] = min(runs)
    for label, us in results.items():
        extra = "" if label == "off" else f"  (+{us - results['off']:.2f} over off)"
        print(f"  identity {label:8} {us:8.2f} µs/msg{extra}")


if __name__ == "__main__":
    main()
