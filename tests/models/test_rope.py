"""2D RoPE frequencies against values worked out by hand from the formulas in ledit/models/rope.py, and the
rotation itself.

head_dim 16 -> 8 channels per axis -> 4 frequencies theta = 10000^(-2j/8) = 1, 0.1, 0.01, 0.001.
"""

import math

import pytest
import torch
from model_helpers import model_inputs

from ledit.models.rope import apply_rope, rope_frequencies, rope_tables

THETA = [1.0, 0.1, 0.01, 0.001]


def _close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), rtol=1e-6, atol=1e-9)


def test_training_grid_and_plain_extrapolation_keep_the_base_frequencies():
    for method in ("none", "pi", "ntk", "yarn", "riflex"):
        freqs_h, freqs_w, mscale = rope_frequencies(16, (4, 4), (4, 4), method)
        _close(freqs_h, THETA), _close(freqs_w, THETA)
        assert mscale == 1.0
    freqs_h, _, mscale = rope_frequencies(16, (4, 4), (8, 8), "none")
    _close(freqs_h, THETA)
    assert mscale == 1.0


def test_pi_divides_by_the_per_axis_scale():
    # train 4x4 -> test 8x6: s_h = 2, s_w = 1.5 (decouple); a smaller axis never scales below 1.
    freqs_h, freqs_w, _ = rope_frequencies(16, (4, 4), (8, 6), "pi")
    _close(freqs_h, [f / 2 for f in THETA])
    _close(freqs_w, [f / 1.5 for f in THETA])
    _, freqs_w, _ = rope_frequencies(16, (4, 4), (8, 2), "pi")
    _close(freqs_w, THETA)


def test_without_decouple_both_axes_use_the_longer_sides_scale():
    freqs_h, freqs_w, _ = rope_frequencies(16, (4, 4), (8, 6), "pi", decouple=False)
    _close(freqs_h, [f / 2 for f in THETA])
    _close(freqs_w, [f / 2 for f in THETA])


def test_ntk_changes_the_base():
    # base' = base * s^(8/6), so theta_j' = base'^(-2j/8) = theta_j * s^(-j/3).
    freqs_h, freqs_w, _ = rope_frequencies(16, (4, 4), (8, 4), "ntk")
    _close(freqs_h, [1.0, 0.1 * 2 ** (-1 / 3), 0.01 * 2 ** (-2 / 3), 0.001 / 2])
    _close(freqs_w, THETA)


def test_yarn_ramp_and_temperature():
    # L_train = 256: correction dims 4 ln(256 / (2 pi r)) / ln(1e4) = 0.105 (r = 32) and 1.61 (r = 1) ->
    # low 0, high 2, ramp = j / 2 = [0, .5, 1, 1]; theta_j * (1 - ramp) + theta_j / s * ramp with s = 2.
    freqs_h, freqs_w, mscale = rope_frequencies(16, (256, 256), (512, 256), "yarn")
    _close(freqs_h, [1.0, 0.1 * 0.75, 0.01 / 2, 0.001 / 2])
    _close(freqs_w, THETA)
    assert mscale == pytest.approx(0.1 * math.log(2) + 1)
    # L_train = 4: both correction dims round to 0, so every frequency but the first is interpolated.
    freqs_h, _, _ = rope_frequencies(16, (4, 4), (8, 4), "yarn")
    _close(freqs_h, [1.0, 0.05, 0.005, 0.0005])


def test_riflex_lowers_only_the_intrinsic_frequency():
    # Periods 2 pi / theta = 6.28, 62.8, 628, 6283: for L_train = 64 the intrinsic component is j = 1,
    # lowered to 0.9 * 2 pi / L_test.
    freqs_h, freqs_w, mscale = rope_frequencies(16, (64, 64), (128, 64), "riflex")
    _close(freqs_h, [1.0, 0.9 * 2 * math.pi / 128, 0.01, 0.001])
    _close(freqs_w, THETA)
    assert mscale == 1.0
    freqs_h, _, _ = rope_frequencies(16, (4, 4), (8, 4), "riflex")
    _close(freqs_h, [0.9 * 2 * math.pi / 8, 0.1, 0.01, 0.001])


