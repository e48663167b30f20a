"""Propagation risk: how dangerous it is to let a claim spread, scored on the receiving side.

Every component is in [0, 1] and observed by ostracon, never reported by the sender (a
sender's own confidence is ignored: one agent claiming 1.0 collapses confidence-weighted
schemes). The score is a weighted sum; a message's risk is its riskiest claim's.

| component     | 1.0 means                                   | weight |
|---------------|---------------------------------------------|--------|
| ungrounded    | no tool result, human or trusted source     | 0.30   |
| contradiction | disagrees with an established value         | 0.30   |
| reach         | 5+ agents already repeat it                 | 0.10   |
| depth         | a repeat of a repeat, 4+ hops from its root | 0.10   |
| hub           | the sender is a hub (role or observed)      | 0.10   |
| reputation    | the sender's earlier claims were all Red    | 0.10   |
"""

from __future__ import annotations

WEIGHTS = {
    "ungrounded": 0.30,
    "contradiction": 0.30,
    "reach": 0.10,
    "depth": 0.10,
    "hub": 0.10,
    "reputation": 0.10,
}


def components(
    grounded: bool, contradicted: bool, reach: int, depth: int, hub: bool, bad_ratio: float
) -> dict[str, float]:
    """The score's inputs, each in [0, 1]; kept in the decision for explanation."""
    return {
        "ungrounded": 0.0 if grounded else 1.0,
        "contradiction": 1.0 if contradicted else 0.0,
        "reach": min(1.0, max(0, reach - 1) / 4),
        "depth": min(1.0, depth / 4),
        "hub": 1.0 if hub else 0.0,
        "reputation": min(1.0, max(0.0, bad_ratio)),
    }


def score(parts: dict[str, float]) -> float:
    return round(sum(WEIGHTS[name] * value for name, value in parts.items()), 3)
