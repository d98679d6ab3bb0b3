"""The Distributional result: every statistic per (example or group, measurement), with CIs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from dtda.stats.estimators import QUANTILE_PREFIX, STATISTICS, quantile_key


class Top(NamedTuple):
    """Ranked removal units: ``indices`` [k] (rows of delta: examples or groups) and ``values`` [k]."""

    indices: Tensor
    values: Tensor
    by: str
    query: str | None


@dataclass
class Distributional:
    """Distributional statistics of K paired seed samples, after removal minus before.

    Each statistic in :data:`dtda.stats.estimators.STATISTICS` is a [N, Q] tensor (N examples or
    groups, Q measurements); ``quantile_shift`` is [L, N, Q] for ``levels``. ``ci`` maps statistic
    names (``quantile_<p>`` for quantile shifts) to [2, N, Q] percentile intervals (lower, upper)
    at ``confidence`` from ``bootstrap`` seed resamples drawn with ``bootstrap_seed``; it is empty
    when ``bootstrap`` is 0.
    """

    mean: Tensor
    var_increase: Tensor
    var_increase_first_order: Tensor
    w2: Tensor
    shape_w2: Tensor
    w2_smoothed: Tensor
    w2_lower: Tensor
    w2_upper: Tensor
    sign_agreement: Tensor
    z: Tensor
    p: Tensor
    t: Tensor
    p_t: Tensor
    cov: Tensor
    delta_var: Tensor
    quantile_shift: Tensor
    levels: tuple[float, ...]
    names: list[str]
    K: int
    method: str
    groups: list[list[int]] | None = None
    ci: dict[str, Tensor] = field(default_factory=dict)
    confidence: float = 0.95
    bootstrap: int = 0
    bootstrap_seed: int | None = None

    @property
    def N(self) -> int:
        """Number of removal units (examples or groups)."""
        return self.mean.shape[0]

    @property
    def Q(self) -> int:
        """Number of measurements."""
        return self.mean.shape[1]

    def statistics(self) -> list[str]:
        """Every statistic name :meth:`get` accepts (without the ``abs_`` prefix)."""
        return list(STATISTICS) + [quantile_key(p) for p in self.levels]

    def get(self, name: str) -> Tensor:
        """The [N, Q] tensor of statistic ``name``; ``abs_<name>`` gives its absolute value and
        ``quantile_<p>`` the quantile shift at level p (one of :attr:`levels`)."""
        if name.startswith("abs_"):
            return self.get(name[4:]).abs()
        if name in STATISTICS:
            return getattr(self, name)
        if name.startswith(QUANTILE_PREFIX):
            return self.quantile_shift[self._level_index(name)]
        raise ValueError(
            f"Distributional.get: unknown statistic {name!r}; expected one of {self.statistics()}, "
            f"optionally prefixed with 'abs_'")

    def _level_index(self, name: str) -> int:
        try:
            level = float(name[len(QUANTILE_PREFIX):])
        except ValueError:
            level = math.nan
        for i, p in enumerate(self.levels):
            if math.isclose(p, level, rel_tol=0, abs_tol=1e-12):
                return i
        raise ValueError(
            f"Distributional: no quantile shift {name!r}; computed levels are {list(self.levels)} "
            f"(pass quantiles=(...) to distributional() for others)")

    def query_index(self, query: int | str) -> int:
        """Column of ``query``, given as a measurement name or an index in [0, Q)."""
        if isinstance(query, str):
            if query not in self.names:
                raise ValueError(f"unknown query {query!r}; measurement names are {self.names}")
            return self.names.index(query)
        if isinstance(query, bool) or not isinstance(query, int) or not -self.Q <= query < self.Q:
            raise ValueError(f"query must be a measurement name or an int in [0, {self.Q}), got {query!r}")
        return query % self.Q

    def top(self, k: int, by: str = "w2", query: int | str | None = None, largest: bool = True) -> Top:
        """The k removal units with the largest (or smallest) statistic ``by`` for ``query``.

        With ``query=None`` the ranking uses the statistic averaged over all queries (for "mean"
        this is the mean shift of the average measurement). ``by`` is any name :meth:`get`
        accepts, e.g. "w2", "mean", "abs_mean", "var_increase", "shape_w2", "quantile_0.9".
        Ties keep the lower index first.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"top: k must be a non-negative int, got {k!r}")
        values = self.get(by)
        col = values.mean(1) if query is None else values[:, self.query_index(query)]
        k = min(k, col.shape[0])
        # A stable sort makes ties deterministic (lower index first); NaN ranks last either way.
        key = torch.where(torch.isnan(col), torch.full_like(col, -math.inf if largest else math.inf), col)
        order = torch.sort(key, descending=largest, stable=True).indices[:k]
        return Top(order, col[order], by, None if query is None else self.names[self.query_index(query)])

    def table(self, query: int | str, indices: Tensor | list[int] | None = None,
              statistics: list[str] | None = None) -> list[dict[str, Any]]:
        """One row (a dict of floats) per removal unit for one query: ``index`` and each statistic,
        with ``<name>_lo``/``<name>_hi`` where a CI exists. ``indices`` selects rows (default all)."""
        q = self.query_index(query)
        names = self.statistics() if statistics is None else list(statistics)
        cols = {name: self.get(name)[:, q] for name in names}
        rows = range(self.N) if indices is None else [int(i) for i in indices]
        table = []
        for n in rows:
            row: dict[str, Any] = {"index": n}
            for name in names:
                row[name] = float(cols[name][n])
                if name in self.ci:
                    row[f"{name}_lo"] = float(self.ci[name][0, n, q])
                    row[f"{name}_hi"] = float(self.ci[name][1, n, q])
            table.append(row)
        return table

    def summary(self) -> dict[str, list[float]]:
        """Per-query averages over removal units: ``mean_p`` (Nguyen et al.'s summary of the
        per-pair p-values), ``mean_p_t`` and ``mean_sign_agreement``; each a list of Q floats."""
        return {"mean_p": self.p.mean(0).tolist(), "mean_p_t": self.p_t.mean(0).tolist(),
                "mean_sign_agreement": self.sign_agreement.mean(0).tolist()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: settings, :meth:`summary`, and every statistic and CI as nested lists
        ([N][Q], CIs [2][N][Q]). z and t may be ±inf (zero spread), which ``json`` writes as Infinity."""
        return {
            "names": list(self.names), "K": self.K, "N": self.N, "method": self.method,
            "groups": self.groups, "levels": list(self.levels), "confidence": self.confidence,
            "bootstrap": self.bootstrap, "bootstrap_seed": self.bootstrap_seed, "summary": self.summary(),
            "statistics": {name: self.get(name).tolist() for name in self.statistics()},
            "ci": {name: ci.tolist() for name, ci in self.ci.items()},
        }
