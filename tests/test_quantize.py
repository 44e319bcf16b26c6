"""int8 embedding tables (core/quantize.py): round trip, memory, scores."""

import torch

from recsys_dagster.core.quantize import int8_scores, quantize_rows


def test_round_trip_error_is_within_half_a_step_per_row():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 64, generator=g) * torch.rand(500, 1, generator=g) * 3
    x[7] = 0.0  # a zero row stays zero (no division by a zero scale)
    t = quantize_rows(x)
    assert t.q.dtype == torch.int8 and t.shape == (500, 64)
    err = (t.dequantize() - x).abs()
    assert torch.all(err <= t.scale.unsqueeze(1) / 2 + 1e-7)
    assert torch.equal(t.dequantize()[7], torch.zeros(64))
    assert t.nbytes() == 500 * 64 + 500 * 4 and t.nbytes() * 3.5 < x.numel() * 4


def test_int8_scores_match_fp32_scores_and_top_items():
    g = torch.Generator().manual_seed(1)
    users, items = torch.randn(50, 32, generator=g), torch.randn(3000, 32, generator=g)
    exact = users @ items.T
    approx = int8_scores(quantize_rows(users), quantize_rows(items), torch.arange(50), block=700)
    assert approx.shape == exact.shape
    assert (approx - exact).abs().max() < 0.05 * exact.abs().max()
    top_exact, top_approx = exact.topk(10).indices, approx.topk(10).indices
    overlap = [len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(top_exact, top_approx, strict=True)]
    assert sum(overlap) / len(overlap) > 0.9


def test_int8_text_encoder_is_close_to_fp32_and_cached_apart():
    import numpy as np

    from recsys_dagster.core.text import EncoderConfig, TextEncoder

    texts = ["A space opera about a lost starship", "Romantic comedy in Paris", "Documentary on deep-sea fish",
             "Thriller: a detective hunts a killer", "Animated family film with talking animals"]
    fp32 = TextEncoder(EncoderConfig(device="cpu"))
    int8 = TextEncoder(EncoderConfig(device="cpu", quantize="int8"))
    a, b = fp32.encode(texts), int8.encode(texts)
    assert b.shape == a.shape and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-4)
    cos = (a * b).sum(axis=1)
    assert cos.mean() >= 0.98 and cos.min() >= 0.97
    assert int8.model_id == fp32.model_id + "|int8"  # never mixed with fp32 vectors in the cache
    quantized = [m for m in int8.model.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")]
    plain = [m for m in int8.model.modules() if type(m) is torch.nn.Linear]
    assert len(quantized) == 5 * 5 + 1 and len(plain) == 6 + 5  # blocks 1-5 less their FFN outs, + the pooler


def test_fused_scorer_with_int8_tables_scores_like_fp32_in_a_quarter_of_the_memory():
    from recsys_dagster.core.fusion import FusedScorer, FusionWeights

    g = torch.Generator().manual_seed(2)
    args = (torch.randn(40, 16, generator=g), torch.randn(300, 16, generator=g),
            torch.nn.functional.normalize(torch.randn(40, 32, generator=g), dim=1),
            torch.nn.functional.normalize(torch.randn(300, 32, generator=g), dim=1),
            torch.randint(1, 30, (40,), generator=g), torch.randint(1, 50, (300,), generator=g))
    weights = FusionWeights(1.0, 0.5, 5)
    fp32, int8 = FusedScorer(*args, weights), FusedScorer(*args, weights, precision="int8")
    users = torch.arange(40)
    a, b = fp32(users), int8(users)
    assert a.shape == b.shape and (a - b).abs().max() < 0.05 * a.abs().max()
    assert int8.table_bytes() < 0.3 * fp32.table_bytes()
