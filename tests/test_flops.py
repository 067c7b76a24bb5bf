"""FLOPs in the FastV convention reproduce the paper's Table 5 (METHODS.md section 8)."""

import pytest
from paper_reference import table5

from harness.flops import (
    decode_flops,
    layer_flops,
    paper_total,
    prefill_flops,
    pruned_tokens_per_layer,
)

L, D, M_FFN, N_V = 28, 3584, 18944, 6272  # LLaVA-OV-7B (Qwen2.5-7B), 32 frames x 196 tokens
FASTV_K = 3


def _tflops(retention_pct: int, k: int) -> float:
    kept = round(retention_pct / 100 * N_V)
    return paper_total(L, D, M_FFN, N_V, kept, k=k) / 1e12


# (method, retention %, pruning layer K): the rows of the paper's Table 5 (read by
# tests/paper_reference.py) the convention must reproduce.
CASES = [
    ("none", 100, 0),  # the full model
    ("fastv", 50, FASTV_K),
    ("fastv", 35, FASTV_K),
    ("pllava", 10, 0),  # any pre-LLM method at exactly 10% (VisionZip's row is the same)
    ("visionzip", 10, 0),
]


@pytest.mark.parametrize(("method", "pct", "k"), CASES)
def test_paper_table5_tflops_within_rounding(method, pct, k):
    paper = table5()[(method, pct, "FLOPs_TFLOPs")]
    assert round(_tflops(pct, k), 1) == pytest.approx(paper, abs=1e-9)


@pytest.mark.parametrize(("method", "pct", "k"), CASES[1:])
def test_paper_table5_ratio_is_taken_from_rounded_tflops(method, pct, k):
    table = table5()
    paper_ratio = table[(method, pct, "FLOPs_ratio_pct")]
    full = round(_tflops(100, 0), 1)
    assert 100 * round(_tflops(pct, k), 1) / full == pytest.approx(paper_ratio, abs=0.05)


def test_n_counts_visual_tokens_only():
    # 50 prompt tokens on top of the visual ones would already miss the paper's 41.4.
    with_text = paper_total(L, D, M_FFN, N_V + 50) / 1e12
    assert round(with_text, 1) != 41.4
    assert round(paper_total(L, D, M_FFN, N_V) / 1e12, 1) == 41.4


def test_layer_and_prefill_formulas():
    assert layer_flops(1, 1, 1) == 4 + 2 + 2
    assert layer_flops(10, 4, 6) == 4 * 10 * 16 + 2 * 100 * 4 + 2 * 10 * 4 * 6
    per_layer = pruned_tokens_per_layer(5, 100, 30, k=2)
    assert per_layer == [100, 100, 30, 30, 30]
    assert prefill_flops(per_layer, 8, 16) == 2 * layer_flops(100, 8, 16) + 3 * layer_flops(
        30, 8, 16
    )
    with pytest.raises(ValueError, match="pruning layer"):
        pruned_tokens_per_layer(5, 100, 30, k=6)


def test_decode_formula_matches_the_paper_expression():
    layers, d, m, n_prime, r = 3, 8, 20, 50, 7
    expected = layers * r * ((4 * d * d + 2 * d * m) + 2 * (d * n_prime + d * (r + 1) / 2))
    assert decode_flops(layers, d, m, n_prime, generated=r) == expected
    assert isinstance(decode_flops(layers, d, m, n_prime, generated=r), int)


def test_full_model_total_is_prefill_plus_decode():
    total = paper_total(L, D, M_FFN, N_V)
    assert total == L * layer_flops(N_V, D, M_FFN) + decode_flops(L, D, M_FFN, N_V)
