"""The quality gate that decides whether a model version may be published.

It reads one evaluation run's rows only (protocol A, ``slice = all``, NDCG@10) and fails when

* protocol A, the fused model or a required peer (Pop and the tuned MF-BPR by default) is
  missing from the run: a gate that cannot compare does not pass;
* fused does not beat every required peer;
* fused is below the absolute floor ``min_ndcg``;
* fused falls more than ``max_drop`` below the last *published* version on the same split
  fingerprint (numbers on another split are not comparable, so they are not used);
* with ``max_p_value`` below 1: fused's lead over a required peer is not significant in the
  paired t-test over the same test users (:mod:`recsys_dagster.core.comparison`).

With a lightweight scoring variant (``EvalConfig.scoring = "int8"``, rows ``fused_int8``)
the variant is what serves, so it is what is graded: every check above applies to it in
fused's place, and it must keep ``min_variant_retention`` of fused's NDCG@10.

Its details name the best peer of the run (any model that is not the platform's own), the
gap to it and, when the run has paired comparisons, that gap's 95% interval and p-value, so
a pass that only beats the weak peers, or beats the best one by noise, is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from recsys_dagster.core.evaluation import SCORING, is_own
from recsys_dagster.core.options import option

#: Lightweight scoring variants; a run that has one of these rows serves (and grades) it.
VARIANTS = tuple(m for m in SCORING.values() if m != "fused")


@dataclass(frozen=True)
class GateConfig:
    required_peers: tuple[str, ...] = option(("pop", "mf"), "the gate fails unless fused beats each of these")
    min_ndcg: float = option(0.02, "the gate's absolute floor on fused NDCG@10")
    max_drop: float = option(0.05, "the gate fails below (1 - max_drop) x the last published version's fused "
                                   "NDCG@10 on the same split")
    protocol: str = option("A", "the protocol whose rows the gate reads")
    min_variant_retention: float = option(0.99, "a lightweight scoring variant (fused_int8) must keep this share of "
                                                "fused NDCG@10, besides passing every other check in its place")
    max_p_value: float = option(1.0, "the gate fails unless fused's lead over each required peer has a paired "
                                     "t-test p-value (same test users, NDCG@10) below this; 1: off")


@dataclass
class GateResult:
    passed: bool
    failures: list[str] = field(default_factory=list)
    fused: float | None = None
    peers: dict[str, float] = field(default_factory=dict)
    best_peer: str | None = None
    previous: float | None = None
    graded: str = "fused"  # the row graded: fused, or the lightweight variant that will serve
    paired: dict = field(default_factory=dict)  # peer -> {"diff", "ci", "p"} of the graded row (paired t-test)

    @property
    def gap_to_best_peer(self) -> float | None:
        if self.fused is None or self.best_peer is None or not self.peers[self.best_peer]:
            return None
        return self.fused / self.peers[self.best_peer] - 1.0

    def details(self) -> dict:
        return {"failures": "; ".join(self.failures) or "none", "fused_ndcg@10": self.fused,
                "peers_ndcg@10": self.peers, "best_peer": self.best_peer,
                "gap_to_best_peer": self.gap_to_best_peer, "previous_published_ndcg@10": self.previous,
                "graded": self.graded,
                "best_peer_paired": self.paired.get(self.best_peer) if self.best_peer else None}


def ndcg_at_10(rows: pd.DataFrame, protocol: str = "A") -> dict[str, float]:
    """``model -> NDCG@10`` of one run's rows (columns as ``evaluation_metrics``)."""
    sel = rows[(rows["protocol"] == protocol) & (rows["slice"] == "all") & (rows["metric"] == "ndcg")
               & (rows["k"] == 10)]
    return {str(m): float(v) for m, v in zip(sel["model"], sel["value"], strict=True)}


def paired_ndcg_at_10(comparisons: pd.DataFrame | None, model: str, protocol: str = "A") -> dict[str, dict]:
    """``peer -> {"diff", "ci", "p"}`` of ``model`` on NDCG@10, all users (``evaluation_comparisons`` rows)."""
    if comparisons is None or comparisons.empty:
        return {}
    sel = comparisons[(comparisons["protocol"] == protocol) & (comparisons["model"] == model)
                      & (comparisons["slice"] == "all") & (comparisons["metric"] == "ndcg") & (comparisons["k"] == 10)]
    return {str(r.peer): {"diff": float(r.diff), "ci": [float(r.ci_low), float(r.ci_high)], "p": float(r.p_value)}
            for r in sel.itertuples()}


def quality_gate(rows: pd.DataFrame, previous_published: float | None = None,
                 config: GateConfig = GateConfig(), comparisons: pd.DataFrame | None = None) -> GateResult:
    """The verdict on one evaluation run's ``rows`` (see module docstring); ``comparisons``:
    the run's paired tests (``evaluation_comparisons`` columns), for ``max_p_value`` and the details."""
    if "run_id" in rows and rows["run_id"].nunique() > 1:
        return GateResult(False, [f"rows of {rows['run_id'].nunique()} evaluation runs given; the gate reads one run"])
    scores = ndcg_at_10(rows, config.protocol)
    peers = {m: v for m, v in scores.items() if not is_own(m)}
    best = max(peers, key=peers.get) if peers else None
    graded = next((m for m in VARIANTS if m in scores), "fused")  # the run's rows say what will serve
    paired = paired_ndcg_at_10(comparisons, graded, config.protocol)
    result = GateResult(False, [], scores.get(graded), peers, best, previous_published, graded, paired)
    if not scores:
        result.failures.append(f"protocol {config.protocol} was not evaluated in this run")
        return result
    missing = [m for m in ("fused", *config.required_peers) if m not in scores]
    if missing:
        result.failures.append(f"missing from this run: {', '.join(missing)}")
    fused = result.fused
    if fused is not None:
        for peer in config.required_peers:
            if peer in scores and fused <= scores[peer]:
                result.failures.append(f"{graded} {fused:.4f} <= {peer} {scores[peer]:.4f}")
            elif peer in scores and config.max_p_value < 1:
                test = paired.get(peer)
                if test is None:
                    result.failures.append(f"no paired comparison of {graded} with {peer} in this run (max_p_value "
                                           f"{config.max_p_value:g})")
                elif not test["p"] < config.max_p_value:
                    result.failures.append(f"{graded}'s lead over {peer} (+{test['diff']:.4f}, 95% CI "
                                           f"[{test['ci'][0]:+.4f}, {test['ci'][1]:+.4f}]) has paired p = "
                                           f"{test['p']:.3g} >= {config.max_p_value:g}")
        if fused < config.min_ndcg:
            result.failures.append(f"{graded} {fused:.4f} < floor {config.min_ndcg:.4f}")
        if previous_published is not None and fused < (1 - config.max_drop) * previous_published:
            result.failures.append(f"{graded} {fused:.4f} is more than {config.max_drop:.0%} below the last published "
                                   f"version's {previous_published:.4f}")
        full = scores.get("fused")
        if graded != "fused" and full and fused < config.min_variant_retention * full:
            result.failures.append(f"{graded} {fused:.4f} keeps {fused / full:.2%} of fused {full:.4f} "
                                   f"(< {config.min_variant_retention:.0%})")
    result.passed = not result.failures
    return result
