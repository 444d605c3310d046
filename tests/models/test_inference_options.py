"""Inference-only model add-ons (``ledit.models.inference``): formulas against hand-worked values, the timestep
schedules, the re-dilated stem, validation, and bit-identical defaults.

Tiny models: 4x4 training grid (N_train = 16), head dim 16; 2x is an 8x8 grid (N_test = 64).
"""

import math

import pytest
import torch
from model_helpers import model_inputs

from ledit.models import InferenceOptions, rope_frequencies, temperature_softmax_scale
from ledit.models.rope import DYNAMIC_ROPE_METHODS, dynamic_rope_frequencies, rope_tables
from ledit.models.scaling import jin_softmax_scale

THETA = [1.0, 0.1, 0.01, 0.001]  # head_dim 16 -> 4 frequencies per axis, 10000^(-2j/8)
MODELS = [
    ("LEDiT", {}),
    ("LEDiT", dict(locality="conv", attention_scaling=False)),
    ("DiT", dict(pos_embed="sincos")),
    ("DiT", dict(pos_embed="learnable")),
    ("DiT", dict(pos_embed="rope", rope_method="yarn")),
    ("DiT", dict(pos_embed="none", attention_scaling=True)),
]


def _close(actual, expected, rtol=1e-6):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), rtol=rtol, atol=1e-9)


def _forward_before(model, x, t, y):
    """The models' forward as it was before the add-ons: Jin et al. on every layer iff attention_scaling, the
    static RoPE tables, the stem at the drawn dilation; computed here from the model's own modules."""
    grid = model.token_grid(*x.shape[-2:])
    c = model.t_embedder(t) + model.y_embedder(y, False)
    tokens = model.x_embedder(x)
    if getattr(model, "pos_embed", None) is not None:
        tokens = tokens + model.position_embedding(grid)
    if getattr(model, "locality", None) is not None:
        tokens = model.locality(tokens, c, grid, 1)
    rope = model.rope.tables(grid, x.device) if getattr(model, "rope", None) is not None else None
    scale = jin_softmax_scale(16, math.prod(grid), model.head_dim) if model.attention_scaling else None
    for block in model.blocks:
        tokens = block(tokens, c, grid, scale, rope, 1)
    return model.unpatchify(model.final_layer(tokens, c), grid)


@pytest.mark.parametrize("name,options", MODELS)
@pytest.mark.parametrize("size", [8, 16])
def test_default_options_are_bit_identical_to_the_plain_forward(tiny, name, options, size):
    model = tiny(name, **options).eval()
    x, t, y = model_inputs(2, size, size)
    with torch.no_grad():
        assert torch.equal(model(x, t, y), _forward_before(model, x, t, y))
        model.set_inference_options(model.inference_options)  # re-setting the defaults changes nothing
        assert torch.equal(model(x, t, y), _forward_before(model, x, t, y))


def test_attention_scaling_sets_the_default_temperatures(tiny):
    assert tiny("LEDiT").inference_options == InferenceOptions()
    plain = InferenceOptions(temperature_full="none", temperature_causal="none")
    assert tiny("LEDiT", attention_scaling=False).inference_options == plain
    assert tiny("DiT").inference_options == plain  # DiT's default attention_scaling=False


def test_set_inference_options_replaces_fields_and_validates(tiny):
    model = tiny("LEDiT")
    new = model.set_inference_options(temperature_full="fitv2-log", stem_dilation=2)
    assert new is model.inference_options
    assert (new.temperature_full, new.temperature_causal, new.stem_dilation) == ("fitv2-log", "jin", 2)
    again = model.set_inference_options(InferenceOptions(), temperature_until=0.25)
    assert again == InferenceOptions(temperature_until=0.25)
    with pytest.raises(ValueError, match=r"temperature_full='hot' .*'jin', 'fitv2-log', 'lumina', 'none'"):
        model.set_inference_options(temperature_full="hot")
    with pytest.raises(ValueError, match="temperature_until must be a fraction"):
        model.set_inference_options(temperature_until=1.5)
    with pytest.raises(ValueError, match="stem_dilation_until must be a fraction"):
        model.set_inference_options(stem_dilation_until=-0.1)
    with pytest.raises(ValueError, match="stem_dilation must be an int >= 1"):
        model.set_inference_options(stem_dilation=0)
    with pytest.raises(TypeError, match=r"unknown inference option\(s\) \['temperature'\]"):
        model.set_inference_options(temperature="jin")
    assert model.inference_options == InferenceOptions(temperature_until=0.25)  # a refused change keeps the old


