"""Where Redis is: ``state.redis_url`` parsed, and described without its credentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["RedisAddress"]


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """``redis://[user:password@]host[:port][/db]`` (``rediss://`` for TLS).

        >>> RedisAddress.from_url("redis://:s3cret@cache.local:6380/2").describe()
        'redis://cache.local:6380/2'
        """
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(
                "must look like redis://host:port/db (or rediss:// for TLS)")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError("the path must be a database number, like /0")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError("the port must be a number") from None
        return cls(host=parts.hostname, port=port, db=int(path or 0),
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None,
                   tls=parts.scheme == "rediss")

    def describe(self) -> str:
        """The address for messages: never the credentials."""
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"
