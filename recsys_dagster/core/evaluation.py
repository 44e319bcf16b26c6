"""Evaluation protocols run end to end: every model on the same split with the same metric code.

Protocols (see :mod:`recsys_dagster.core.splits`):

* ``A`` — 8:1:1 by a seeded hash of each (user, item) pair (a pair never changes part as
  data grows, so warm-started models are graded leak-free), full ranking over all items,
  train items masked (train + valid at test).
* ``A_recbole`` — RecBole's per-user random 8:1:1 with the same seed, every model trained
  in the run: the numbers to put beside RecBole's.
* ``B`` — temporal: train on days before the cutoff, validate on the next days, test after.
* ``cold_item`` — a share of items has no training interactions; ranking among those
  items only (warm items would otherwise fill every list).
* ``few_shot`` — a share of users keeps only its first few training interactions (users who
  have just joined); full ranking for those users only. The fusion's few-shot weights
  (:class:`~recsys_dagster.core.fusion.FewShotWeights`, popularity among the parts) are tuned
  on their validation pairs, compared by cross-validation with the fold-in weights protocol A
  tunes (:func:`cross_validate_few_shot`), and the winner is kept with the version.

Peers: Pop, ItemKNN and EASE (tuned on validation in every run), MF-BPR and LightGCN (tuned
settings from :mod:`recsys_dagster.core.tuning`, the same epoch budget and early stopping as
the main model), text kNN.

Rows: ``(protocol, model, params, slice, metric, k, value)``; slices ``all``, ``cold_users``
(the ``cold_user_share`` of test users with the fewest training interactions),
``warm_users``; plus ``coverage`` (share of items in any top-K list) and ``avg_popularity``
(mean train popularity of recommended items: lower is more novel).

Comparisons: each own model against each peer of the protocol on the same test users, and
the main model and the fusion against themselves less a part (attribution), a paired t-test
per metric and slice (:mod:`recsys_dagster.core.comparison`; rows :data:`COMPARISON_COLUMNS`,
table ``evaluation_comparisons``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import numpy as np

from recsys_dagster.core.metrics import full_ranking
from recsys_dagster.core.options import option
from recsys_dagster.core.threads import one_blas_thread
from recsys_dagster.core.train import TrainConfig, train
from recsys_dagster.core.warehouse import columns_of

#: Columns of ``evaluation_metrics`` the core computes; the writer adds the provenance ones.
PROVENANCE = ("run_id", "model_version", "split_fingerprint", "created_at")
ROW_COLUMNS = columns_of("evaluation_metrics", exclude=PROVENANCE)
#: Columns of ``evaluation_comparisons`` (paired tests, :mod:`recsys_dagster.core.comparison`).
COMPARISON_COLUMNS = columns_of("evaluation_comparisons", exclude=PROVENANCE)
#: Models that are the platform's own (the main model, its ablations, the fusion); every
#: other model in a run is a peer.
OWN_MODELS = ("kgtextgnn", "fused", "kgtextgnn_no_kg", "kgtextgnn_no_text", "kgtextgnn_no_kg_no_text",
              "fused_without_gnn", "fused_without_item_item", "fused_without_text", "fused_fold_in_weights",
              "fused_protocol_weights", "fused_int8")
#: What each scoring precision serves, by the row name the gate grades.
SCORING = {"fp32": "fused", "int8": "fused_int8"}
#: Every protocol :func:`evaluate_protocols` runs.
PROTOCOLS = ("A", "A_recbole", "B", "cold_item", "few_shot")
#: Rows of the differentially private models (``dp_<model>_eps<ε>``, ``dp_<model>_nonprivate``)
#: are the platform's own too.
DP_PREFIX = "dp_"


def is_own(model: str) -> bool:
    """Whether a result row's model is the platform's own (else it is a peer)."""
    return model in OWN_MODELS or model.startswith(DP_PREFIX)


@dataclass
class EvalConfig:
    """``train`` is the main model's config; its ``max_epochs``/``min_epochs``/``patience``
    are the epoch budget and early stopping of *every* model trained in the evaluation, and
    its split spec defines protocol A. ``hyperparameters`` holds each model's tuned settings
    (:func:`recsys_dagster.core.tuning.resolve`)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    ks: tuple[int, ...] = option((10, 20), "cut-offs K of Recall/NDCG/MRR/Hit@K")
    cold_user_share: float = option(0.2, "share of test users (fewest training interactions) in the cold_users slice")
    protocols: tuple[str, ...] = option(("A", "cold_item"), "A (hash split 8:1:1), A_recbole (RecBole's per-user "
                                        "shuffle, every model retrained), B (temporal), cold_item, few_shot (users "
                                        "cut to their first few interactions; tunes the fusion's few-shot weights)")
    ablations: bool = option(False, "main model without KG / without text / without both (protocols A and "
                                    "few_shot; three more trainings each)")
    trained_baselines: tuple[str, ...] = option(("mf", "lightgcn"), "collaborative baselines trained in the run "
                                                "(mf, lightgcn); Pop, ItemKNN, EASE and text kNN always run")
    warm_start_peers: bool = option(True, "treat protocol A's trained baselines like the graded version: when it "
                                          "was warm-started, each continues from the baseline its parent's "
                                          "evaluation kept, with the version's own epoch budget; otherwise, or "
                                          "False, from scratch with the full budget")
    temporal_train_share: float = option(0.8, "protocol B: share of each user's history (oldest first) in training")
    cold_item_share: float = option(0.1, "share of items held out as cold in the cold_item protocol")
    few_shot_share: float = option(0.2, "share of users cut to their first few training interactions in the "
                                        "few_shot protocol")
    few_shot_keep: int = option(3, "training interactions each few-shot user keeps (its earliest)")
    few_shot_fold_in: bool = option(True, "protocol A also tunes the fusion's few-shot weights: its validation users "
                                          "cut to few_shot_keep training items and scored by fold-in, as the service "
                                          "scores a new user (seconds); the few_shot protocol, when it runs, keeps "
                                          "these or its own by cross-validation")
    fusion_betas: tuple[float, ...] = option((0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
                                             "text weights β tried on validation for the fusion")
    fusion_gammas: tuple[float, ...] = option((0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
                                              "item-item (EASE) weights γ tried on validation for the fusion "
                                              "(GNN weight α = 1); (0,) leaves EASE out of the fusion")
    dp_epsilons: tuple[float, ...] = option((), "train the differentially private models (core/privacy/dp.py) at "
                                                "these ε, plus without privacy, on protocols A and cold_item; "
                                                "e.g. (1, 4, 8). Empty: off")
    dp_models: tuple[str, ...] = option(("item_factors", "text_tower"), "the DP models dp_epsilons trains")
    explanation_users: int = option(50, "users sampled by the explanation protocol (deletion fidelity, coverage, "
                                        "diversity of the reasons; protocol A, fused and kgtextgnn); 0: off")
    protocol_processes: int = option(0, "processes the protocols run in at once: protocol A in this one, the "
                                        "others (cold_item, B, A_recbole) in their own, the torch threads shared "
                                        "out; 0 = as many as the torch threads allow on a CPU run (2 threads, two "
                                        "protocols: two processes of one thread), 1 = one after another")
    scoring: str = option("fp32", "precision of the fused scorer's embedding tables that the gate grades and, once "
                                  "published, fused_recommendations and the service use: fp32, or int8 (per-row "
                                  "scales, a quarter of the memory; graded as fused_int8 with the fp32 weights)")
    hyperparameters: dict = field(default_factory=dict)  # trained models; ItemKNN/EASE are tuned per run

    def __post_init__(self):
        if self.scoring not in SCORING:
            raise ValueError(f"scoring={self.scoring!r}: expected {' or '.join(SCORING)}")
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise ValueError(f"protocols {unknown}: expected some of {list(PROTOCOLS)}")
        if self.few_shot_keep < 1:
            raise ValueError(f"few_shot_keep={self.few_shot_keep}: expected at least 1 training interaction")
        if self.protocol_processes < 0:
            raise ValueError(f"protocol_processes={self.protocol_processes}: expected 0 (auto) or a count >= 1")

    def params(self, name: str) -> dict:
        from recsys_dagster.core.tuning import DEFAULTS

        return dict(self.hyperparameters.get(name) or DEFAULTS.get(name, {}))


@dataclass
class ProtocolResult:
    rows: list = field(default_factory=list)
    fusion: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # "protocol/model" -> chosen hyperparameters
    comparisons: list = field(default_factory=list)  # COMPARISON_COLUMNS rows (core.comparison.paired_rows)
    #: model -> metric -> values over the protocol's test users, and slice -> mask over those users
    #: (what the paired comparisons read; dropped once they are computed)
    per_user: dict = field(default_factory=dict)
    slices: dict = field(default_factory=dict)

    def compare(self, protocol: str) -> None:
        """Paired tests of every own model against every peer graded so far, and of the
        attribution pairs (:func:`~recsys_dagster.core.comparison.paired_rows`); frees the per-user values."""
        from recsys_dagster.core.comparison import paired_rows

        if self.per_user:
            self.comparisons += paired_rows(protocol, self.per_user, is_own, self.slices)
        self.per_user, self.slices = {}, {}


def scorer_of(model):
    users, items = model.user_item_embeddings()
    return lambda ub: users[ub] @ items.T


def add_rows(result: ProtocolResult, protocol: str, name: str, score_fn, data, config: EvalConfig,
             candidates: np.ndarray | None = None, params: dict | None = None, device: str = "cpu") -> dict:
    """Test metrics for one scorer, with slices, coverage and popularity of recommendations."""
    import torch

    ks = config.ks
    n_items = data.n_items
    fn = score_fn
    if candidates is not None:
        mask = torch.full((n_items,), -torch.inf, device=device)
        mask[torch.as_tensor(candidates, device=device)] = 0.0

        def fn(ub, base=score_fn):
            return base(ub) + mask

    p = json.dumps(params or {}, sort_keys=True)
    result.params[f"{protocol}/{name}"] = params or {}
    exclude = data.train_plus_valid_csr()
    means, users, per_user = full_ranking(fn, data.test_csr, exclude, n_items, ks=ks, return_per_user=True,
                                          device=device)
    train_counts = np.diff(data.train_csr[0])[users]
    cold = train_counts <= np.quantile(train_counts, config.cold_user_share) if len(train_counts) else train_counts > 0
    from recsys_dagster.core.comparison import COMPARED

    result.slices = result.slices or {"all": np.ones(len(users), dtype=bool), "cold_users": cold}
    result.per_user[name] = {m: np.asarray(per_user[m]) for m in COMPARED if m in per_user}
    for metric, value in means.items():
        m, k = metric.split("@")
        result.rows.append((protocol, name, p, "all", m, int(k), float(value)))
        for slice_name, sel in (("cold_users", cold), ("warm_users", ~cold)):
            if sel.any():
                result.rows.append((protocol, name, p, slice_name, m, int(k), float(per_user[metric][sel].mean())))
    from recsys_dagster.core.fusion import top_k

    pop = np.bincount(data.train_items, minlength=n_items)
    for k in ks:
        top, _ = top_k(fn, users, exclude, n_items, k, device=device)
        denom = len(candidates) if candidates is not None else n_items
        result.rows.append((protocol, name, p, "all", "coverage", k, float(len(np.unique(top)) / max(denom, 1))))
        result.rows.append((protocol, name, p, "all", "avg_popularity", k, float(pop[top].mean()) if top.size else 0.0))
    return means


def validation_ndcg(data, device: str = "cpu", truth=None):
    """``fn -> NDCG@10`` of a score function on ``truth`` (default: the validation pairs),
    training items masked: what every weight grid of the evaluation maximizes."""
    truth = data.valid_csr if truth is None else truth
    return lambda fn: full_ranking(fn, truth, data.train_csr, data.n_items, ks=(10,), device=device)["ndcg@10"]


def _few_shot_record(few, ease, tuned_on: str) -> dict:
    """The few-shot weights as kept with the version (with EASE's λ when they weight EASE)."""
    return {**few.as_dict(), "tuned_on": tuned_on, **({"ease_lam": ease[1]["lam"]} if ease and few.gamma else {})}


def _train(data, config: TrainConfig, log, warm_start: dict | None = None):
    t0 = time.perf_counter()
    res = train(data, config, warm_start=warm_start, log=lambda m: None)
    log(f"trained {config.model} (lr={config.lr}, reg={config.reg_weight}, ema={config.ema_decay}, text={config.use_text}, "
        f"kg={config.use_kg}{', warm start' if warm_start is not None else ''}): "
        f"best epoch {res.best_epoch}, valid ndcg@10 {res.best_valid['ndcg@10']:.4f}, {time.perf_counter() - t0:.1f}s")
    return res, time.perf_counter() - t0


def run_protocol(protocol: str, data, config: EvalConfig, main_model=None, item_entities=None, log=print,
                 history=None, peers=None, split=None, closed_form_done=None) -> ProtocolResult:
    """All models of one protocol on ``data`` (a :class:`TrainData`); ``history`` (the
    training interactions, with ratings and times) enables the explanation protocol.
    ``closed_form_done()``, if given, is called once the closed-form peers are fitted.
    ``peers`` (with the protocol's ``split``) decides where each trained peer starts and
    keeps it: ``peers.start(name, config, split, log) -> (config, warm-start payload or
    None)`` and ``peers.keep(name, result, data, split)``
    (:class:`~recsys_dagster.core.model_evaluation.StoredPeers`)."""
    import torch

    from recsys_dagster.core.baselines import AttributeKNN, PopScorer, TextKNN
    from recsys_dagster.core.cold_start import ContentFeatures, item_attributes, tune_content_map
    from recsys_dagster.core.fusion import FusedScorer, FusionWeights, tune_fusion
    from recsys_dagster.core.text import resolve_device
    from recsys_dagster.core.tuning import TRAINED_KEYS, trained_config, tune_closed_form

    device = resolve_device(config.train.device)
    result = ProtocolResult()
    closed_form: dict = {}
    base = config.train
    candidates = None
    if protocol == "cold_item":
        has_train = np.bincount(data.train_items, minlength=data.n_items) > 0
        candidates = np.flatnonzero(~has_train & (np.bincount(data.test_csr[1], minlength=data.n_items) > 0))
        if len(candidates) == 0:
            return result

    def run(name, fn, params=None):
        t0 = time.perf_counter()
        means = add_rows(result, protocol, name, fn, data, config, candidates, params, device)
        result.seconds[f"eval_{name}"] = time.perf_counter() - t0
        log(f"[{protocol}] {name}: ndcg@10 {means.get('ndcg@10', 0):.4f} recall@10 {means.get('recall@10', 0):.4f}")

    if protocol == "cold_item":
        g = torch.Generator().manual_seed(config.train.seed)
        rand = torch.rand(data.n_users, data.n_items, generator=g).to(device)
        run("random", lambda ub: rand[ub])
        if item_entities is not None:
            run("attribute_knn", AttributeKNN(item_entities, data.train_csr, data.n_items))
    else:
        run("pop", PopScorer(data.train_items, data.n_items))
        for name in ("itemknn", "ease"):
            t0 = time.perf_counter()
            scorer, params, _ = tune_closed_form(name, data, device=device)
            result.seconds[f"fit_{name}"] = time.perf_counter() - t0
            run(name, scorer, params)
            closed_form[name] = (scorer, params)
    if closed_form_done is not None:
        closed_form_done()
    if data.user_text is not None and data.item_text is not None:
        run("text_knn", TextKNN(data.user_text, data.item_text))
    trained = [n for n in ("mf", "lightgcn") if n in config.trained_baselines]
    if protocol == "B":
        trained = [n for n in trained if n == "lightgcn"]
    elif protocol == "cold_item":
        trained = []
    for name in trained:
        params = config.params(name)
        peer_config, start = trained_config(base, name, params), None
        if peers is not None:
            peer_config, start = peers.start(name, peer_config, split, log)
        res, secs = _train(data, peer_config, log, start)
        result.seconds[f"train_{name}"] = secs
        if peers is not None:
            peers.keep(name, res, data, split)
        run(name, scorer_of(res.model), params)
    main_params = {k: getattr(base, k) for k in (*TRAINED_KEYS, "ema_decay")}
    if main_model is None:
        res, secs = _train(data, replace(base, model="kgtextgnn"), log)
        main_model = res.model
        result.seconds["train_kgtextgnn"] = secs
    run("kgtextgnn", scorer_of(main_model), main_params)
    if protocol in ("A", "few_shot") and config.ablations:
        for name, changes in (("kgtextgnn_no_kg", {"use_kg": False}), ("kgtextgnn_no_text", {"use_text": False}),
                              ("kgtextgnn_no_kg_no_text", {"use_kg": False, "use_text": False})):
            sub = _rebuild(data, **changes)
            res, secs = _train(sub, replace(base, model="kgtextgnn", **changes), log)
            result.seconds[f"train_{name}"] = secs
            run(name, scorer_of(res.model), main_params)
    users, items = main_model.user_item_embeddings()
    counts = torch.as_tensor(np.diff(data.train_csr[0]))
    pop = torch.as_tensor(np.bincount(data.train_items, minlength=data.n_items))
    ut = torch.as_tensor(data.user_text) if data.user_text is not None else None
    it = torch.as_tensor(data.item_text) if data.item_text is not None else None
    ease = closed_form.get("ease") if any(config.fusion_gammas) else None
    content = ContentFeatures(data.item_text, item_attributes(data))
    scorer = FusedScorer(users, items, ut, it, counts, pop, FusionWeights(), item_item=ease[0] if ease else None,
                         content=content, cold_items_mapped=True)
    t0 = time.perf_counter()  # cold items: content sources weighted on pseudo-cold validation folds
    content_map, _ = tune_content_map(users.cpu(), items.cpu(), content, pop.numpy(), data.valid_csr, data.train_csr,
                                      scorer.weights.cold_item_threshold, seed=config.train.seed)
    scorer.remap_cold_items(content_map)
    result.seconds["tune_content_map"] = time.perf_counter() - t0
    if protocol == "few_shot":
        support = None
        if split is not None and split.support_valid is not None:
            from recsys_dagster.core.gnn_data import pairs_csr

            support = pairs_csr(split.support_valid, {u: n for n, u in enumerate(data.user_ids)},
                                {i: n for n, i in enumerate(data.item_ids)})
        _few_shot_fusion(run, result, scorer, ease, data, config, main_params, device, support)
        result.compare(protocol)
        return result
    if it is not None or ease is not None:
        t0 = time.perf_counter()
        weights, grid = tune_fusion(scorer, validation_ndcg(data, device),
                                    config.fusion_betas if it is not None else (0.0,), config.fusion_gammas)
        result.seconds["tune_fusion"] = time.perf_counter() - t0
        scorer.weights = weights
        result.fusion = {"alpha": weights.alpha, "beta": weights.beta, "gamma": weights.gamma,
                         **({"ease_lam": ease[1]["lam"]} if ease and weights.gamma else {}), "grid": grid}
    result.fusion.update(content_map.as_dict())
    if protocol == "A" and config.few_shot_fold_in:
        t0 = time.perf_counter()
        few = tune_fold_in_few_shot(scorer, data, data.valid_csr, config.few_shot_keep, config.train.seed, device)
        if few is not None:
            scorer.weights = replace(scorer.weights, few_shot=few)
            result.fusion["few_shot"] = _few_shot_record(few, ease, "fold-in")
        result.seconds["tune_few_shot_fold_in"] = time.perf_counter() - t0
    run("fused", scorer, {**main_params, **{k: v for k, v in result.fusion.items() if k != "grid"}})
    if config.scoring == "int8":  # the served variant: the same weights on int8 tables
        int8 = FusedScorer(users, scorer.item_gnn, ut, it, counts, pop, scorer.weights, item_item=scorer.item_item,
                           cold_items_mapped=True, precision="int8")
        run("fused_int8", int8, {**main_params, "precision": "int8"})
    if ease is not None and scorer.weights.gamma > 0:  # attribution: the fusion less one of its parts
        _fusion_ablations(run, scorer, ease[0], data, config, device)
    if protocol == "A" and config.explanation_users and history is not None:
        _explanation_rows(result, protocol, main_model, scorer, data, history, config, base)
    if config.dp_epsilons and protocol in ("A", "cold_item"):
        _dp_rows(run, data, config, log)
    result.compare(protocol)
    return result


def _dp_rows(run, data, config: EvalConfig, log) -> None:
    """The DP models at each ε of ``config.dp_epsilons`` and without privacy (same model,
    same data): the accuracy cost of the guarantee, in the run's own rows."""
    from recsys_dagster.core.privacy.dp import DPConfig, scorer, train_dp

    for model in config.dp_models:
        if model == "text_tower" and data.item_text is None:
            continue
        for eps in (None, *sorted(config.dp_epsilons)):
            res = train_dp(data, DPConfig(model=model, epsilon=eps, seed=config.train.seed), log=log)
            name = f"{DP_PREFIX}{model}_" + (f"eps{eps:g}" if eps is not None else "nonprivate")
            run(name, scorer(res, data.train_csr, data.n_items),
                {"epsilon": res.epsilon, "delta": res.delta, "noise_multiplier": res.noise_multiplier})


def _explanation_rows(result: ProtocolResult, protocol: str, model, scorer, data, history, config: EvalConfig,
                      train_config: TrainConfig) -> None:
    """Rows ``expl_*`` (k = 10) of :mod:`recsys_dagster.core.explain_eval` for the fusion and
    the main model alone. Runs on the CPU (one user at a time; a GPU copy is rebuilt here)."""
    import torch

    from recsys_dagster.core.explain_eval import evaluate_explanations
    from recsys_dagster.core.fusion import FusionWeights
    from recsys_dagster.core.recommend import build_explainer, build_scorer

    if next(model.parameters()).device.type != "cpu":
        from recsys_dagster.core.models import build_model

        cpu = build_model(train_config.model, data, train_config.embedding_dim, train_config.num_layers,
                          train_config.kg_weight, train_config.id_dropout, "cpu")
        cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
        cpu.cosine = model.cosine
        cpu.refresh()
        model = cpu
    item_item = scorer.item_item.cpu() if hasattr(scorer.item_item, "cpu") else scorer.item_item
    for name, weights, ii in (("fused", scorer.weights, item_item), ("kgtextgnn", FusionWeights(), None)):
        t0 = time.perf_counter()
        sc = build_scorer(model, data, weights, ii)
        with torch.no_grad():
            report = evaluate_explanations(sc, model, data, build_explainer(sc, data, model, history, None),
                                           config.explanation_users, k=10, seed=config.train.seed)
        params = json.dumps({"users": report.n_users, "deletions": report.n_deletions}, sort_keys=True)
        for metric, value in report.metrics.items():
            result.rows.append((protocol, name, params, "all", metric, 10, float(value)))
        result.seconds[f"explain_{name}"] = time.perf_counter() - t0


def _fusion_ablations(run, scorer, item_item, data, config: EvalConfig, device: str) -> None:
    """``fused_without_item_item`` (GNN + text) and ``fused_without_gnn`` (EASE + text), each
    with its own weights tuned on validation like the full fusion."""
    from recsys_dagster.core.fusion import FusedScorer, tune_fusion

    valid = validation_ndcg(data, device)
    betas = config.fusion_betas if scorer.item_text is not None else (0.0,)
    variants = [("fused_without_item_item", (scorer.user_gnn, scorer.item_gnn), None, (0.0,))]
    if scorer.item_text is not None:  # EASE + text (without text, "fused without GNN" is EASE itself)
        variants.append(("fused_without_gnn", (None, None), item_item, (1.0,)))
    for name, (user_gnn, item_gnn), ii, gammas in variants:
        variant = FusedScorer(user_gnn, item_gnn, scorer.user_text, scorer.item_text, scorer.n, scorer.popularity,
                              item_item=ii, cold_items_mapped=True)
        variant.weights, _ = tune_fusion(variant, valid, betas, gammas)
        run(name, variant, {"beta": variant.weights.beta, "gamma": variant.weights.gamma})


def tune_fold_in_few_shot(scorer, data, valid_csr, keep: int, seed: int, device: str = "cpu"):
    """The few-shot weights chosen on validation without training anything: every user with
    validation pairs in ``valid_csr`` and more than ``keep`` training items is cut to
    ``keep`` of them (:func:`~recsys_dagster.core.fusion.few_shot_histories`) and scored by
    fold-in (:func:`~recsys_dagster.core.fusion.fold_in_scorer`), then ranked for its
    validation pairs with its training items masked. None when no user qualifies."""
    from recsys_dagster.core.fusion import few_shot_histories, fold_in_scorer, tune_few_shot
    from recsys_dagster.core.metrics import rows_of

    has_valid = np.diff(valid_csr[0]) > 0
    users = np.flatnonzero(has_valid & (np.diff(data.train_csr[0]) > keep))
    if len(users) == 0:
        return None
    fold = fold_in_scorer(scorer, few_shot_histories(data.train_csr, users, keep, seed))
    fold.weights = _below_threshold(fold.weights, keep)
    few, _ = tune_few_shot(fold, validation_ndcg(data, device, truth=rows_of(valid_csr, users)))
    return few


def _below_threshold(weights, keep: int):
    """``weights`` whose few-shot threshold lies above ``keep`` interactions."""
    return replace(weights, cold_user_threshold=max(weights.cold_user_threshold, keep + 1))


def _few_shot_fusion(run, result: ProtocolResult, scorer, ease, data, config: EvalConfig, main_params: dict,
                     device: str, support_valid=None) -> None:
    """The few-shot protocol's fusion: every test user is a few-shot user, so only the
    few-shot weights matter. Two sources compete (:func:`cross_validate_few_shot`): weights
    tuned on this protocol's validation pairs (:func:`~recsys_dagster.core.fusion.tune_few_shot`;
    row ``fused_protocol_weights``) and the fold-in weights protocol A would choose, tuned on
    the other users (row ``fused_fold_in_weights``). ``fused`` uses the one with the better
    cross-validated NDCG@10 on these users' validation pairs; the choice and its evidence are
    kept in ``result.fusion["few_shot"]``. Attribution: the protocol tuning without the text
    part and without the GNN."""
    from recsys_dagster.core.fusion import tune_few_shot

    valid = validation_ndcg(data, device)
    # every graded user is below the threshold (it keeps few_shot_keep interactions)
    scorer.weights = _below_threshold(scorer.weights, config.few_shot_keep)
    t0 = time.perf_counter()
    own, grid = tune_few_shot(scorer, valid)
    fold = cv = None
    if support_valid is not None and config.few_shot_fold_in:
        # the weights protocol A would choose (fold-in on the other users' validation), graded here
        fold = tune_fold_in_few_shot(scorer, data, support_valid, config.few_shot_keep, config.train.seed, device)
    if fold is not None:
        cv = cross_validate_few_shot(scorer, data, fold, config.train.seed, device)
    chosen, tuned_on = (fold, "fold-in") if cv and cv["fold-in"] > cv["few_shot"] else (own, "few_shot")
    result.seconds["tune_fusion"] = time.perf_counter() - t0
    scorer.weights = replace(scorer.weights, few_shot=chosen)
    record = _few_shot_record(chosen, ease, tuned_on)
    result.fusion = {"few_shot": {**record, **({"cv": cv} if cv else {})}, "grid": grid}
    run("fused", scorer, {**main_params, "few_shot": result.fusion["few_shot"]})
    run("fused_protocol_weights", lambda ub, w=own: scorer(ub, few_shot=w), {"few_shot": own.as_dict()})
    if fold is not None:
        run("fused_fold_in_weights", lambda ub, w=fold: scorer(ub, few_shot=w),
            {"few_shot": _few_shot_record(fold, ease, "fold-in")})
    for name, keep in (("fused_without_text", {"betas": (0.0,)}), ("fused_without_gnn", {"alphas": (0.0,)})):
        if name == "fused_without_text" and scorer.user_text is None:
            continue
        reduced, _ = tune_few_shot(scorer, valid, **keep)
        run(name, lambda ub, w=reduced: scorer(ub, few_shot=w), {"few_shot": reduced.as_dict()})


def cross_validate_few_shot(scorer, data, fold_in, seed: int, device: str = "cpu", folds: int = 2) -> dict | None:
    """Which source of few-shot weights to trust, decided on validation alone: the users with
    validation pairs are split into ``folds`` parts by a seeded hash of the user id; each part is
    ranked (NDCG@10 on its validation pairs) with the weights :func:`~recsys_dagster.core.fusion.tune_few_shot`
    picks on the other parts, and with the ``fold_in`` weights (tuned on other users
    altogether, so these pairs are unseen by them too). Returns ``{"few_shot": ..., "fold-in":
    ..., "users": n}`` (user-weighted means over the parts), or None with fewer than two users
    per part. The protocol's weights are tuned on part of the users here, so the comparison
    leans slightly towards fold-in; the weights finally used are tuned on every user."""
    from recsys_dagster.core.fusion import tune_few_shot
    from recsys_dagster.core.metrics import rows_of
    from recsys_dagster.core.splits import pair_uniform

    users = np.flatnonzero(np.diff(data.valid_csr[0]) > 0)
    ids = np.asarray(data.user_ids)[users]  # by the user's id: a user keeps its part as data grows
    part = np.floor(pair_uniform(ids, np.zeros(len(users), dtype=np.int64), seed + 8191) * folds).astype(int)
    if np.bincount(part, minlength=folds).min() < 2:
        return None
    totals = {"few_shot": 0.0, "fold-in": 0.0}
    for f in range(folds):
        held, fit = users[part == f], users[part != f]
        tuned, _ = tune_few_shot(scorer, validation_ndcg(data, device, truth=rows_of(data.valid_csr, fit)))
        score = validation_ndcg(data, device, truth=rows_of(data.valid_csr, held))
        for name, weights in (("few_shot", tuned), ("fold-in", fold_in)):
            totals[name] += len(held) * score(lambda ub, w=weights: scorer(ub, few_shot=w))
    return {**{k: v / len(users) for k, v in totals.items()}, "users": int(len(users))}


def chosen_few_shot(protocol_a: dict | None, few_shot_protocol: dict) -> dict:
    """The few-shot record a version keeps: the few_shot protocol's own weights when its
    cross-validation chose them (or protocol A tuned none); when it chose the fold-in
    weights, protocol A's (the fold-in tuning on the main model that serves), with the
    verdict (``cv``) attached."""
    if few_shot_protocol.get("tuned_on") == "few_shot" or not protocol_a:
        return few_shot_protocol
    return {**protocol_a, "cv": few_shot_protocol.get("cv")}


def _rebuild(data, use_kg: bool = True, use_text: bool = True):
    """The same split without KG edges and/or text features (ablations)."""
    sub = replace(data)
    if not use_kg:
        sub = replace(sub, entity_keys=data.entity_keys[:0], kg_head=data.kg_head[:0], kg_tail=data.kg_tail[:0],
                      kg_rel=data.kg_rel[:0], relation_names=[])
    if not use_text:
        sub = replace(sub, item_text=None, user_text=None)
    return sub


#: Protocols that need nothing but the tables and the config (no stored model, no kept peers):
#: they may run in a process of their own while protocol A runs in the caller's.
SELF_CONTAINED = ("A_recbole", "B", "cold_item", "few_shot")


def self_contained_protocol(name: str, tables, config: EvalConfig, log) -> tuple[str, ProtocolResult] | None:
    """``(prefix of its step timings, result)`` of one :data:`SELF_CONTAINED` protocol (None
    when the data leave it nothing to grade)."""
    from recsys_dagster.core.explain import item_entity_lists
    from recsys_dagster.core.gnn_data import implicit_interactions
    from recsys_dagster.core.splits import (
        cold_item_split,
        few_shot_user_split,
        random_split,
        temporal_cutoffs,
        temporal_split,
    )
    from recsys_dagster.core.training_data import data_for_split

    cfg = config.train
    positives = implicit_interactions(tables.interactions, cfg.min_rating)
    spec = cfg.split_spec()
    if name == "A_recbole":
        data = data_for_split(tables, random_split(positives, seed=spec.seed), cfg)
        return name, run_protocol(name, data, replace(config, ablations=False), log=log)
    if name == "B":
        split = temporal_split(positives, *temporal_cutoffs(positives, config.temporal_train_share))
        if not (len(split.valid) and len(split.test)):
            log("protocol B skipped: the temporal split leaves no validation or test interactions")
            return None
        return name, run_protocol(name, data_for_split(tables, split, cfg), config, log=log)
    if name == "few_shot":
        split, _ = few_shot_user_split(positives, share=config.few_shot_share, keep=config.few_shot_keep,
                                       seed=spec.seed, base=spec.apply(positives))
        if not (len(split.valid) and len(split.test)):
            log("protocol few_shot skipped: its users have no validation or test interactions")
            return None
        return name, run_protocol(name, data_for_split(tables, split, cfg), config, log=log, split=split)
    if name != "cold_item":
        raise ValueError(f"protocol {name!r}: expected one of {', '.join(SELF_CONTAINED)}")
    split, _ = cold_item_split(positives, share=config.cold_item_share, seed=spec.seed, base=spec.apply(positives))
    data = data_for_split(tables, split, cfg)
    ents = item_entity_lists(data.n_items, {i: n for n, i in enumerate(data.item_ids)},
                             tables.entities, tables.relations, tables.triples)
    return "cold", run_protocol("cold_item", data, replace(config, ablations=False), item_entities=ents, log=log)


def protocol_processes(config: EvalConfig, n_protocols: int) -> int:
    """How many processes ``n_protocols`` protocols run in (:attr:`EvalConfig.protocol_processes`;
    auto: one per torch thread on a CPU run, one on an accelerator)."""
    import torch

    from recsys_dagster.core.text import resolve_device

    if config.protocol_processes:
        return max(1, min(config.protocol_processes, n_protocols))
    if resolve_device(config.train.device) != "cpu":
        return 1
    return max(1, min(n_protocols, torch.get_num_threads()))


@one_blas_thread
def evaluate_protocols(tables, config: EvalConfig, main_model_for=None, log=print, peers=None) -> ProtocolResult:
    """Every protocol in ``config.protocols`` on the warehouse ``tables``.

    Protocols: ``A`` (the hash split of ``config.train``, stable as data grows),
    ``A_recbole`` (RecBole's per-user shuffle with the same seed, every model trained in the
    run), ``B`` (temporal), ``cold_item`` and ``few_shot`` (whose few-shot weights join
    protocol A's fusion weights). ``main_model_for(data, split)`` may return an
    already trained main model for protocol A (the published ``gnn_model`` weights, after
    the caller has checked that they never trained on ``split``'s valid or test pairs);
    otherwise the main model is trained here. ``peers`` decides where protocol A's trained
    peers start and keeps them (:func:`run_protocol`); the other protocols train theirs from
    scratch. Step timings are prefixed by protocol.

    With :func:`protocol_processes` above one, the other protocols run in worker processes
    (:class:`~recsys_dagster.core.protocol_worker.ProtocolWorkers`, started once protocol A's
    closed-form peers are fitted) while protocol A runs here; the rows come back in the same
    order.
    """
    from recsys_dagster.core.gnn_data import implicit_interactions
    from recsys_dagster.core.training_data import data_for_split

    cfg = config.train
    total = ProtocolResult()

    def collect(prefix: str, res: ProtocolResult) -> None:
        total.rows += res.rows
        total.comparisons += res.comparisons
        total.seconds.update({f"{prefix}_{k}": v for k, v in res.seconds.items()})
        total.params.update(res.params)
        if prefix == "few_shot":  # the few-shot users' weights travel with protocol A's
            if "few_shot" in res.fusion:
                total.fusion = {**total.fusion, "few_shot": chosen_few_shot(total.fusion.get("few_shot"),
                                                                            res.fusion["few_shot"])}
        elif prefix == "A" or not total.fusion:
            total.fusion = {**(res.fusion or total.fusion), **{k: v for k, v in total.fusion.items() if k == "few_shot"}}

    others = [p for p in SELF_CONTAINED if p in config.protocols]
    processes = protocol_processes(config, len(others) + ("A" in config.protocols))
    workers = None

    def start_workers() -> None:
        # after protocol A's closed-form peers: EASE's dense inverses use every thread (its λ grid on
        # ml-latest-small, 9.7k items, took 305 s at one thread beside a worker, 161-166 s alone at two)
        nonlocal workers
        if workers is None and processes > 1 and others:
            from recsys_dagster.core.protocol_worker import ProtocolWorkers

            workers = ProtocolWorkers(others, tables, config, processes)

    def step(msg: str) -> None:
        log(msg)
        if workers is not None:
            workers.step()

    try:
        if "A" in config.protocols:
            split = cfg.split_spec().apply(implicit_interactions(tables.interactions, cfg.min_rating))
            data = data_for_split(tables, split, cfg)
            main = main_model_for(data, split) if main_model_for is not None else None
            collect("A", run_protocol("A", data, config, main_model=main, log=step, history=split.train,
                                      peers=peers, split=split, closed_form_done=start_workers))
        start_workers()
        for name in others:
            out = workers.result(name, log) if workers is not None else self_contained_protocol(name, tables, config, log)
            if out is not None:
                collect(*out)
    finally:
        if workers is not None:
            workers.close()
    return total