@pytest.mark.parametrize("name,options", [
    ("LEDiT", {}), ("DiT", dict(pos_embed="sincos")), ("DiT", dict(pos_embed="none")),
])
def test_rope_dynamic_needs_a_rope_model(tiny, name, options):
    with pytest.raises(ValueError, match=r"rope_dynamic='dy-ntk' needs a RoPE model"):
        tiny(name, **options).set_inference_options(rope_dynamic="dy-ntk")
    assert tiny("DiT", pos_embed="rope").set_inference_options(rope_dynamic="dy-ntk").rope_dynamic == "dy-ntk"


@pytest.mark.parametrize("name,options", [
    ("DiT", {}), ("LEDiT", dict(locality="none")), ("LEDiT", dict(locality_placement="every_block")),
])
def test_stem_dilation_needs_a_stem_locality_conv(tiny, name, options):
    with pytest.raises(ValueError, match="stem_dilation=2 re-dilates LEDiT's stem locality conv"):
        tiny(name, **options).set_inference_options(stem_dilation=2)


# ---------------------------------------------------------------------------------------------------------------
# Attention temperatures


def test_temperature_rules_against_hand_worked_values():
    # N_train 16 -> N_test 64: log_16(64) = 1.5; d = 16, 1/sqrt(d) = 0.25.
    assert temperature_softmax_scale("jin", 16, 64, 16) == pytest.approx(math.sqrt(1.5 / 16))  # 0.3062
    assert temperature_softmax_scale("fitv2-log", 16, 64, 16) == pytest.approx(1.5 / 4)  # 0.375
    assert temperature_softmax_scale("none", 16, 64, 16) is None
    # N_test = N_train^2 = 256: the log-n rule doubles the logits, Jin's multiplies them by sqrt(2).
    assert temperature_softmax_scale("fitv2-log", 16, 256, 16) == pytest.approx(2 * 0.25)
    assert temperature_softmax_scale("jin", 16, 256, 16) == pytest.approx(math.sqrt(2) * 0.25)
    # At the training count every rule is the plain 1/sqrt(d).
    for rule in ("jin", "fitv2-log", "lumina"):
        assert temperature_softmax_scale(rule, 16, 16, 16) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown temperature rule 'hot'"):
        temperature_softmax_scale("hot", 16, 64, 16)


@pytest.mark.parametrize("n_train,n_test,head_dim", [(16, 64, 16), (256, 1024, 72), (256, 2304, 72), (64, 48, 64)])
def test_lumina_proportional_attention_is_jins_formula(n_train, n_test, head_dim):
    # Lumina-Next computes sqrt(log(seqlen, base_seqlen) / head_dim): exactly Jin et al.'s rule.
    lumina = temperature_softmax_scale("lumina", n_train, n_test, head_dim)
    assert lumina == jin_softmax_scale(n_train, n_test, head_dim)


def test_full_and_causal_blocks_take_their_own_temperature(tiny):
    model = tiny("LEDiT", depth=2).eval()  # "alternate": block 0 full, block 1 causal
    model.set_inference_options(temperature_full="fitv2-log", temperature_causal="none")
    t = torch.tensor([999.0])
    assert model.softmax_scale(0, (8, 8), t) == pytest.approx(0.375)
    assert model.softmax_scale(1, (8, 8), t) is None
    model.set_inference_options(temperature_full="none", temperature_causal="jin")
    assert model.softmax_scale(0, (8, 8), t) is None
    assert model.softmax_scale(1, (8, 8), t) == pytest.approx(math.sqrt(1.5 / 16))
    assert model.train().softmax_scale(1, (8, 8), t) is None  # options are ignored in training


def test_temperature_schedule_switches_at_the_given_fraction(tiny):
    model = tiny("LEDiT").eval()
    model.set_inference_options(temperature_full="fitv2-log", temperature_until=0.5)
    scale = model.softmax_scale(0, (8, 8), torch.tensor([999.0, 500.0, 499.5, 0.0]))
    # t/T >= 0.5 keeps the temperature (t = 500 included), later steps get the plain 1/sqrt(16).
    torch.testing.assert_close(scale, torch.tensor([0.375, 0.375, 0.25, 0.25]))


