"""The router's engine: everything it decides and does, in layers (docs/architecture.md).

Each layer is a subpackage with its own front door (its ``__all__``): ``engine.core`` (sans-IO
decisions and data), ``engine.wire`` (the OpenAI and Anthropic codecs), ``engine.runtime``
(trio: the gateway and what it runs), ``engine.stores``, ``engine.training`` (offline) and
``engine.testing`` (the fake upstream). The two modules here are the vocabulary every layer
shares: :mod:`engine.messages` (the canonical request, result and stream events) and
:mod:`engine.errors` (the one error tree). :mod:`engine.frozen` builds frozen dataclasses
for less on the hot paths.
"""

from . import errors, messages

__all__ = ["errors", "messages"]
