"""Train one model version from warehouse tables and put it in the model store.

The split comes from the config's :class:`~recsys_dagster.core.splits.SplitSpec`; a warm
start continues from the published version (else the latest) only when it was trained on
the same split, so the new version and all its ancestors share one train/valid/test
assignment and none of them ever trained on a pair that is graded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from recsys_dagster.core.model_store import ModelStore, ModelVersion


@dataclass
class FitOutcome:
    version: ModelVersion  # its manifest holds the split sizes and the warm-start parent
    result: object  # TrainResult
    data: object  # TrainData


def warm_start_parent(store: ModelStore, split_fingerprint: str, log: Callable[[str], None] = print) -> ModelVersion | None:
    """The version to continue from: published, else latest, and only on the same split
    (never an invalidated one: it trained on a forgotten user)."""
    for candidate in (store.published(), store.latest()):
        if candidate is None or candidate.invalidated:
            continue
        if candidate.split_fingerprint == split_fingerprint:
            return candidate
        log(f"warm start skipped: {candidate.version} was trained on split {candidate.split_fingerprint}, "
            f"not {split_fingerprint}")
    return None


#: Trains elsewhere (a Ray job): ``trainer(data, config, warm_start_weights, log) -> TrainResult``.
Trainer = Callable[[object, object, dict | None, Callable[[str], None]], object]


def fit_version(tables, config, store: ModelStore, warm_start: bool = False,
                on_epoch: Callable[[dict], None] | None = None, log: Callable[[str], None] = print,
                extra: dict | None = None, trainer: Trainer | None = None, transfer=None) -> FitOutcome:
    """Split, (warm-)train ``config.model`` with checkpoints under the store, save the version.
    A ``trainer`` trains somewhere else instead (no checkpoint; its per-epoch records go to
    ``on_epoch`` when it returns). ``transfer`` (a :class:`~recsys_dagster.core.transfer.TransferPlan`:
    a published version, possibly of another dataset) starts from its towers instead, with
    the plan's config: fine-tuned on this data, or not trained (zero-shot)."""
    import torch

    from recsys_dagster.core.train import train
    from recsys_dagster.core.training_data import data_for_split, make_split

    if transfer is not None:
        config = transfer.config
        log(transfer.log_line())
    spec = config.split_spec()
    split = make_split(tables, config)
    data = data_for_split(tables, split, config)
    parent = warm_start_parent(store, spec.fingerprint, log) if warm_start else None
    previous = torch.load(parent.weights, map_location="cpu", weights_only=True) if parent is not None else None
    if parent is not None:
        log(f"warm start from {parent.version}")
    if transfer is not None:
        src = transfer.source
        previous = src.payload()
        extra = {**(extra or {}), "transfer_from": src.record(transfer.mode),
                 "fusion": {**src.version.fusion, "from": f"transfer source {src.version.version}"}
                 if src.version.fusion else None}
    if trainer is None:
        result = train(data, config, checkpoint_path=store.root / "checkpoint.pt", warm_start=previous,
                       on_epoch=on_epoch, log=log)
    else:
        result = trainer(data, config, previous, log)
        for record in result.history if on_epoch is not None else ():
            on_epoch(record)
    version = store.save(result, data, split.train, {**spec.as_dict(), "fingerprint": spec.fingerprint},
                         parent=parent.version if parent is not None else None,
                         extra={"split_sizes": split.sizes(), "text_model": data.text_model, **(extra or {})})
    from recsys_dagster.core.plots import training_curve_png

    (version.path / "training_curve.png").write_bytes(training_curve_png(result))
    return FitOutcome(version, result, data)
