"""``python -m recsys_dagster.serving`` (what ``make serve`` runs): the HTTP service on
``RECSYS_SERVE_HOST:PORT`` (default 127.0.0.1:8000) over the latest serving snapshot, in
``RECSYS_SERVE_WORKERS`` processes (default 1; each loads the snapshot and reloads on its own)."""

from __future__ import annotations

import logging


def build():
    """The app of one worker process (uvicorn factory)."""
    import torch

    from recsys_dagster.core.model_store import ModelStore
    from recsys_dagster.core.text import EncoderConfig, TextEncoder
    from recsys_dagster.serving.app import create_app
    from recsys_dagster.serving.state import Reloader
    from recsys_dagster.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings()
    # requests run in a thread pool: one intra-op thread each avoids oversubscribing the cores
    torch.set_num_threads(1)
    reloader = Reloader(ModelStore(settings.models_dir),
                        lambda: TextEncoder(EncoderConfig(model=settings.text_model, device="cpu",
                                                          quantize=settings.text_quantize)),
                        settings.serve_poll_s).start()
    if reloader.state is None:
        logging.getLogger("recsys_dagster.serving").warning("not ready: %s", reloader.error)
    return create_app(reloader)


def main() -> None:
    import uvicorn

    from recsys_dagster.settings import load_settings

    settings = load_settings()
    uvicorn.run("recsys_dagster.serving.__main__:build", factory=True, host=settings.serve_host,
                port=settings.serve_port, workers=settings.serve_workers, log_level="warning")


if __name__ == "__main__":
    main()
