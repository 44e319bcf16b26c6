"""Grade one stored model version: refuse another split, prove no leak, run the protocols, gate.

What ``evaluation_metrics`` calls; plain Python, so a notebook or a CI job can grade a
version the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import pandas as pd

from recsys_dagster.core.evaluation import (
    COMPARISON_COLUMNS,
    ROW_COLUMNS,
    SCORING,
    EvalConfig,
    evaluate_protocols,
)
from recsys_dagster.core.gate import GateConfig, GateResult, ndcg_at_10, quality_gate
from recsys_dagster.core.model_store import (
    ModelStore,
    ModelStoreError,
    ModelVersion,
    leaked_pairs,
    leaked_peer_pairs,
)
from recsys_dagster.core.splits import SplitSpec
from recsys_dagster.core.tuning import TRAINED_KEYS


class EvaluationRefused(ValueError):
    """The version cannot be graded honestly (other split, leaked pairs); one line, why."""


@dataclass
class VersionEvaluation:
    version: str
    split: SplitSpec
    rows: pd.DataFrame
    gate: GateResult
    fusion: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    leak_check: dict = field(default_factory=dict)
    warm_started_peers: dict = field(default_factory=dict)  # peer -> the version whose kept peer it continued
    comparisons: pd.DataFrame | None = None  # paired tests (COMPARISON_COLUMNS)


#: What must match for a kept peer to be continued: the model and its tuned settings.
PEER_KEYS = ("model", "num_layers", *TRAINED_KEYS)


@dataclass
class StoredPeers:
    """Protocol A's trained peers get the graded version's treatment. When the version was
    warm-started, each peer continues from the one its parent's evaluation kept — same
    split, same settings, no graded pair in that peer's training lineage — with the
    version's own epoch budget (a daily refresh: a few epochs for both). Otherwise (a
    fresh version, no kept peer, other settings, ``enabled`` False) the peer trains from
    scratch with the evaluation's full budget. Either way it is kept with the version."""

    store: ModelStore
    version: ModelVersion
    enabled: bool = True
    leak_check: dict = field(default_factory=dict)
    started: dict = field(default_factory=dict)  # peer name -> the version its kept peer came from

    def start(self, name: str, config, split, log=print):
        """``(config, warm-start payload or None)`` for peer ``name`` on ``split``."""
        import torch

        parent = self.store.get(self.version.parent) if self.enabled and self.version.parent else None
        if parent is None or name not in parent.peers or not parent.peer_weights(name).is_file():
            return config, None
        payload = torch.load(parent.peer_weights(name), map_location="cpu", weights_only=True)
        kept = {k: payload["config"].get(k) for k in PEER_KEYS}
        wanted = {k: getattr(config, k) for k in PEER_KEYS}
        if kept != wanted or parent.split_fingerprint != self.version.split_fingerprint:
            log(f"{name}: the peer kept with {parent.version} has other settings or another split; from scratch")
            return config, None
        graded = pd.concat([split.valid, split.test])
        try:
            leaks = leaked_peer_pairs(self.store, parent.version, name, graded)
        except ModelStoreError as exc:
            log(f"{name}: {exc}; from scratch")
            return config, None
        self.leak_check.update(leaks)
        if any(leaks.values()):
            log(f"{name}: {max(leaks.values())} valid/test pairs were training pairs of its kept lineage; from scratch")
            return config, None
        own = self.version.manifest["config"]
        budget = {k: own[k] for k in ("max_epochs", "min_epochs", "patience")}
        log(f"{name}: warm start from the peer kept with {parent.version} (budget {budget}, 0 leaked pairs)")
        self.started[name] = parent.version
        return replace(config, **budget), payload

    def keep(self, name: str, result, data, split) -> None:
        self.store.save_peer(self.version.version, name, result, data, split.train,
                             parent=self.started.get(name))


def check_split(version, expected: SplitSpec) -> None:
    """Refuse weights trained on another split than the evaluation's."""
    got = version.split_fingerprint
    if got != expected.fingerprint:
        trained = (version.manifest.get("split") or {})
        raise EvaluationRefused(
            f"model version {version.version} was trained on split {got} ({trained.get('method')}, seed "
            f"{trained.get('seed')}), but this evaluation uses {expected.fingerprint} ({expected.method}, seed "
            f"{expected.seed}): retrain gnn_model with the evaluation's split or evaluate with the model's")


