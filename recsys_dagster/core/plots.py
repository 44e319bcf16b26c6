"""PNG plots for asset metadata (matplotlib, headless)."""

from __future__ import annotations

import io

import numpy as np


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def pca_2d(matrix: np.ndarray) -> np.ndarray:
    centered = matrix - matrix.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    return centered @ vt[:2].T


def embedding_projection_png(matrix: np.ndarray, labels: list[str], title: str, top_labels: int = 8) -> bytes:
    """2-D PCA scatter coloured by label (the most frequent labels; the rest in grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = pca_2d(matrix.astype(np.float64))
    fig, ax = plt.subplots(figsize=(6, 5))
    labels = np.asarray(labels, dtype=object)
    values, counts = np.unique(labels, return_counts=True)
    top = [v for _, v in sorted(zip(-counts, values, strict=True))][:top_labels]
    other = ~np.isin(labels, top)
    ax.scatter(xy[other, 0], xy[other, 1], s=4, c="lightgrey", label="other")
    for lab in top:
        m = labels == lab
        ax.scatter(xy[m, 0], xy[m, 1], s=6, label=str(lab))
    ax.set_title(title)
    ax.legend(markerscale=3, fontsize=7, loc="best")
    return _png(fig)


def line_plot_png(series: dict[str, list[float]], title: str, xlabel: str = "epoch") -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3))
    axes = np.atleast_1d(axes)
    for ax, (name, values) in zip(axes, series.items(), strict=True):
        ax.plot(range(1, len(values) + 1), values)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
    fig.suptitle(title)
    return _png(fig)


def bar_plot_png(labels: list[str], values: list[float], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(labels, values)
    ax.set_title(title)
    ax.invert_yaxis()
    return _png(fig)


def training_curve_png(result) -> bytes:
    """Loss and validation NDCG@10 per epoch of a :class:`~recsys_dagster.core.train.TrainResult`."""
    history = result.history
    return line_plot_png({"loss": [h["loss"] for h in history],
                          "valid ndcg@10": [h.get("valid_ndcg@10", float("nan")) for h in history]},
                         f"{result.config.model} training")


def png_markdown(png: bytes, alt: str) -> str:
    """A PNG inline in markdown (Dagster renders it in the asset's metadata)."""
    import base64

    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
