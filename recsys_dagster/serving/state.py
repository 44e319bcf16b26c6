"""What one serving snapshot answers (no HTTP here): stored lists of known users, real-time
lists for new users from items and/or text, and similar items — each with the model
version that served it.

A :class:`ServingState` is built once from a snapshot (:mod:`recsys_dagster.core.snapshot`)
and is read-only afterwards, so requests share it without locks. Texts go through a
:class:`BatchEncoder`: one thread encodes the texts of all requests waiting at that moment
in one batch (the encoder is not thread-safe, and one batch of 20 short texts costs about
what 2 single ones do). :class:`Reloader` swaps in a new state when
``SERVING`` points at a new snapshot; requests that hold the old one finish on it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("recsys_dagster.serving")

MAX_K = 1000


class UnknownId(LookupError):
    """An id the snapshot does not know (the HTTP layer answers 404)."""


class BadRequest(ValueError):
    """A request the snapshot cannot answer as asked (the HTTP layer answers 422)."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _rows(frame, names) -> list[dict]:
    out = []
    for r in frame.itertuples(index=False):
        out.append({"rank": int(r.rank), "item_id": str(r.item_id), "title": str(names.get(str(r.item_id), r.item_id)),
                    "score": round(float(r.score), 6), "reason": r.reason,
                    "evidence": json.loads(r.evidence) if isinstance(r.evidence, str) and r.evidence else None})
    return out


@dataclass
class ServingState:
    version: str
    export_id: str
    published_at: str
    generated_at: str
    stored: dict  # user_id -> its rows as JSON texts, ranks 1..K
    prod: object  # recommend.Production
    explainer: object
    names: dict  # item_id -> display name
    item_pos: dict  # item_id -> index
    item_entities: list
    similar_parts: tuple  # (w_gnn, gnn unit vectors, w_text, text unit vectors or None)
    encoder: BatchEncoder | None = None
    pseudonymizer: object = None  # maps the caller's raw user ids to the snapshot's tokens

    def stored_id(self, user_id: str) -> str:
        """The id as the snapshot stores it: its token under the service's key (a token passes)."""
        from recsys_dagster.core.privacy.pseudonyms import stored_form

        return stored_form([user_id], self.pseudonymizer)[0]

    @property
    def similar_is_cheap(self) -> bool:
        """Whether one similar-items query is small work (< ~1 M multiply-adds)."""
        _, gnn, _, text = self.similar_parts
        return gnn.size + (text.size if text is not None else 0) <= 1_000_000

    @property
    def info(self) -> dict:
        return {"model_version": self.version, "snapshot": self.export_id, "published_at": self.published_at}

    # ---- known users -------------------------------------------------------------------
    def _stored(self, user_id: str, shown: str | None = None) -> list[str]:
        rows = self.stored.get(user_id)
        if rows is None:
            raise UnknownId(f"unknown user {shown or user_id!r}: not in model version {self.version}. For a new user, "
                            "POST /v1/recommendations with the items they interacted with and/or a text")
        return rows

    def is_stored(self, user_id: str, k: int, shown: str | None = None) -> bool:
        """Whether the stored list answers ``k`` (else it is scored live, which takes CPU).
        ``user_id`` in stored form (:meth:`stored_id`); ``shown``: the id the caller sent."""
        rows = self._stored(user_id, shown)
        return k <= len(rows) or len(rows) >= len(self.item_pos)

    def user_recommendations_json(self, user_id: str, k: int, shown: str | None = None) -> str:
        """The stored answer as JSON text: the rows were serialized once, at load time."""
        head = json.dumps({**self.info, "user_id": shown or user_id, "generated_at": self.generated_at})
        return f'{head[:-1]}, "items": [{", ".join(self._stored(user_id, shown)[:k])}]}}'

    def user_recommendations(self, user_id: str, k: int, shown: str | None = None) -> dict:
        if self.is_stored(user_id, k, shown):
            return json.loads(self.user_recommendations_json(user_id, k, shown))
        return {**self.info, "user_id": shown or user_id, "generated_at": _now(), "items": self._live_user(user_id, k)}

    def _live_user(self, user_id: str, k: int) -> list[dict]:
        """A known user's list longer than the stored one, scored now (same scorer and reasons)."""
        import pandas as pd

        from recsys_dagster.core.fusion import top_k

        data = self.prod.data
        u = int(np.flatnonzero(np.asarray(data.user_ids, dtype=str) == user_id)[0])
        items, scores = top_k(self.prod.scorer, np.array([u]), data.train_csr, data.n_items, min(k, data.n_items))
        keep = np.isfinite(scores[0])
        reasons, evidence, _ = self.explainer.explain_user(u, items[0][keep])
        frame = pd.DataFrame({"rank": np.arange(1, keep.sum() + 1), "item_id": data.item_ids[items[0][keep]],
                              "score": scores[0][keep], "reason": reasons, "evidence": evidence})
        return _rows(frame, self.names)

    # ---- new users ---------------------------------------------------------------------
    def check_new_user(self, items: list[str], text: str | None) -> None:
        """Raise :class:`BadRequest` for a request :meth:`new_user` cannot answer."""
        if text and (self.encoder is None or self.prod.scorer.item_text is None):
            raise BadRequest(f"model version {self.version} has no text embeddings: send item ids")
        if not text and not any(i in self.item_pos for i in items):
            raise BadRequest(f"none of the items {list(dict.fromkeys(items))[:10]} is in model version "
                             f"{self.version}; send known item ids and/or a text")

    def new_user(self, items: list[str], text: str | None, k: int, profile: np.ndarray | None = None) -> dict:
        """A new user's list; ``profile`` is ``text``'s vector when the caller encoded it."""
        from recsys_dagster.core.recommend import recommend_for_new_user

        self.check_new_user(items, text)
        known = [i for i in dict.fromkeys(items) if i in self.item_pos]
        unknown = [i for i in dict.fromkeys(items) if i not in self.item_pos]
        if text and profile is None:
            profile = self.encoder.encode_one(text)
        frame = recommend_for_new_user(self.prod.scorer, self.prod.data, self.explainer, known, profile, k)
        return {**self.info, "generated_at": _now(), "known_items": known, "unknown_items": unknown,
                "items": _rows(frame, self.names)}

    # ---- similar items -----------------------------------------------------------------
    def similar(self, item_id: str, k: int) -> dict:
        i = self.item_pos.get(item_id)
        if i is None:
            raise UnknownId(f"unknown item {item_id!r}: not in model version {self.version}")
        w_gnn, gnn, w_text, text = self.similar_parts
        cos_g = gnn @ gnn[i]
        cos_t = text @ text[i] if text is not None else np.zeros_like(cos_g)
        score = w_gnn * cos_g + w_text * cos_t
        score[i] = -np.inf
        k = min(k, len(score) - 1)
        top = np.argpartition(-score, k - 1)[:k] if k > 0 else np.zeros(0, dtype=int)
        top = top[np.argsort(-score[top], kind="stable")]
        ids = self.prod.data.item_ids
        mine = {e[0] for e in self.item_entities[i] if e[2]}  # labelled attributes, rarest first
        out = []
        for rank, j in enumerate(top, 1):
            g, t = float(w_gnn * cos_g[j]), float(w_text * cos_t[j])
            shared = [e for e in self.item_entities[j] if e[0] in mine]
            reason = "similar description" if t > g else "liked by the same people"
            if shared:
                reason += f"; same {shared[0][1]} ({shared[0][2]})"
            out.append({"rank": rank, "item_id": str(ids[j]), "title": str(self.names.get(str(ids[j]), ids[j])),
                        "score": round(float(score[j]), 6), "reason": reason,
                        "evidence": {"collaborative": round(g, 6), "text": round(t, 6),
                                     "shared": [{"entity": e[0], "relation": e[1], "label": e[2]} for e in shared[:3]]}})
        return {**self.info, "item_id": item_id, "title": str(self.names.get(item_id, item_id)), "items": out}