def evaluate_version(store: ModelStore, version: str, tables, config: EvalConfig, split: SplitSpec,
                     gate_config: GateConfig | None = None, device: str = "cpu", log=print) -> VersionEvaluation:
    """Every protocol of ``config`` with ``version`` as the main model of protocol A.

    ``config.train`` supplies the epoch budget (max/min epochs, patience) of every model
    trained here; the main model's other settings come from the version. ``split`` must be
    the split the version trained on. Before the
    stored weights are used, every valid and test pair of protocol A is checked against
    the training pairs of the version and of each ancestor it was warm-started from."""
    from recsys_dagster.core.train import TrainConfig

    mv = store.get(version)
    check_split(mv, split)
    # the version's own model settings, but the evaluation's epoch budget for every model
    # trained here: a warm-started main model may have had only a few epochs today, while
    # its peers start from scratch and get the full budget
    budget = {k: getattr(config.train, k) for k in ("max_epochs", "min_epochs", "patience")}
    main_cfg = replace(TrainConfig.from_dict(mv.manifest["config"]), device=device, **budget)
    config = replace(config, train=main_cfg)
    leak_check: dict = {}

    def main_model_for(data, protocol_split):
        t0 = time.perf_counter()
        graded = pd.concat([protocol_split.valid, protocol_split.test])
        try:
            leak_check.update(leaked_pairs(store, version, graded))
        except ModelStoreError as exc:  # an ancestor's training pairs are gone: no honest grade
            raise EvaluationRefused(str(exc)) from None
        if any(leak_check.values()):
            worst = max(leak_check, key=leak_check.get)
            raise EvaluationRefused(f"{leak_check[worst]} of the {len(graded)} valid/test pairs were training pairs "
                                    f"of model version {worst} (lineage of {version}): refusing a leaky grade")
        log(f"leak check: 0 of {len(graded)} valid/test pairs in the training data of "
            f"{len(leak_check)} version(s) ({time.perf_counter() - t0:.1f}s)")
        try:
            return store.load(version, data, device)[0]
        except ValueError as exc:  # users/items changed since training: the weights do not fit
            raise EvaluationRefused(f"{exc}; materialize gnn_model on the current data first") from None

    peers = StoredPeers(store, mv, config.warm_start_peers)
    result = evaluate_protocols(tables, config, main_model_for, log=log, peers=peers)
    leak_check.update(peers.leak_check)
    rows = pd.DataFrame(result.rows, columns=ROW_COLUMNS)
    comparisons = pd.DataFrame(result.comparisons, columns=COMPARISON_COLUMNS)
    previous = store.last_published_on(split.fingerprint, exclude=version)
    prev_value = (previous.gate or {}).get("fused_ndcg@10") if previous is not None else None
    gate = quality_gate(rows, prev_value, gate_config or GateConfig(), comparisons)
    return VersionEvaluation(version, split, rows, gate, result.fusion, result.seconds, result.params, leak_check,
                             peers.started, comparisons)


def record_evaluation(store: ModelStore, ev: VersionEvaluation, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the tuned fusion weights and the gate verdict with the version (a pass publishes
    it); returns the rows and the paired comparisons with their provenance columns, ready for
    ``evaluation_metrics`` and ``evaluation_comparisons``."""
    if ev.fusion:
        store.update(ev.version, fusion=with_inherited_few_shot(store, ev.version, ev.fusion))
    precision = next((p for p, row in SCORING.items() if row == ev.gate.graded), "fp32")
    store.update(ev.version, scoring={"precision": precision, "graded": ev.gate.graded, "ndcg@10": ev.gate.fused})
    store.record_gate(ev.version, ev.gate.passed, {**ev.gate.details(), "run_id": run_id})
    provenance = {"run_id": run_id, "model_version": ev.version, "split_fingerprint": ev.split.fingerprint,
                  "created_at": pd.Timestamp.now(tz="UTC").tz_localize(None)}
    comparisons = ev.comparisons if ev.comparisons is not None else pd.DataFrame(columns=COMPARISON_COLUMNS)
    return ev.rows.assign(**provenance), comparisons.assign(**provenance)


def with_inherited_few_shot(store: ModelStore, version: str, fusion: dict) -> dict:
    """``fusion`` with the few-shot users' weights that serve best founded. The few_shot
    protocol decides between its own weights and protocol A's fold-in ones by cross-validation
    (its verdict is ``tuned_on`` plus ``cv``): this evaluation's verdict when it ran the protocol,
    else the nearest warm-start ancestor's (a daily refresh runs protocol A alone) — its own
    weights when it chose them (marked with the version they come from), this evaluation's
    fold-in ones when it chose fold-in; with no verdict anywhere, this evaluation's fold-in
    weights (protocol A), else an ancestor's. They serve only users below the few-shot
    threshold, whom protocol A does not grade, so inherited weights never touch this version's grade."""
    own = fusion.get("few_shot")
    if own and _has_verdict(own):
        return fusion
    inherited = [(a.version, a.fusion["few_shot"]) for a in store.lineage(version)[1:] if (a.fusion or {}).get("few_shot")]
    verdict = next(((v, f) for v, f in inherited if _has_verdict(f)), None)
    if verdict is not None and (verdict[1].get("tuned_on") == "few_shot" or not own):
        v, few = verdict
    elif not own and inherited:
        v, few = inherited[0]
    else:  # no verdict, or the nearest one chose fold-in weights: this evaluation's own fold-in ones
        return fusion
    return {**fusion, "few_shot": {**few, "from": few.get("from", v)}}


def _has_verdict(few_shot: dict) -> bool:
    """Whether a few-shot record carries the few_shot protocol's choice (its own weights, or
    fold-in ones with the cross-validation that chose them)."""
    return few_shot.get("tuned_on") == "few_shot" or bool(few_shot.get("cv"))


def summary_table(rows: pd.DataFrame) -> str:
    """Markdown: one row per (protocol, model), NDCG/Recall/MRR/Hit/Precision at each k."""
    a = rows[(rows.slice == "all") & rows.metric.isin(["ndcg", "recall", "mrr", "hit", "precision"])]
    if a.empty:
        return "_no rows_"
    pivot = a.pivot_table(index=["protocol", "model"], columns=["metric", "k"], values="value").round(4)
    pivot.columns = [f"{m}@{k}" for m, k in pivot.columns]
    return pivot.reset_index().to_markdown(index=False)


def explanation_table(rows: pd.DataFrame) -> str:
    """Markdown: the explanation protocol's ``expl_*`` metrics, one column per model."""
    e = rows[rows.metric.str.startswith("expl_")]
    if e.empty:
        return "_explanation protocol off (explanation_users: 0)_"
    pivot = e.pivot_table(index="metric", columns="model", values="value").round(4)
    pivot.index = [m.removeprefix("expl_") for m in pivot.index]
    return pivot.rename_axis("metric").reset_index().to_markdown(index=False)


__all__ = ["EvaluationRefused", "StoredPeers", "VersionEvaluation", "check_split", "evaluate_version",
           "explanation_table", "ndcg_at_10", "record_evaluation", "summary_table"]