def test_temperature_schedule_gives_each_sample_its_own_scale_in_the_forward(tiny):
    model = tiny("LEDiT").eval()
    x, _, y = model_inputs(3, 16, 16)
    t = torch.tensor([900.0, 600.0, 100.0])
    with torch.no_grad():
        model.set_inference_options(temperature_full="fitv2-log", temperature_causal="lumina")
        always = model(x, t, y)
        model.set_inference_options(temperature_full="none", temperature_causal="none")
        never = model(x, t, y)
        model.set_inference_options(temperature_full="fitv2-log", temperature_causal="lumina", temperature_until=0.5)
        scheduled = model(x, t, y)
    torch.testing.assert_close(scheduled[:2], always[:2])
    torch.testing.assert_close(scheduled[2:], never[2:])
    assert not torch.allclose(always[2:], never[2:])  # the temperature does change the output at 2x


# ---------------------------------------------------------------------------------------------------------------
# Dynamic RoPE (head_dim 16 -> dim 8 per axis, theta_j = 10000^(-2j/8) = 1, 0.1, 0.01, 0.001)


def test_dy_ntk_against_hand_worked_values():
    # Train 4x4 -> test 8x4: s_h = 2, s_w = 1. kappa(tau) = 2 tau^2; base' = base * s^(kappa * 8/6), so
    # theta_j' = theta_j * s^(-kappa j / 3).
    # tau = 1 (pure noise): kappa = 2, s^kappa = 4 -> theta_j * 4^(-j/3).
    freqs_h, freqs_w, mscale = dynamic_rope_frequencies(16, (4, 4), (8, 4), "dy-ntk", 1.0)
    _close(freqs_h, [1.0, 0.1 * 4 ** (-1 / 3), 0.01 * 4 ** (-2 / 3), 0.001 / 4])
    _close(freqs_w, THETA)
    assert mscale == 1.0
    # tau = 0.5: kappa = 0.5, s^kappa = sqrt(2) -> theta_j * 2^(-j/6).
    freqs_h, _, _ = dynamic_rope_frequencies(16, (4, 4), (8, 4), "dy-ntk", 0.5)
    _close(freqs_h, [1.0, 0.1 * 2 ** (-1 / 6), 0.01 * 2 ** (-1 / 3), 0.001 * 2 ** (-1 / 2)])
    # tau = 0: kappa = 0, plain RoPE.
    _close(dynamic_rope_frequencies(16, (4, 4), (8, 4), "dy-ntk", 0.0)[0], THETA)


def test_dy_ntk_at_kappa_one_is_static_ntk():
    tau = 1 / math.sqrt(2)  # kappa = 2 * 0.5 = 1
    dynamic = dynamic_rope_frequencies(16, (4, 4), (12, 8), "dy-ntk", tau)
    static = rope_frequencies(16, (4, 4), (12, 8), "ntk")
    torch.testing.assert_close(dynamic[0], static[0]), torch.testing.assert_close(dynamic[1], static[1])


def test_dy_yarn_against_hand_worked_values():
    # L_train = 4096 tokens on the row axis, s = 2. YaRN's correction dim of r rotations:
    # 4 ln(4096 / (2 pi r)) / ln(1e4): r = 32 -> 1.31, r = 1 -> 2.81, r = 1024 -> -0.20.
    # freqs = theta_j (1 - ramp_j) + theta_j / s * ramp_j, ramp_j = clamp((j - low) / (high - low), 0, 1).
    train, test = (4096, 4096), (8192, 4096)
    # tau = 1/sqrt(2): kappa = 1, static YaRN: low 1, high 3 -> ramp [0, 0, .5, 1]; mscale 1 + 0.1 ln 2 * 0.5.
    freqs_h, freqs_w, mscale = dynamic_rope_frequencies(16, train, test, "dy-yarn", 1 / math.sqrt(2))
    _close(freqs_h, [1.0, 0.1, 0.01 * 0.75, 0.001 / 2])
    _close(freqs_w, THETA)
    assert mscale == pytest.approx(1 + 0.1 * math.log(2) * 0.5)
    # tau = 1: kappa = 2, beta_fast = 32^2 = 1024 -> low 0, high 3 -> ramp j/3; full temperature 1 + 0.1 ln 2.
    freqs_h, _, mscale = dynamic_rope_frequencies(16, train, test, "dy-yarn", 1.0)
    _close(freqs_h, [1.0, 0.1 * (1 - 1 / 6), 0.01 * (1 - 1 / 3), 0.001 / 2])
    assert mscale == pytest.approx(1 + 0.1 * math.log(2))
    # tau = 0: kappa = 0, both thresholds 1 -> low 2, high 3: a sharp split at the training-length period.
    freqs_h, _, mscale = dynamic_rope_frequencies(16, train, test, "dy-yarn", 0.0)
    _close(freqs_h, [1.0, 0.1, 0.01, 0.001 / 2])
    assert mscale == 1.0


