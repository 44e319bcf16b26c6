"""Paired comparisons: is a model's lead over a peer larger than the test users' noise?

Every model of a protocol is graded on the same test users, so the honest question about
"fused 0.341 against LightGCN 0.339" is the distribution of the per-user differences, not
the two means. A paired t-test on them (scipy's ``ttest_rel``) gives the mean difference,
its confidence interval and a two-sided p-value; with hundreds of users the mean of the
differences is close to normal even though one user's NDCG@10 is not. The interval is the
noise of one split's test users; the spread over split seeds is another noise, so a
benchmark reports both (``benchmarks/bench_accuracy.py``: each seed's interval, and the mean
and std of the paired differences over seeds).

The p-values are per comparison: with a dozen peers, one of them will clear 0.05 by chance
now and then. Read the interval of the comparison that matters (the best peer) first.

The same test answers attribution: the main model against itself without KG or text, the
fusion against the main model alone (:data:`ATTRIBUTION`).

Rows: ``(protocol, model, peer, slice, metric, k, n_users, model_value, peer_value, diff,
ci_low, ci_high, p_value)`` (the columns of ``evaluation_comparisons`` less provenance; for
an attribution pair ``peer`` is the reduced model).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

#: The per-user metrics compared: NDCG@10 (the warm protocols' headline) and Recall@20 (cold items').
COMPARED = ("ndcg@10", "recall@20")
#: The confidence level of the intervals.
CONFIDENCE = 0.95
#: Differences that spread less than this are one difference (metric values lie in [0, 1]).
SPREAD_EPS = 1e-12


@dataclass(frozen=True)
class Paired:
    n_users: int
    model: float
    peer: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def significant(self) -> bool:
        """The interval excludes zero (at :data:`CONFIDENCE`)."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_test(model_values, peer_values, confidence: float = CONFIDENCE) -> Paired:
    """Paired t-test of ``model_values - peer_values`` (one value per user, same users in the
    same order). Fewer than two users: NaN interval and p-value. Identical differences (no
    spread): the interval is the difference itself, p = 1 when it is zero and 0 otherwise."""
    a = np.asarray(model_values, dtype=np.float64)
    b = np.asarray(peer_values, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need two 1-D arrays of one length, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        return Paired(0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan)
    d = a - b
    diff = float(d.mean())
    if n < 2:
        return Paired(n, float(a.mean()), float(b.mean()), diff, np.nan, np.nan, np.nan)
    if np.ptp(d) <= SPREAD_EPS:  # float rounding only (0.6 - 0.5 != 0.4 - 0.3): t is not defined
        same = abs(diff) <= SPREAD_EPS
        d0 = 0.0 if same else diff
        return Paired(n, float(a.mean()), float(b.mean()), d0, d0, d0, 1.0 if same else 0.0)
    from scipy import stats

    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(confidence)
    return Paired(n, float(a.mean()), float(b.mean()), diff, float(ci.low), float(ci.high), float(res.pvalue))


#: Attribution: each platform model against the same model less one part (its ablations, and
#: the fusion less each of its parts), as ``(model, reduced)``.
ATTRIBUTION = (("kgtextgnn", "kgtextgnn_no_kg"), ("kgtextgnn", "kgtextgnn_no_text"),
               ("kgtextgnn", "kgtextgnn_no_kg_no_text"), ("fused", "kgtextgnn"),
               ("fused", "fused_without_item_item"), ("fused", "fused_without_gnn"), ("fused", "fused_without_text"),
               ("fused", "fused_fold_in_weights"), ("fused", "fused_protocol_weights"),
               ("fused_protocol_weights", "fused_without_text"))


def paired_rows(protocol: str, per_user: dict[str, dict[str, np.ndarray]], is_own, slices: dict[str, np.ndarray]
                ) -> list[tuple]:
    """Every own model against every peer of one protocol, and each :data:`ATTRIBUTION` pair
    present (the reduced model in the ``peer`` column). ``per_user``: model -> metric ->
    values over the protocol's test users (same users for every model); ``slices``: slice
    name -> boolean mask over those users; ``is_own(model)`` tells the platform's models."""
    own = [m for m in per_user if is_own(m)]
    peers = [m for m in per_user if not is_own(m)]
    pairs = [(model, peer) for model in own for peer in peers]
    pairs += [(m, r) for m, r in ATTRIBUTION if m in per_user and r in per_user]
    rows = []
    for (model, peer), metric, (slice_name, mask) in product(pairs, COMPARED, slices.items()):
        if metric not in per_user[model] or metric not in per_user[peer] or not mask.any():
            continue
        name, k = metric.split("@")
        p = paired_test(per_user[model][metric][mask], per_user[peer][metric][mask])
        rows.append((protocol, model, peer, slice_name, name, int(k), p.n_users, p.model, p.peer, p.diff,
                     p.ci_low, p.ci_high, p.p_value))
    return rows


def comparison_table(comparisons, protocol: str = "A", model: str = "fused") -> str:
    """Markdown: ``model`` against each peer of ``protocol`` (and against itself less a part,
    marked as attribution) on NDCG@10, all users and the sparse-user slice, strongest first;
    ``comparisons``: a DataFrame with the columns of ``evaluation_comparisons``."""
    c = comparisons
    if c is None or c.empty:
        return "_no paired comparisons_"
    sel = c[(c.protocol == protocol) & (c.model == model) & (c.metric == "ndcg") & (c.k == 10)]
    if sel.empty:
        return f"_no paired comparisons of {model} in protocol {protocol}_"
    from recsys_dagster.core.evaluation import is_own

    lines = ["| against | slice | its NDCG@10 | diff | 95% CI | p |", "|---|---|---|---|---|---|"]
    for _, r in sel.sort_values(["slice", "peer_value"], ascending=[True, False]).iterrows():
        against = f"{r.peer} (own: attribution)" if is_own(r.peer) else r.peer
        lines.append(f"| {against} | {r.slice} | {r.peer_value:.4f} | {r['diff']:+.4f} | "
                     f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {r.p_value:.3g} |")
    return "\n".join(lines)
