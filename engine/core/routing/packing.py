"""Arrays in a router file: little-endian floats, zlib-compressed, base64 text."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["pack_array", "unpack_array"]


def pack_array(array: np.ndarray, dtype: str = "<f4") -> dict[str, Any]:
    """``array``, flattened and stored as ``dtype`` (``<f4`` or ``<f2``)."""
    data = np.ascontiguousarray(np.ravel(array), dtype).tobytes()
    return {"dtype": dtype, "length": int(np.size(array)),
            "base64": base64.b64encode(zlib.compress(data, 9)).decode("ascii"),
            "encoding": "zlib+base64"}


def unpack_array(packed: Mapping[str, Any], dtypes: tuple[str, ...] = ("<f4",)) -> np.ndarray:
    """The flat float32 array :func:`pack_array` stored, if it was stored as one of
    ``dtypes``.

    Raises:
        ValueError: another encoding or type, or a length that does not match.
    """
    if packed.get("encoding") != "zlib+base64" or packed.get("dtype") not in dtypes:
        raise ValueError(f"unknown array encoding {packed.get('encoding')!r} "
                         f"of {packed.get('dtype')!r}")
    out = np.frombuffer(zlib.decompress(base64.b64decode(packed["base64"])), packed["dtype"])
    if len(out) != packed["length"]:
        raise ValueError("array size does not match its length")
    return out.astype(np.float32)
