"""``GET /v1/models`` as a page: Anthropic's paging (``limit``, ``after_id``, ``before_id``)
over the one list both SDKs read.

Without a paging parameter the answer is the whole list (``auto`` first, then every
configured model, up to 1,000): OpenAI's ``models.list`` reads one page and never asks for
another. With ``limit`` (1 to 1000) it is at most that many, from the start, after
``after_id`` or before ``before_id``; ``has_more`` says whether more lie that way, and
``first_id`` / ``last_id`` name the page's ends (null for an empty page), which the
Anthropic SDK follows to the next page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import RequestInvalid, echo
from engine.wire import Num, Text

from .params import int_arg

__all__ = ["AFTER_ID", "BEFORE_ID", "MODELS_LIMIT", "model_page"]

MODELS_LIMIT = Num(integer=True, low=1, high=1000, default=1000,
                   doc="How many models, at most.")
AFTER_ID = Text(min_length=1, doc="The page after this model id.")
BEFORE_ID = Text(min_length=1, doc="The page before this model id.")


def _position(ids: Sequence[str], model_id: str, param: str) -> int:
    try:
        return ids.index(model_id)
    except ValueError:
        raise RequestInvalid(f"{param} {echo(model_id)} is not a model of this router; "
                             "GET /v1/models lists them", param=param) from None


def model_page(models: Sequence[Mapping[str, Any]], args: Mapping[str, str]) -> dict[str, Any]:
    """The list shape of ``models`` as the query ``args`` page it.

    >>> ms = [{"id": "auto"}, {"id": "a"}, {"id": "b"}]
    >>> page = model_page(ms, {"limit": "2"})
    >>> [m["id"] for m in page["data"]], page["has_more"], page["last_id"]
    (['auto', 'a'], True, 'a')
    >>> page = model_page(ms, {"limit": "2", "after_id": "a"})
    >>> [m["id"] for m in page["data"]], page["has_more"]
    (['b'], False)
    >>> page = model_page(ms, {"before_id": "b", "limit": "1"})
    >>> [m["id"] for m in page["data"]], page["has_more"]
    (['a'], True)
    >>> model_page(ms, {})["has_more"]
    False
    """
    ids = [m["id"] for m in models]
    limit = int_arg(args.get("limit"), "limit", MODELS_LIMIT)
    after, before = args.get("after_id"), args.get("before_id")
    if after is not None and before is not None:
        raise RequestInvalid("give after_id or before_id, not both", param="before_id")
    if before is not None:
        end = _position(ids, before, "before_id")
        start = max(0, end - limit)
        more = start > 0
    else:
        start = 0 if after is None else _position(ids, after, "after_id") + 1
        end = min(len(ids), start + limit)
        more = end < len(ids)
    data = list(models[start:end])
    return {"object": "list", "data": data, "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}