def test_lumina_time_aware_rope_against_hand_worked_values():
    # D = 16, s = 2: theta_j' = max(theta_j / 2, theta_j * 2^(-(D / (tau' D + 1)) * j / 4)), tau' = 1 - t/T.
    # Pure noise (tau' = 0): exponent 16 -> theta_j * 2^(-4j), below PI except j = 0: position interpolation.
    _close(dynamic_rope_frequencies(16, (4, 4), (8, 4), "lumina", 1.0)[0], [1.0, 0.05, 0.005, 0.0005])
    # Halfway (tau' = 0.5): exponent 16/9 -> 2^(-4j/9) = 0.735, 0.540, 0.397: NTK-like for j = 1, 2, PI for j = 3.
    _close(dynamic_rope_frequencies(16, (4, 4), (8, 4), "lumina", 0.5)[0],
           [1.0, 0.1 * 2 ** (-4 / 9), 0.01 * 2 ** (-8 / 9), 0.0005])
    # Clean (tau' = 1): exponent 16/17 -> theta_j * 2^(-4j/17), NTK-like everywhere (above theta_j / 2).
    _close(dynamic_rope_frequencies(16, (4, 4), (8, 4), "lumina", 0.0)[0],
           [1.0, 0.1 * 2 ** (-4 / 17), 0.01 * 2 ** (-8 / 17), 0.001 * 2 ** (-12 / 17)])


@pytest.mark.parametrize("method", DYNAMIC_ROPE_METHODS)
def test_dynamic_rope_is_plain_rope_at_the_training_grid(method):
    for tau in (0.0, 0.3, 1.0):
        freqs_h, freqs_w, mscale = dynamic_rope_frequencies(16, (4, 4), (4, 3), method, tau)
        _close(freqs_h, THETA), _close(freqs_w, THETA)
        assert mscale == 1.0


def test_dynamic_rope_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown dynamic RoPE method 'ntk'"):
        dynamic_rope_frequencies(16, (4, 4), (8, 8), "ntk", 0.5)
    with pytest.raises(ValueError, match=r"tau = t/T must be in \[0, 1\]"):
        dynamic_rope_frequencies(16, (4, 4), (8, 8), "dy-ntk", 1.5)


@pytest.mark.parametrize("method", DYNAMIC_ROPE_METHODS)
def test_rope_model_uses_the_timestep_tables(tiny, method):
    model = tiny("DiT", pos_embed="rope", rope_method="ntk").eval()
    model.set_inference_options(rope_dynamic=method)

    def expected(step):
        return rope_tables((8, 8), *dynamic_rope_frequencies(16, (4, 4), (8, 8), method, step / 1000))

    cos, sin = model.rope_tables((8, 8), torch.tensor([900.0, 900.0]))  # one t (e.g. doubled for CFG): (N, D)
    torch.testing.assert_close((cos, sin), expected(900.0))
    cos, sin = model.rope_tables((8, 8), torch.tensor([900.0, 100.0, 900.0]))  # mixed: (B, N, D)
    assert cos.shape == (3, 64, 16)
    for row, step in enumerate((900.0, 100.0, 900.0)):
        torch.testing.assert_close((cos[row], sin[row]), expected(step))
    assert not model.rope._cache  # per-step tables are not cached
    static = model.train().rope_tables((8, 8), torch.tensor([900.0]))  # training ignores the option
    assert static is model.rope.tables((8, 8), torch.device("cpu"))


def test_rope_model_forward_with_mixed_timesteps_matches_per_sample_runs(tiny):
    model = tiny("DiT", pos_embed="rope").eval()
    model.set_inference_options(rope_dynamic="dy-yarn")
    x, _, y = model_inputs(2, 16, 12)
    t = torch.tensor([950.0, 50.0])
    with torch.no_grad():
        both = model(x, t, y)
        for row in range(2):
            torch.testing.assert_close(both[row:row + 1], model(x[row:row + 1], t[row:row + 1], y[row:row + 1]))
        model.set_inference_options(rope_dynamic="none")
        assert not torch.allclose(both, model(x, t, y))


