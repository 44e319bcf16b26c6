"""Lightweight scoring: int8 embedding tables with per-row scales.

A table ``x`` (rows = users or items) is stored as ``q = round(x / s)`` in int8 with one
float32 scale per row, ``s = max|x_row| / 127`` (symmetric, so a zero row stays zero): a
quarter of the fp32 memory plus 4 bytes per row. Scores are computed from the int8 rows in
blocks (each block dequantized on the fly), so the fp32 table never exists in memory.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Int8Rows:
    q: object  # torch.int8 (n, d)
    scale: object  # torch.float32 (n,)

    @property
    def shape(self):
        return tuple(self.q.shape)

    @property
    def device(self):
        return self.q.device

    def float(self):
        """The dequantized float32 table (as ``Tensor.float()``: callers need not care)."""
        return self.dequantize()

    def nbytes(self) -> int:
        return int(self.q.numel() * self.q.element_size() + self.scale.numel() * self.scale.element_size())

    def __getitem__(self, rows):
        """Rows, dequantized to float32."""
        return self.q[rows].float() * self.scale[rows].unsqueeze(-1)

    def dequantize(self):
        return self[slice(None)]

    def to(self, device) -> Int8Rows:
        return Int8Rows(self.q.to(device), self.scale.to(device))


def quantize_rows(x) -> Int8Rows:
    """Symmetric per-row int8 quantization of a float matrix."""
    import torch

    x = x.detach().float()
    scale = x.abs().amax(dim=1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(x / safe.unsqueeze(1)), -127, 127).to(torch.int8)
    return Int8Rows(q, scale)


def int8_scores(users: Int8Rows, items: Int8Rows, user_rows, block: int = 65536):
    """``users[user_rows] @ items.T`` from int8 tables (items dequantized ``block`` rows at a time)."""
    import torch

    u = users[user_rows]
    out = torch.empty(u.shape[0], items.shape[0], dtype=torch.float32, device=u.device)
    for start in range(0, items.shape[0], block):
        out[:, start:start + block] = u @ items[slice(start, start + block)].T
    return out
