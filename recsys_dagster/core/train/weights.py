"""Weight files (``state_dict`` + id maps + config, loadable with ``weights_only=True``)
and warm starts from an earlier model."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

from recsys_dagster.core.train.checkpoint import atomic_save
from recsys_dagster.core.train.config import TrainConfig, TrainResult


def node_keys(data) -> list[str]:
    """Key of every row of a model's node embedding table: users, items, then entities."""
    return ([f"user:{u}" for u in data.user_ids] + [f"item:{i}" for i in data.item_ids]
            + [str(e) for e in data.entity_keys])


def warm_start_state(model, previous: dict, data) -> int:
    """Copy weights of an earlier model: embedding rows matched by node key (new users,
    items and entities keep their fresh rows), relation tensors when the relation list is
    unchanged, other tensors when shapes match. Returns how many tensors were copied.
    A payload marked ``transfer`` (another dataset) goes through
    :func:`~recsys_dagster.core.transfer.transfer_state` instead: towers and same-name
    relations, never id rows."""
    import torch

    if previous.get("transfer"):
        from recsys_dagster.core.transfer import transfer_state

        report = transfer_state(model, previous, data)
        return len(report.towers) + 2 * bool(report.relations) + 1  # + the zeroed id table

    state = model.state_dict()
    prev_state = previous["state_dict"]
    copied = 0
    with torch.no_grad():
        for name, tensor in state.items():
            old = prev_state.get(name)
            if old is None:
                continue
            if name == "embedding.weight":
                pos = {k: i for i, k in enumerate(previous.get("node_keys", []))}
                pairs = [(i, pos[k]) for i, k in enumerate(node_keys(data)) if k in pos and pos[k] < old.shape[0]]
                if pairs and old.shape[1:] == tensor.shape[1:]:
                    new_rows, old_rows = map(list, zip(*pairs, strict=True))
                    tensor[new_rows] = old[old_rows].to(tensor.device, tensor.dtype)
                    copied += 1
            elif name.startswith("rel_"):
                if previous.get("relations") == list(data.relation_names) and old.shape == tensor.shape:
                    tensor.copy_(old)
                    copied += 1
            elif old.shape == tensor.shape:
                tensor.copy_(old)
                copied += 1
    model.load_state_dict(state)
    return copied


def save_weights(path: str | Path, result: TrainResult, data) -> str:
    """Write ``state_dict`` + id maps + config + metrics; returns the file's SHA-256."""
    path = Path(path)
    atomic_save(weights_payload(result, data), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_payload(result: TrainResult, data) -> dict:
    """What a weight file holds (tensors on the CPU, plain lists and dicts)."""
    return {
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "ids": {"user": [str(x) for x in data.user_ids], "item": [str(x) for x in data.item_ids],
                "entity": [str(x) for x in data.entity_keys]},
        "node_keys": node_keys(data),
        "relations": list(data.relation_names),
        "text_model": getattr(data, "text_model", None),
        "config": asdict(result.config),
        "metrics": {"valid": result.best_valid, "test": result.test, "best_epoch": result.best_epoch},
    }


def load_weights(path: str | Path, data, device: str = "cpu"):
    """Rebuild the model for ``data`` and load saved weights (``weights_only=True``)."""
    import torch

    from recsys_dagster.core.models import build_model

    payload = torch.load(path, map_location=device, weights_only=True)
    cfg = TrainConfig.from_dict(payload["config"])
    if payload["ids"]["item"] != [str(x) for x in data.item_ids] or payload["ids"]["user"] != [str(x) for x in data.user_ids]:
        raise ValueError(f"{path}: weights were trained on other users/items than the data given")
    model = build_model(cfg.model, data, cfg.embedding_dim, cfg.num_layers, cfg.kg_weight, cfg.id_dropout, device)
    model.load_state_dict(payload["state_dict"])
    model.cosine = cfg.cosine
    model.refresh()
    model.eval()
    return model, payload