def test_rope_frequencies_rejects_bad_arguments():
    with pytest.raises(ValueError, match="valid methods: none, pi, ntk, yarn, riflex"):
        rope_frequencies(16, (4, 4), (8, 8), "linear")
    with pytest.raises(ValueError, match="multiple of 4"):
        rope_frequencies(18, (4, 4), (8, 8), "pi")


def test_rotation_scores_depend_only_on_the_offset():
    """With the same q and k vector at every token, q_i . k_j after RoPE depends only on (row, col) offsets."""
    freqs_h, freqs_w, _ = rope_frequencies(16, (3, 4), (3, 4), "none")
    cos, sin = rope_tables((3, 4), freqs_h, freqs_w)
    q = torch.randn(16).expand(1, 12, 1, 16)
    k = torch.randn(16).expand(1, 12, 1, 16)
    rq, rk = apply_rope(q, cos, sin)[0, :, 0], apply_rope(k, cos, sin)[0, :, 0]
    scores = rq @ rk.T
    torch.testing.assert_close(rq.norm(dim=-1), q[0, :, 0].norm(dim=-1))  # rotations keep the norm
    token = lambda r, c: r * 4 + c  # noqa: E731
    torch.testing.assert_close(scores[token(1, 2), token(0, 1)], scores[token(2, 3), token(1, 2)])
    torch.testing.assert_close(scores[token(0, 0), token(2, 1)], scores[token(0, 2), token(2, 3)])
    assert not torch.allclose(scores[token(0, 0), token(2, 1)], scores[token(0, 0), token(1, 2)])


def test_yarn_mscale_multiplies_the_tables():
    freqs_h, freqs_w, mscale = rope_frequencies(16, (4, 4), (8, 8), "yarn")
    cos, sin = rope_tables((8, 8), freqs_h, freqs_w, mscale)
    torch.testing.assert_close(cos[0], torch.full((16,), mscale))  # token (0, 0): angle 0
    torch.testing.assert_close((cos ** 2 + sin ** 2), torch.full_like(cos, mscale ** 2))


def test_rope_dit_extrapolates_only_beyond_the_training_grid(tiny):
    plain = tiny("DiT", pos_embed="rope").eval()
    at_train, at_double = model_inputs(2, 8, 8), model_inputs(2, 16, 12)
    for method in ("pi", "ntk", "yarn", "riflex"):
        model = tiny("DiT", pos_embed="rope", rope_method=method, randomized=False).eval()
        model.load_state_dict(plain.state_dict())
        torch.testing.assert_close(model(*at_train), plain(*at_train))
        assert not torch.allclose(model(*at_double), plain(*at_double), atol=1e-4), method
        cos, _ = model.rope_tables((8, 6), None)
        freqs_h, freqs_w, mscale = rope_frequencies(16, (4, 4), (8, 6), method)
        torch.testing.assert_close(cos, rope_tables((8, 6), freqs_h, freqs_w, mscale)[0])


def test_per_sample_tables_rotate_each_sample_by_its_own_table():
    x = torch.randn(2, 6, 3, 8)
    tables = [rope_tables((2, 3), *rope_frequencies(8, (2, 3), (2, 3), "none")),
              rope_tables((2, 3), *rope_frequencies(8, (1, 1), (2, 3), "pi"))]
    cos, sin = (torch.stack([t[i] for t in tables]) for i in (0, 1))
    out = apply_rope(x, cos, sin)
    for sample, (cos_i, sin_i) in enumerate(tables):
        torch.testing.assert_close(out[sample], apply_rope(x[sample:sample + 1], cos_i, sin_i)[0])
    assert not torch.allclose(apply_rope(x, *tables[0]), apply_rope(x, *tables[1]))
