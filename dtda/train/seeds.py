"""The seed plan: independent, named random streams per ensemble member.

Member ``seed`` draws its initialisation, batch order, dropout masks and the targets sampled for
its Fisher (influence functions, ``fisher``) from separate streams,
each seeded by a hash of ``(seed, stream name, index...)``. Streams never share state, so
changing the batch size does not change the initialisation, and replaying step t's dropout
needs only ``(seed, t)``.
"""

from __future__ import annotations

import hashlib

import torch

STREAMS = ("init", "batches", "dropout", "fisher")


def stream_seed(seed: int, stream: str, *index: int) -> int:
    """A 63-bit integer seed for ``stream`` of member ``seed`` (and optional sub-indices)."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
    key = "/".join(["dtda", stream, str(int(seed)), *(str(int(i)) for i in index)])
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``stream`` of member ``seed``."""
    gen = torch.Generator()
    gen.manual_seed(stream_seed(seed, stream))
    return gen


def check_seeds(seeds) -> list[int]:
    """``seeds`` as a list of distinct non-negative ints: an int K means ``0..K-1``."""
    if isinstance(seeds, bool):
        raise TypeError(f"seeds must be an int or a list of ints, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive number of members, got {seeds}")
        return list(range(seeds))
    try:
        ids = list(seeds)
    except TypeError:
        raise TypeError(f"seeds must be an int or a list of ints, got {type(seeds).__name__}") from None
    if not ids:
        raise ValueError("seeds must not be empty")
    for s in ids:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seeds must be non-negative ints, got {s!r} in {ids!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"seeds must be distinct, got {ids!r}")
    return ids
