"""Ostracon: message-layer governance for LLM multi-agent systems.

The pure decision core lives in :mod:`ostracon.core`; shells that move bytes live in
:mod:`ostracon.transport`; framework adapters in :mod:`ostracon.adapters`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ostracon")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