# ---------------------------------------------------------------------------------------------------------------
# Re-dilated LEDiT stem


def _record_stem_calls(model):
    calls = []
    model.locality.register_forward_hook(lambda module, args, out: calls.append((len(args[0]), args[3])))
    return calls


@pytest.mark.parametrize("locality", ["dwconv", "conv"])
def test_stem_dilation_runs_early_steps_dilated_then_switches_back(tiny, locality):
    model = tiny("LEDiT", locality=locality, multi_dilation_prob=0.0).eval()
    model.set_inference_options(stem_dilation=2, stem_dilation_until=0.5)
    calls = _record_stem_calls(model)
    x, _, y = model_inputs(2, 16, 16)  # 8x8 grid: 2x the 4x4 training grid on both axes
    with torch.no_grad():
        for step, dilation in ((999.0, 2), (500.0, 2), (499.0, 1), (0.0, 1)):
            calls.clear()
            model(x, torch.full((2,), step), y)
            assert calls == [(2, dilation)], step
        # The dilated stem is the locality module called directly at dilation 2.
        t = torch.full((2,), 999.0)
        c = model.t_embedder(t) + model.y_embedder(y, False)
        direct = model.locality(model.x_embedder(x), c, (8, 8), 2)
        assert torch.equal(model.embed_tokens(x, c, (8, 8), 1, t), direct)


def test_stem_dilation_needs_every_axis_at_least_that_much_longer(tiny):
    model = tiny("LEDiT", multi_dilation_prob=0.0).eval()
    model.set_inference_options(stem_dilation=2)
    calls = _record_stem_calls(model)
    with torch.no_grad():
        for (height, width), dilation in (((16, 16), 2), ((16, 12), 1), ((8, 32), 1), ((24, 16), 2)):
            calls.clear()
            x, _, y = model_inputs(1, height, width)
            model(x, torch.tensor([999.0]), y)
            assert calls == [(1, dilation)], (height, width)
        calls.clear()
        model.train()(*model_inputs(1, 16, 16))  # training: the drawn dilation (1 with probability 0)
        assert calls == [(1, 1)]


def test_stem_dilation_splits_a_batch_that_straddles_the_switch(tiny):
    model = tiny("LEDiT", multi_dilation_prob=0.0).eval()
    model.set_inference_options(stem_dilation=2, stem_dilation_until=0.5)
    calls = _record_stem_calls(model)
    x, _, y = model_inputs(3, 16, 16)
    t = torch.tensor([800.0, 200.0, 900.0])
    with torch.no_grad():
        mixed = model(x, t, y)
        assert sorted(calls) == [(1, 1), (2, 2)]
        for row in range(3):
            torch.testing.assert_close(mixed[row:row + 1], model(x[row:row + 1], t[row:row + 1], y[row:row + 1]))


@pytest.mark.parametrize("name,options,fields", [
    ("LEDiT", {}, dict(stem_dilation=2, temperature_until=0.3, temperature_causal="fitv2-log")),
    ("DiT", dict(pos_embed="rope"), dict(rope_dynamic="lumina", temperature_full="jin")),
])
def test_add_ons_run_under_classifier_free_guidance(tiny, name, options, fields):
    model = tiny(name, **options).eval()
    model.set_inference_options(**fields)
    x, _, _ = model_inputs(4, 16, 16)
    t = torch.full((4,), 700.0)
    out = model.forward_with_cfg(x, t, torch.tensor([1, 2, 10, 10]), cfg_scale=4.0)
    assert out.shape == (4, 8, 16, 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out[:2, :3], out[2:, :3])


def test_dynamic_rope_without_decouple_uses_the_longer_sides_scale():
    # Train 4x4 -> test 8x4 with decouple=False: both axes take s = 2 (the longer side); Dy-NTK at tau = 1.
    freqs_h, freqs_w, _ = dynamic_rope_frequencies(16, (4, 4), (8, 4), "dy-ntk", 1.0, decouple=False)
    expected = [1.0, 0.1 * 4 ** (-1 / 3), 0.01 * 4 ** (-2 / 3), 0.001 / 4]
    _close(freqs_h, expected), _close(freqs_w, expected)
