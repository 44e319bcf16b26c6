"""Per-epoch checkpoints: a killed run resumes at the next epoch with the same RNG state."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a reader never sees half a file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class LoopState:
    """What the loop carries from epoch to epoch."""

    next_epoch: int = 0
    best: float = float("-inf")
    best_epoch: int = -1
    best_state: dict | None = None
    history: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    #: the weight average's state (``TrainConfig.ema_decay > 0``), resumed with the run
    average: dict | None = None


class Checkpoint:
    """The checkpoint file of one run; it only resumes a run with the same config and data."""

    def __init__(self, path: str | Path | None, data, config):
        self.path = Path(path) if path else None
        self.fingerprint = data.fingerprint() + "|" + json.dumps(asdict(config), sort_keys=True)

    def resume(self, model, opt, gen, log) -> LoopState:
        """Load model, optimizer and RNG state from the file when it belongs to this run."""
        import torch

        if self.path is None or not self.path.exists():
            return LoopState()
        device = next(model.parameters()).device
        state = torch.load(self.path, map_location=device, weights_only=True)
        if state.get("fingerprint") != self.fingerprint:
            log("checkpoint belongs to another config or data: starting fresh")
            return LoopState()
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        if "model_generator" in state and model.generator is not None:
            model.generator.set_state(state["model_generator"].to(model.generator.get_state().device))
        log(f"resumed from checkpoint after epoch {state['epoch']} (best {state['best']:.4f})")
        return LoopState(state["epoch"] + 1, state["best"], state["best_epoch"], state["best_state"],
                         state["history"], state["epoch"], state.get("average"))

    def save(self, epoch: int, model, opt, gen, loop: LoopState) -> None:
        if self.path is None:
            return
        payload = {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                   "generator": gen.get_state(), "best": loop.best, "best_epoch": loop.best_epoch,
                   "best_state": loop.best_state, "history": loop.history, "fingerprint": self.fingerprint}
        if loop.average is not None:
            payload["average"] = loop.average
        if model.generator is not None:
            payload["model_generator"] = model.generator.get_state()
        atomic_save(payload, self.path)

    def remove(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()
