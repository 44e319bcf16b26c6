"""An exponential moving average (EMA) of a model's weights: with ``TrainConfig.ema_decay > 0``
the training loop validates it next to the raw weights and keeps whichever is better.

The update is torch's own (:func:`torch.optim.swa_utils.get_ema_multi_avg_fn`, a fused
``lerp`` over every tensor). torch's :class:`~torch.optim.swa_utils.AveragedModel` is not
used: it deep-copies the module, which for the graph models would copy the propagation
operator (the whole graph) and the model's RNG, and its EMA starts at the initial weights;
here only the weight tensors are shadowed, the average is bias-corrected (below) and swapped
into the one model for evaluation.
"""

from __future__ import annotations

from contextlib import contextmanager


class WeightAverage:
    r"""The bias-corrected exponential moving average of the weights after each step ``t``:

    .. math::
        m_t = d\, m_{t-1} + (1 - d)\, w_t,\quad m_0 = 0, \qquad
        \bar w_t = \frac{m_t}{1 - d^t} = \frac{\sum_{k \le t} d^{t-k} w_k}{\sum_{k \le t} d^{t-k}}

    (Adam's correction): a weighted mean of the weights seen so far, with no weight on the
    initialization, so a short run (few steps against the ``1 / (1 - d)`` horizon) grades a
    trained model, not a blend with its random start. ``state`` resumes a saved average (a
    checkpoint)."""

    def __init__(self, model, decay: float, state: dict | None = None):
        import torch
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay {decay}: the average needs 0 < decay < 1 (0 turns it off)")
        self.decay = decay
        current = model.state_dict()
        self.keys = [k for k, v in current.items() if v.is_floating_point()]
        if state is not None:
            self.moments = {k: state["moments"][k].detach().clone() for k in self.keys}
            self.steps = int(state["steps"])
        else:
            self.moments = {k: torch.zeros_like(current[k]) for k in self.keys}
            self.steps = 0
        self._update = get_ema_multi_avg_fn(decay)

    def state(self) -> dict:
        """What a checkpoint saves (:meth:`__init__`'s ``state``)."""
        return {"moments": self.moments, "steps": self.steps}

    def update(self, model) -> None:
        current = model.state_dict()
        self._update([self.moments[k] for k in self.keys], [current[k].detach() for k in self.keys], None)
        self.steps += 1

    def averaged(self) -> dict:
        """The bias-corrected average of each floating-point weight (empty before any step)."""
        if self.steps == 0:
            return {}
        scale = 1.0 - self.decay ** self.steps
        return {k: m / scale for k, m in self.moments.items()}

    @contextmanager
    def applied(self, model):
        """The averaged weights inside the block (the model in eval mode, refreshed for
        them: no dropout draw), the model's own training weights and mode restored after it.
        The operator stays the average's until the model's next :meth:`refresh` (the loop
        refreshes before every epoch)."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        was_training = model.training
        model.load_state_dict({**raw, **self.averaged()})
        model.eval()
        model.refresh()
        try:
            yield
        finally:
            model.load_state_dict(raw)
            model.train(was_training)
