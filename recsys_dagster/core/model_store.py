"""The model store: versioned model folders with a manifest, ``latest`` and ``published``.

One folder per version under ``root``::

    <root>/<version>/model.pt            weights (state_dict + id maps + config), weights_only loadable
    <root>/<version>/manifest.json       model, config, split spec + fingerprint, parent (warm start),
                                         MLflow run id, weights SHA-256, fusion weights, gate result
    <root>/<version>/train_pairs.parquet the (user_id, item_id) pairs the version trained on
    <root>/<version>/peers/<name>.pt     a trained peer (MF, LightGCN) its evaluation trained on
                                         protocol A, and <name>_train_pairs.parquet; the next
                                         version's evaluation warm-starts that peer from it
    <root>/LATEST, <root>/PUBLISHED      pointers, rewritten atomically

``latest`` is the newest trained version; ``published`` is the newest version whose quality
gate passed, and the only one anything that serves may use. The training pairs of every
version (and, through ``parent``, of its ancestors) let the evaluation prove that no test
pair was ever trained on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

WEIGHTS = "model.pt"
MANIFEST = "manifest.json"
TRAIN_PAIRS = "train_pairs.parquet"
PEERS = "peers"


class ModelStoreError(ValueError):
    """A one-line, user-facing problem with the store (missing version, unpublished, ...)."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_pairs(path: Path, pairs: pd.DataFrame) -> int:
    """The distinct (user_id, item_id) pairs of ``pairs`` as strings; returns how many."""
    out = pairs[["user_id", "item_id"]].astype(str).drop_duplicates().reset_index(drop=True)
    out.to_parquet(path, index=False)
    return len(out)


