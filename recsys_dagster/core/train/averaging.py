"""An exponential moving average (EMA) of a model's weights, the weights that validation,
early stopping and the saved model use when ``TrainConfig.ema_decay > 0``.

The update is torch's own (:func:`torch.optim.swa_utils.get_ema_multi_avg_fn`, a fused
``lerp`` over every tensor). torch's :class:`~torch.optim.swa_utils.AveragedModel` is not
used: it deep-copies the module, which for the graph models would copy the propagation
operator (the whole graph) and the model's RNG; here only the weight tensors are shadowed
and swapped into the one model for evaluation.
"""

from __future__ import annotations

from contextlib import contextmanager


class WeightAverage:
    """``shadow ← decay · shadow + (1 − decay) · weights`` after every optimizer step.

    ``state`` resumes a saved average (a checkpoint); otherwise the average starts at the
    model's current weights (a fresh or warm-started model)."""

    def __init__(self, model, decay: float, state: dict | None = None):
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay {decay}: the average needs 0 < decay < 1 (0 turns it off)")
        self.keys = [k for k, v in model.state_dict().items() if v.is_floating_point()]
        current = model.state_dict()
        self.shadow = {k: (state[k] if state is not None else current[k]).detach().clone() for k in self.keys}
        self._update = get_ema_multi_avg_fn(decay)

    def update(self, model) -> None:
        current = model.state_dict()
        self._update([self.shadow[k] for k in self.keys], [current[k].detach() for k in self.keys], None)

    @contextmanager
    def applied(self, model):
        """The averaged weights inside the block (the model in eval mode, refreshed for
        them: no dropout draw), the model's own training weights and mode restored after it.
        The operator stays the average's until the model's next :meth:`refresh` (the loop
        refreshes before every epoch)."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        was_training = model.training
        model.load_state_dict({**raw, **self.shadow})
        model.eval()
        model.refresh()
        try:
            yield
        finally:
            model.load_state_dict(raw)
            model.train(was_training)
