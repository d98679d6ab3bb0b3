"""One entry point for every attribution method: exact unrolled differentiation, or an influence
function per seed (:mod:`dtda.attribute.influence`). Runs and configs name methods through here."""

from __future__ import annotations

from dtda.samples import SeedSamples

UNROLL = "unroll"


def method_options() -> dict[str, dict[str, object]]:
    """Every method name -> its solver options with their defaults ("unroll" takes none here)."""
    from dtda.attribute.influence import COMMON_OPTIONS, METHODS

    return {UNROLL: {}, **{name: {**COMMON_OPTIONS, **spec.options} for name, spec in METHODS.items()}}


def attribute(ensemble, measure, method: str = UNROLL, *, mode: str = "reverse",
              damping: str | float = "training-time", fisher: str = "true", modules=None,
              options: dict | None = None) -> SeedSamples:
    """Per-seed removal effects of ``ensemble`` by ``method`` (a name from :func:`method_options`).

    ``mode`` applies to unrolling; ``damping``, ``fisher``, ``modules`` to influence functions;
    ``options`` may hold the options of several methods: each method takes those it knows.
    """
    known = method_options()
    if method not in known:
        raise ValueError(f"method must be one of {', '.join(known)}, got {method!r}")
    if method == UNROLL:
        from dtda.attribute.unroll import unroll

        return unroll(ensemble, measure, mode=mode)
    from dtda.attribute.influence import influence

    mine = {k: v for k, v in (options or {}).items() if k in known[method]}
    return influence(ensemble, measure, method=method, damping=damping, fisher=fisher,
                     modules=list(modules) if modules else None, **mine)
