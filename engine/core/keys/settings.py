"""What a client key may do, as the admin API takes it (``POST`` whole, ``PATCH`` in part)
and as the router keeps it. Sans-IO; pydantic validates the bodies.

>>> s = KeySettings.model_validate({"name": "team-a", "models": ["auto", "claude-haiku"],
...     "max_tier": 2, "rpm": 60, "budget_usd": 25.0})
>>> s.budget_period, s.allows_model("claude-haiku"), s.allows_model("claude-opus")
('month', True, False)
>>> s.updated({"rpm": None, "max_tier": 3}).rpm is None
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .budget import Period

__all__ = ["KeyRecord", "KeySettings"]

_METADATA_BYTES = 16_384
_ModelName = Annotated[str, Field(min_length=1, max_length=200)]


class KeySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=200)
    #: The models the key may ask for by name (``auto``: routed); None: every model.
    models: tuple[_ModelName, ...] | None = Field(default=None, max_length=1000)
    #: Routing never picks a tier above this (the cheapest allowed tier that fits).
    max_tier: int | None = Field(default=None, ge=1, le=100)
    rpm: int | None = Field(default=None, ge=1, le=10_000_000)
    tpm: int | None = Field(default=None, ge=1, le=10_000_000_000)
    budget_usd: float | None = Field(default=None, ge=0, le=1e12)
    budget_period: Period = "month"
    expires_at: datetime | None = None
    metadata: dict[str, Any] = Field(
        default_factory=dict, description=f"At most {_METADATA_BYTES} bytes of JSON.")

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(orjson.dumps(value)) > _METADATA_BYTES:
            raise ValueError(f"metadata must be at most {_METADATA_BYTES} bytes of JSON")
        return value

    def allows_model(self, name: str) -> bool:
        return self.models is None or name in self.models

    def updated(self, changes: dict[str, Any]) -> KeySettings:
        """These settings with ``changes`` (a ``PATCH`` body: the keys it names, ``null``
        clearing a limit), validated as a whole."""
        return KeySettings.model_validate(self.model_dump() | changes)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at.timestamp() <= now


@dataclass(slots=True)
class KeyRecord:
    """A key as stored: never its secret, only the secret's digest and public prefix."""

    id: str
    digest: str
    prefix: str
    settings: KeySettings
    created_at: float
    revoked_at: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The admin API's view: settings, id, prefix, times; never a secret or digest."""
        out = self.settings.model_dump(mode="json")
        out.update(id=self.id, prefix=self.prefix, created_at=_iso(self.created_at),
                   revoked_at=_iso(self.revoked_at) if self.revoked_at is not None else None)
        if self.usage:
            out["usage"] = self.usage
        return out


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
