"""Cross-domain transfer: start a model on one dataset from a model trained on another.

Items of every dataset live in the same text space (one sentence encoder), so what a
KGTextGNN learns *about text and relations* carries over; what it learns about particular
ids does not. A transfer therefore copies

* the text and behaviour towers (``text_proj``, ``behav_proj``: item text → embedding,
  pooled history text → user embedding),
* relation parameters (``rel_W``, ``rel_emb``) of relations with the same name
  (``item:genre:entity`` in both KGs, say),
* the source's model settings (model, dimension, layers, KG weight, loss, temperature) and,
  in the version's manifest, its fusion weights as the starting point the evaluation re-tunes,

and starts every id embedding (users, items, KG entities) at zero: a node's input is then
exactly what the towers make of its text, ``x_i = W_t t_i`` and ``x_u = W_b b_u`` (the
towers *are* the initialization of new ids), and an entity's first propagated
representation is the mean of its items' (entity ids are not matched across datasets:
opaque ids such as ``e17`` or ``m.0abc`` name different things in different graphs). ``mode="zero_shot"`` stops there: the target is scored with the
source's towers over the target's own graph, without training on it; ``"finetune"`` trains
from that start on the target (the start is itself a candidate of early stopping).

Nothing here depends on a dataset: any two datasets whose item text was encoded by the
same sentence encoder transfer (the generic folder format, any text).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from recsys_dagster.core.model_store import (
    MANIFEST,
    WEIGHTS,
    ModelStore,
    ModelStoreError,
    ModelVersion,
)

MODES = ("finetune", "zero_shot")
#: Settings that define what the transferred parameters compute; the target adopts them.
ARCHITECTURE = ("model", "embedding_dim", "num_layers", "kg_weight", "loss", "temperature")
TOWERS = ("text_proj.weight", "behav_proj.weight")


class TransferError(ValueError):
    """A source that cannot be transferred (not found, not published, other encoder, ...)."""


@dataclass(frozen=True)
class TransferSource:
    """A published model version to transfer from: its store (possibly another warehouse's)
    and version."""

    store: ModelStore
    version: ModelVersion

    @property
    def config(self) -> dict:
        return self.version.manifest.get("config") or {}

    def payload(self) -> dict:
        """The weight file, marked as a transfer (what :func:`transfer_state` reads)."""
        import torch

        payload = torch.load(self.version.weights, map_location="cpu", weights_only=True)
        payload["transfer"] = True
        payload["text_model"] = payload.get("text_model") or self.version.manifest.get("text_model")
        return payload

    def record(self, mode: str) -> dict:
        """What the new version's manifest keeps about its source (``transfer_from``)."""
        m = self.version.manifest
        return {"version": self.version.version, "store": str(self.store.root.resolve()), "mode": mode,
                "dataset": m.get("dataset"), "text_model": m.get("text_model"), "model": m.get("model"),
                "weights_sha256": m.get("weights_sha256")}


def resolve_source(spec: str, store: ModelStore) -> TransferSource:
    """``spec``: a version name in ``store``, a version folder (``…/models/<version>``), or
    a model store folder (its published version), possibly of another warehouse. The
    version must be published (it passed its quality gate) and not invalidated."""
    spec = str(spec).strip()
    if not spec:
        raise TransferError("transfer_from is empty: give a model version, a version folder or a model store folder")
    path = Path(spec).expanduser()
    try:
        if (path / MANIFEST).is_file():
            src = ModelStore(path.parent)
            mv = src.get(path.name)
        elif path.is_dir():
            src = ModelStore(path)
            mv = src.published()
            if mv is None:
                raise TransferError(f"transfer_from {spec}: that model store has no published version")
        elif "/" in spec or "\\" in spec:
            raise TransferError(f"transfer_from {spec}: no such model version folder or model store folder")
        else:
            src, mv = store, store.get(spec)
    except ModelStoreError as exc:
        raise TransferError(f"transfer_from {spec}: {exc}") from None
    if mv.invalidated:
        raise TransferError(f"transfer_from {spec}: version {mv.version} was invalidated "
                            f"({mv.manifest['invalidated'].get('reason')})")
    if not mv.published:
        raise TransferError(f"transfer_from {spec}: version {mv.version} has not passed the quality gate "
                            "(only published versions transfer)")
    if not (mv.path / WEIGHTS).is_file():
        raise TransferError(f"transfer_from {spec}: {mv.path / WEIGHTS} is missing")
    return TransferSource(src, mv)


@dataclass(frozen=True)
class TransferPlan:
    """A resolved transfer: the source, the mode and the training config with the source's
    architecture (what is logged and trained)."""

    source: TransferSource
    mode: str
    config: object  # TrainConfig

    def log_line(self) -> str:
        c = self.config
        return (f"transfer from {self.source.version.version} ({self.source.store.root}), {self.mode}: "
                f"model={c.model}, embedding_dim={c.embedding_dim}, num_layers={c.num_layers}, loss={c.loss}")


def plan_transfer(spec: str, mode: str, store: ModelStore, config, warm_start: bool = False,
                  text_model: str | None = None) -> TransferPlan:
    """Resolve ``transfer_from`` before anything is trained or logged (one-line errors);
    ``text_model``: the target's encoder id (``WarehouseTables.text_model``)."""
    if warm_start:
        raise TransferError("warm_start and transfer_from exclude each other: a warm start continues this "
                            "dataset's published version, a transfer starts from another model's towers")
    source = resolve_source(spec, store)
    check_encoders(source.version.manifest.get("text_model"), text_model)
    return TransferPlan(source, mode, transfer_config(config, source.config, mode))


def check_encoders(source_model: str | None, target_model: str | None) -> None:
    """Both item-text spaces must come from one encoder (unknown on either side: no check)."""
    a, b = encoder_family(source_model), encoder_family(target_model)
    if a and b and a != b:
        raise TransferError(f"the source's item text was encoded by {a}, the target's by {b}: "
                            "encode both with one encoder (RECSYS_TEXT_MODEL)")


def encoder_family(model_id: str | None) -> str | None:
    """The encoder of a text model id (``name|max_tokens=…|int8`` → ``name``): int8 and fp32
    vectors of one encoder share a space (cosine 0.99), other encoders do not."""
    return None if not model_id else str(model_id).split("|")[0]


def transfer_config(config, source_config: dict, mode: str = "finetune"):
    """``config`` (a TrainConfig) with the source's architecture; zero-shot trains no epoch."""
    if mode not in MODES:
        raise TransferError(f"transfer mode {mode!r}: choose {' or '.join(MODES)}")
    if source_config.get("model") != "kgtextgnn" or not source_config.get("use_text", True):
        raise TransferError(f"the source is a {source_config.get('model')} model"
                            f"{'' if source_config.get('use_text', True) else ' without text'}: only kgtextgnn "
                            "with text has towers that transfer")
    adopted = {k: source_config[k] for k in ARCHITECTURE if k in source_config}
    out = replace(config, **adopted, use_text=True)
    return replace(out, max_epochs=0, min_epochs=0) if mode == "zero_shot" else out


@dataclass
class TransferReport:
    towers: list[str] = field(default_factory=list)
    relations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"towers": self.towers, "relations_shared": self.relations}