def _pair_keys(pairs: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(pairs[["user_id", "item_id"]].astype(str))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class ModelVersion:
    version: str
    path: Path
    manifest: dict

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def split_fingerprint(self) -> str | None:
        return (self.manifest.get("split") or {}).get("fingerprint")

    @property
    def parent(self) -> str | None:
        return self.manifest.get("parent")

    @property
    def fusion(self) -> dict:
        return self.manifest.get("fusion") or {}

    @property
    def scoring_precision(self) -> str:
        """The precision of the fused scorer's tables its gate graded: fp32 or int8."""
        return (self.manifest.get("scoring") or {}).get("precision", "fp32")

    @property
    def gate(self) -> dict | None:
        return self.manifest.get("gate")

    @property
    def published(self) -> bool:
        return bool(self.manifest.get("published_at")) and not self.invalidated

    @property
    def invalidated(self) -> bool:
        """Invalidated (e.g. it trained on a forgotten user): never served or warm-started from."""
        return bool(self.manifest.get("invalidated"))

    @property
    def mlflow_run_id(self) -> str | None:
        return self.manifest.get("mlflow_run_id")

    @property
    def peers(self) -> dict:
        """The trained peers its evaluation kept: name -> record (weights SHA-256, the
        version whose peer it was warm-started from, best epoch, validation metrics)."""
        return self.manifest.get("peers") or {}

    def peer_weights(self, name: str) -> Path:
        return self.path / PEERS / f"{name}.pt"

    def peer_pairs(self, name: str) -> Path:
        return self.path / PEERS / f"{name}_{TRAIN_PAIRS}"


class ModelStore:
    """Save, load, list, ``latest`` and ``published`` model versions under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ---- writing ------------------------------------------------------------------------
    def new_version(self, model: str) -> str:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        version, n = f"{stamp}-{model}", 1
        while (self.root / version).exists():
            n += 1
            version = f"{stamp}.{n}-{model}"
        return version

    def save(self, result, data, train_pairs: pd.DataFrame, split: dict, parent: str | None = None,
             extra: dict | None = None, version: str | None = None) -> ModelVersion:
        """Write a trained :class:`~recsys_dagster.core.train.TrainResult` as a new version
        (weights, training pairs, manifest) and point ``LATEST`` at it."""
        from dataclasses import asdict

        from recsys_dagster.core.train import save_weights

        version = version or self.new_version(result.config.model)
        folder = self.root / version
        sha = save_weights(folder / WEIGHTS, result, data)
        n_pairs = _write_pairs(folder / TRAIN_PAIRS, train_pairs)
        manifest = {"version": version, "model": result.config.model, "created_at": _now(),
                    "config": asdict(result.config), "split": split, "parent": parent,
                    "weights_sha256": sha, "n_train_pairs": n_pairs,
                    "metrics": {"valid": result.best_valid, "test": result.test, "best_epoch": result.best_epoch},
                    **(extra or {})}
        _write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, default=str))
        _write_atomic(self.root / "LATEST", version)
        return ModelVersion(version, folder, manifest)

    def save_peer(self, version: str, name: str, result, data, train_pairs: pd.DataFrame,
                  parent: str | None = None) -> ModelVersion:
        """Keep a peer its evaluation trained (weights and training pairs) with ``version``;
        ``parent`` is the version whose peer it was warm-started from."""
        from recsys_dagster.core.train import save_weights

        mv = self.get(version)
        sha = save_weights(mv.peer_weights(name), result, data)
        record = {"weights_sha256": sha, "parent": parent, "n_train_pairs": _write_pairs(mv.peer_pairs(name), train_pairs),
                  "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "valid": result.best_valid}
        return self.update(version, peers={**mv.peers, name: record})

    def update(self, version: str, **fields) -> ModelVersion:
        """Merge ``fields`` into a version's manifest (fusion weights, MLflow run id, ...)."""
        mv = self.get(version)
        manifest = {**mv.manifest, **fields}
        _write_atomic(mv.path / MANIFEST, json.dumps(manifest, indent=2, default=str))
        return ModelVersion(version, mv.path, manifest)

    def record_gate(self, version: str, passed: bool, details: dict) -> ModelVersion:
        """Store a gate verdict; a pass publishes the version (``PUBLISHED`` points at it),
        a fail never unpublishes what was published before."""
        gate = {"passed": bool(passed), "at": _now(), **details}
        fields: dict = {"gate": gate}
        if passed:
            fields["published_at"] = gate["at"]
        mv = self.update(version, **fields)
        if passed:
            _write_atomic(self.root / "PUBLISHED", version)
        return mv

    def invalidate(self, version: str, reason: str) -> ModelVersion:
        """Mark a version unusable and delete its files that hold ids or weights (weights,
        training pairs, serving snapshots); the manifest stays as the record. Pointers to it
        (``PUBLISHED``, ``SERVING``) are removed."""
        import shutil

        from recsys_dagster.core.snapshot import POINTER, SNAPSHOT_DIR

        mv = self.get(version)
        for name in (WEIGHTS, TRAIN_PAIRS):
            (mv.path / name).unlink(missing_ok=True)
        for folder in (SNAPSHOT_DIR, PEERS):
            shutil.rmtree(mv.path / folder, ignore_errors=True)
        for pointer in ("PUBLISHED", POINTER):
            path = self.root / pointer
            if path.is_file() and path.read_text().strip().split("/")[0] == version:
                path.unlink()
        return self.update(version, invalidated={"at": _now(), "reason": reason})

    # ---- reading ------------------------------------------------------------------------
    def get(self, version: str) -> ModelVersion:
        if not version or "/" in version or "\\" in version or version.startswith("."):
            raise ModelStoreError(f"{version!r} is not a model version name")
        folder = self.root / version
        if not (folder / MANIFEST).is_file():
            raise ModelStoreError(f"model version {version!r} not found in {self.root}")
        return ModelVersion(version, folder, json.loads((folder / MANIFEST).read_text()))

    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first."""
        if not self.root.is_dir():
            return []
        out = [self.get(p.name) for p in self.root.iterdir() if (p / MANIFEST).is_file()]
        return sorted(out, key=lambda m: (m.manifest.get("created_at", ""), m.version))

    def _pointer(self, name: str) -> ModelVersion | None:
        path = self.root / name
        if not path.is_file():
            return None
        try:
            return self.get(path.read_text().strip())
        except ModelStoreError:
            return None

    def latest(self) -> ModelVersion | None:
        return self._pointer("LATEST")

    def published(self) -> ModelVersion | None:
        """The version that serves: the newest one that passed the quality gate."""
        mv = self._pointer("PUBLISHED")
        return mv if mv is not None and (mv.gate or {}).get("passed") and not mv.invalidated else None

    def require_published(self) -> ModelVersion:
        mv = self.published()
        if mv is None:
            latest = self.latest()
            why = ("no model has been trained" if latest is None else
                   f"the latest version {latest.version} has not passed the quality gate "
                   f"({(latest.gate or {}).get('failures') or 'not evaluated yet'})")
            raise ModelStoreError(f"no published model version in {self.root}: {why}")
        return mv

    def last_published_on(self, split_fingerprint: str, exclude: str | None = None) -> ModelVersion | None:
        """The most recently published version trained on ``split_fingerprint``."""
        candidates = [m for m in self.versions() if m.published and m.split_fingerprint == split_fingerprint
                      and m.version != exclude]
        return max(candidates, key=lambda m: m.manifest["published_at"], default=None)

    def lineage(self, version: str) -> list[ModelVersion]:
        """The version, then its warm-start parent, grandparent, ... (oldest last)."""
        chain, seen = [], set()
        current: str | None = version
        while current and current not in seen:
            seen.add(current)
            mv = self.get(current)
            chain.append(mv)
            current = mv.parent
        return chain

    def train_pairs(self, version: str) -> pd.DataFrame:
        path = self.get(version).path / TRAIN_PAIRS
        if not path.is_file():
            why = (f"it was invalidated ({self.get(version).manifest['invalidated']['reason']})"
                   if self.get(version).invalidated else "its training data is unknown")
            raise ModelStoreError(f"model version {version!r} has no {TRAIN_PAIRS}: {why}")
        return pd.read_parquet(path)

    def load(self, version: str, data, device: str = "cpu"):
        """``(model, payload)`` of a version, rebuilt for ``data`` (weights_only load)."""
        from recsys_dagster.core.train import load_weights

        return load_weights(self.get(version).weights, data, device)


def ancestry(store: ModelStore, version: str) -> list[tuple[ModelStore, ModelVersion]]:
    """Every model whose training shaped ``version``: its warm-start lineage and, for each
    of those started by a transfer (``transfer_from``), the source's lineage in its own
    store, recursively. A source of *another dataset* (both manifests name different
    datasets) is listed too; :func:`leaked_pairs` does not compare its ids (another id space)."""
    out, todo, seen = [], [(store, version)], set()
    while todo:
        st, name = todo.pop(0)
        for mv in st.lineage(name):
            key = (str(st.root.resolve()), mv.version)
            if key in seen:
                continue
            seen.add(key)
            out.append((st, mv))
            src = mv.manifest.get("transfer_from")
            if src:
                src_store = ModelStore(src["store"])
                if not (src_store.root / src["version"] / MANIFEST).is_file():
                    raise ModelStoreError(f"transfer source {src['version']} of {mv.version} is gone from "
                                          f"{src['store']}: its training data cannot be checked")
                todo.append((src_store, src["version"]))
    return out


def leaked_peer_pairs(store: ModelStore, version: str, name: str, pairs: pd.DataFrame) -> dict[str, int]:
    """How many of ``pairs`` the peer ``name`` kept with ``version`` trained on, and each peer
    it was warm-started from (``"<version>/<name>"`` -> count); an honest grade finds 0."""
    keys = _pair_keys(pairs)
    out: dict[str, int] = {}
    current: str | None = version
    while current and f"{current}/{name}" not in out:
        mv = store.get(current)
        path = mv.peer_pairs(name)
        if name not in mv.peers or not path.is_file():
            raise ModelStoreError(f"peer {name} of model version {current} has no {path.name}: its training data "
                                  "is unknown")
        out[f"{current}/{name}"] = int(keys.isin(_pair_keys(pd.read_parquet(path))).sum())
        current = mv.peers[name].get("parent")
    return out


def leaked_pairs(store: ModelStore, version: str, pairs: pd.DataFrame) -> dict[str, int]:
    """How many of ``pairs`` (user_id, item_id) each model in ``version``'s
    :func:`ancestry` trained on; an honest evaluation finds 0 everywhere. Transfer sources
    trained on another dataset (recorded ``dataset`` names differ) share no users with
    this one and are reported under ``"<version> (other dataset <name>)"`` with 0."""
    keys = _pair_keys(pairs)
    own = store.get(version).manifest.get("dataset")
    out = {}
    for st, mv in ancestry(store, version):
        label = mv.version if st.root.resolve() == store.root.resolve() else f"{mv.version} ({st.root})"
        other = mv.manifest.get("dataset")
        if own and other and other != own:
            out[f"{label} (other dataset {other})"] = 0
            continue
        out[label] = int(keys.isin(_pair_keys(st.train_pairs(mv.version))).sum())
    return out