def load_state(store, version, export_id: str, encoder=None) -> ServingState:
    """Everything a snapshot serves, in memory (the snapshot's files are not read again)."""
    import pandas as pd

    from recsys_dagster.core import warehouse as wh
    from recsys_dagster.core.explain import Verbs, display_names, item_entity_lists
    from recsys_dagster.core.privacy.pseudonyms import OFF, id_space
    from recsys_dagster.core.recommend import load_production_scorer, production_explainer
    from recsys_dagster.core.snapshot import RECOMMENDATIONS, SnapshotError, open_snapshot
    from recsys_dagster.core.training_data import read_tables
    from recsys_dagster.settings import pseudonymizer

    pseudo = pseudonymizer()
    conn, manifest = open_snapshot(version, export_id)
    if manifest.get("id_space", OFF) != id_space(pseudo):
        conn.close()
        raise SnapshotError(f"snapshot {version.version}/{export_id} holds user ids in space "
                            f"{manifest.get('id_space', OFF)}, this service's key gives {id_space(pseudo)}: "
                            "start it with the pipeline's RECSYS_PSEUDONYMIZE_KEY[_FILE]")
    try:
        tables = read_tables(conn)
        titles = wh.read_table(conn, "items").set_index("item_id")["title"]
        vectors = wh.read_embeddings(conn, "user_behavior_embeddings", "user_id") \
            if wh.table_exists(conn, "user_behavior_embeddings") else None
        recs = wh.read_table(conn, RECOMMENDATIONS)
    finally:
        conn.close()
    prod = load_production_scorer(tables, version, None, manifest.get("cold_user_threshold", 5), "cpu", vectors)
    verbs = Verbs(manifest.get("verb", "interacted with"), manifest.get("verb_positive"))
    explainer = production_explainer(prod, tables, titles, verbs)
    data = prod.data
    item_ids = [str(x) for x in data.item_ids]
    names = dict(zip(item_ids, display_names(pd.Series(item_ids), titles), strict=True))
    stored = {str(u): [json.dumps(r) for r in _rows(g, names)]
              for u, g in recs.sort_values(["user_id", "rank"]).groupby("user_id", sort=False)}
    entities = item_entity_lists(data.n_items, {i: n for n, i in enumerate(data.item_ids)}, tables.entities,
                                 tables.relations, tables.triples)
    return ServingState(version.version, export_id, manifest.get("published_at", ""), manifest.get("generated_at", ""),
                        stored, prod, explainer, names, {i: n for n, i in enumerate(item_ids)}, entities,
                        similar_parts(prod), encoder, pseudo)