def transfer_state(model, source: dict, data) -> TransferReport:
    """Load what transfers from ``source`` (a weight payload) into ``model`` built for
    ``data`` (another dataset): towers and same-name relations; every id row (users, items,
    entities) is zeroed so the towers alone make the start."""
    import torch

    state, old = model.state_dict(), source["state_dict"]
    if "text_proj.weight" not in state:
        raise TransferError(f"a {type(model).__name__} has no text tower to transfer into")
    if data.item_text is None:
        raise TransferError("the target has no item text embeddings: nothing to transfer through")
    check_encoders(source.get("text_model"), getattr(data, "text_model", None))
    report = TransferReport()
    with torch.no_grad():
        for name in TOWERS:
            if name not in state:
                continue
            if name not in old:
                raise TransferError(f"the source model has no {name.split('.')[0]} (trained without text?)")
            if old[name].shape != state[name].shape:
                raise TransferError(f"{name}: source {tuple(old[name].shape)} vs target {tuple(state[name].shape)} "
                                    "(another embedding size or text encoder)")
            state[name].copy_(old[name])
            report.towers.append(name.split(".")[0])
        src_rel = {n: i for i, n in enumerate(source.get("relations") or [])}
        for new_r, name in enumerate(data.relation_names):
            old_r = src_rel.get(name)
            if old_r is None or old_r >= old["rel_W"].shape[0]:
                continue
            state["rel_W"][new_r].copy_(old["rel_W"][old_r])
            state["rel_emb.weight"][new_r].copy_(old["rel_emb.weight"][old_r])
            report.relations.append(name)
        state["embedding.weight"].zero_()  # ids of another dataset mean nothing here
    model.load_state_dict(state)
    return report


__all__ = ["ARCHITECTURE", "MODES", "TOWERS", "TransferError", "TransferPlan", "TransferReport", "TransferSource",
           "check_encoders", "encoder_family", "plan_transfer", "resolve_source", "transfer_config", "transfer_state"]
