"""The user side of a conversation, as the routers read it. Sans-IO.

A short follow-up ("and why?") is as hard as the question it follows, so a router scores the
conversation, not only its last message. Both routers take their view from here: the trained
router (``engine.core.routing.learned``) weights the earlier turns below the last one; the
heuristic can read :func:`conversation_text`. This module imports only ``engine.messages``, so
``engine.core.routing.scoring`` may import it without a cycle.
"""

from __future__ import annotations

from engine.messages import ChatRequest, Message, ToolResult

__all__ = ["conversation_text", "user_turns"]


def _user_text(message: Message) -> str:
    text = message.text
    if text:
        return text
    # A turn of tool results only (an agent loop): its content is what the model must read.
    return "\n".join(p.content for p in message.parts if isinstance(p, ToolResult))


def user_turns(request: ChatRequest, *, max_earlier: int | None = None) -> tuple[str, list[str]]:
    """The last user turn's text, and the earlier ones newest first (at most
    ``max_earlier``). A turn holding only tool results reads as their content.

    >>> from engine.messages import ChatRequest, Message, TextPart
    >>> turn = lambda role, text: Message(role, (TextPart(text),))
    >>> user_turns(ChatRequest(messages=(turn("user", "a"), turn("assistant", "b"),
    ...                                  turn("user", "c"))))
    ('c', ['a'])
    """
    users = [_user_text(m) for m in request.messages if m.role == "user"]
    if not users:
        return "", []
    return users[-1], users[-2::-1][:max_earlier]


def conversation_text(request: ChatRequest, *, max_chars: int = 20_000) -> str:
    """The user side of the conversation as one text, last message first, then the earlier
    user turns newest first, cut at ``max_chars`` so the last message always fits.

    A scorer that reads this sees the question a short follow-up refers to: "and why?"
    after "Prove it." carries the proof's cue.

    >>> from engine.messages import ChatRequest, Message, TextPart
    >>> turn = lambda role, text: Message(role, (TextPart(text),))
    >>> conversation_text(ChatRequest(messages=(
    ...     turn("user", "Prove it."), turn("assistant", "Done."), turn("user", "and why?"))))
    'and why?\\nProve it.'
    """
    last, earlier = user_turns(request)
    return "\n".join([last, *earlier])[:max_chars]