def similar_parts(prod) -> tuple:
    """Unit item vectors of the GNN and the text tower and their weights in the fused
    item-item similarity (the version's fusion weights α, β, normalized to sum 1)."""
    import torch

    from recsys_dagster.core.explain import dense

    scorer = prod.scorer
    gnn = torch.nn.functional.normalize(dense(scorer.item_gnn).float(), dim=-1).numpy()
    text = torch.nn.functional.normalize(dense(scorer.item_text).float(), dim=-1).numpy() \
        if scorer.item_text is not None else None
    alpha, beta = abs(prod.fusion.get("alpha", 1.0)), abs(prod.fusion.get("beta", 0.0)) if text is not None else 0.0
    total = alpha + beta or 1.0
    return alpha / total, gnn, beta / total, text


class BatchEncoder:
    """Dynamic batching for a :class:`~recsys_dagster.core.text.TextEncoder`: callers of
    :meth:`encode_one` (any thread) wait while a single worker thread encodes every text
    queued at that moment, up to ``max_batch``, in one call."""

    def __init__(self, encoder, max_batch: int = 64, timeout_s: float = 30.0):
        self.encoder, self.max_batch, self.timeout_s = encoder, max_batch, timeout_s
        self._queue: queue.Queue = queue.Queue()
        self.batches = 0
        threading.Thread(target=self._loop, name="text-batcher", daemon=True).start()

    def submit(self, text: str) -> Future:
        """A future of ``text``'s vector (await it with ``asyncio.wrap_future``)."""
        done: Future = Future()
        self._queue.put((text, done))
        return done

    def encode_one(self, text: str) -> np.ndarray:
        return self.submit(text).result(timeout=self.timeout_s)

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                vectors = self.encoder.encode([text for text, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for _, done in batch:
                    done.set_exception(exc)
                continue
            self.batches += 1
            for (_, done), vector in zip(batch, vectors, strict=True):
                done.set_result(vector)


class Reloader:
    """Holds the current :class:`ServingState`; a daemon thread checks ``SERVING`` every
    ``poll_s`` seconds and swaps in a new snapshot once it is fully loaded (a failed load
    keeps the old state and is reported by ``/ready``). A snapshot that was *withdrawn* (its
    folder deleted, as forget-user does with every version trained on a forgotten user) is
    dropped from memory at the next check: the service is then not ready until a new one is
    published."""

    def __init__(self, store, encoder_factory=None, poll_s: float = 2.0):
        self.store, self.encoder_factory, self.poll_s = store, encoder_factory, poll_s
        self.state: ServingState | None = None
        self.error: str | None = None
        self.reloads = 0
        self._encoder = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def encoder(self) -> BatchEncoder | None:
        if self._encoder is None and self.encoder_factory is not None:
            self._encoder = BatchEncoder(self.encoder_factory())
        return self._encoder

    def check(self) -> bool:
        """Load the snapshot ``SERVING`` points at if it is new; True when it swapped."""
        from recsys_dagster.core.model_store import ModelStoreError
        from recsys_dagster.core.snapshot import SNAPSHOT_DIR, SnapshotError, current_snapshot

        try:
            version, export_id = current_snapshot(self.store)
        except (SnapshotError, ModelStoreError) as exc:
            self.error = str(exc)
            if self.state is not None and not (self.store.root / self.state.version / SNAPSHOT_DIR /
                                               self.state.export_id).is_dir():
                log.warning("snapshot %s/%s was withdrawn; serving nothing until a new one is published",
                            self.state.version, self.state.export_id)
                self.state, self.error = None, f"snapshot {self.state.version}/{self.state.export_id} was withdrawn " \
                                               f"(e.g. a user was forgotten); waiting for a new publish: {exc}"
            return False
        if self.state is not None and (self.state.version, self.state.export_id) == (version.version, export_id):
            return False
        t0 = time.perf_counter()
        try:
            state = load_state(self.store, version, export_id, self.encoder())
        except Exception as exc:  # noqa: BLE001 - keep serving the old state, report why
            self.error = f"loading {version.version}/{export_id} failed: {type(exc).__name__}: {exc}"
            log.exception("snapshot load failed")
            return False
        self.state, self.error = state, None
        self.reloads += 1
        log.info("serving %s (snapshot %s), loaded in %.1f s", version.version, export_id, time.perf_counter() - t0)
        return True

    def start(self) -> Reloader:
        self.check()

        def loop():
            while not self._stop.wait(self.poll_s):
                self.check()

        self._thread = threading.Thread(target=loop, name="snapshot-reloader", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


__all__ = ["MAX_K", "BadRequest", "BatchEncoder", "Reloader", "ServingState", "UnknownId", "load_state"]
