"""Packed batches: images of different sizes in one forward equal each image's own forward (values and gradients)."""

import pytest
import torch
from model_helpers import TINY, randomize_

import ledit.models.packing as packing
from ledit.models import build_model
from ledit.models.packing import pack, unpack

# Every family that can express per-image positions (learnable PE cannot; it refuses, tested below).
PACKABLE = [
    ("LEDiT", dict()),
    ("LEDiT", dict(locality="conv")),
    ("LEDiT", dict(locality="none")),
    ("LEDiT", dict(locality_placement="every_block")),
    ("LEDiT", dict(conv_post_norm=True, locality="conv")),
    ("LEDiT", dict(attention_schedule="all", scan="raster")),
    ("LEDiT", dict(attention_scaling=True)),
    ("DiT", dict(pos_embed="sincos")),
    ("DiT", dict(pos_embed="sincos", sincos_mode="interpolate")),
    ("DiT", dict(pos_embed="none")),
    ("DiT", dict(pos_embed="rope", rope_method="yarn")),
    ("DiT", dict(pos_embed="rope", rope_method="ntk", rope_decouple=False)),
]
# Latent sizes (patch 2, training grid 4x4): a 1x1 grid, odd non-square grids, the training grid, a larger one.
SIZES = [(2, 2), (6, 10), (34, 18), (8, 8), (16, 12)]


def _id(family):
    name, options = family
    return name + "-" + "-".join(f"{k}={v}" for k, v in options.items())


def _inputs(seed=0, sizes=SIZES):
    generator = torch.Generator().manual_seed(seed)
    latents = [torch.randn(4, h, w, generator=generator) for h, w in sizes]
    t = torch.randint(0, 1000, (len(sizes),), generator=generator).float()
    y = torch.randint(0, 10, (len(sizes),), generator=generator)
    return latents, t, y


def _model(name, **options):
    torch.manual_seed(0)
    return randomize_(build_model(name, **{**TINY, **options})).eval()


def _assert_close(got, want):
    # Packed and per-image runs differ only in how matmuls block their rows: fp32 rounding, nothing more.
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", PACKABLE, ids=[_id(f) for f in PACKABLE])
def test_packed_equals_each_image_alone_with_gradients(family):
    name, options = family
    model = _model(name, **options)
    latents, t, y = _inputs()

    packed_in = [x.clone().requires_grad_(True) for x in latents]
    outputs = model(packed_in, t, y)
    assert [o.shape for o in outputs] == [(8, *x.shape[1:]) for x in latents]
    sum(o.square().mean() for o in outputs).backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    alone_in = [x.clone().requires_grad_(True) for x in latents]
    for i, x in enumerate(alone_in):
        out = model(x[None], t[i : i + 1], y[i : i + 1])[0]
        _assert_close(outputs[i], out)
        out.square().mean().backward()
    for got, want in zip(packed_in, alone_in):
        _assert_close(got.grad, want.grad)
    assert packed_grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for param_name, param in model.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(packed_grads[param_name], param.grad, rtol=1e-4, atol=1e-5,
                                       msg=lambda m, n=param_name: f"{n}: {m}")


def test_packed_tensor_form_answers_in_kind():
    model = _model("LEDiT")
    latents, t, y = _inputs()
    packed, grids = pack(latents, model.patch_size)
    assert packed.shape == (sum(h * w for h, w in SIZES) // 4, 4, 2, 2)
    assert grids.tolist() == [[h // 2, w // 2] for h, w in SIZES]
    out = model(packed, t, y, grids=grids)
    assert out.shape == (packed.shape[0], 8, 2, 2)
    for got, want in zip(unpack(out, grids), model(latents, t, y)):
        assert torch.equal(got, want)
    for latent, back in zip(latents, unpack(packed, grids)):
        assert torch.equal(latent, back)


def test_per_image_inference_options():
    """Temperature from each image's own token count; the stem re-dilated only for images large enough (2x the
    training grid on both axes) while early enough; dynamic RoPE from each image's own timestep."""
    ledit = _model("LEDiT", attention_scaling=True)
    ledit.set_inference_options(stem_dilation=2, temperature_until=0.3)
    rope = _model("DiT", pos_embed="rope", rope_method="yarn")
    rope.set_inference_options(rope_dynamic="dy-yarn")
    latents, t, y = _inputs(sizes=[(16, 16), (16, 16), (6, 10), (20, 18)])
    t = torch.tensor([999.0, 100.0, 999.0, 700.0])
    for model in (ledit, rope):
        with torch.no_grad():
            outputs = model(latents, t, y)
            for i, x in enumerate(latents):
                _assert_close(outputs[i], model(x[None], t[i : i + 1], y[i : i + 1])[0])


def test_forward_with_cfg_packed_equals_each_image_alone():
    model = _model("LEDiT")
    latents, t, y = _inputs(sizes=[(6, 10), (8, 8)])
    y_all = torch.cat([y, torch.full_like(y, 10)])
    scales = torch.tensor([4.0, 1.5])
    with torch.no_grad():
        outputs = model.forward_with_cfg(latents + latents, t.repeat(2), y_all, scales, cfg_channels="all")
        for i, x in enumerate(latents):
            alone = model.forward_with_cfg(torch.stack([x, x]), t[[i, i]], y_all[[i, i + 2]], float(scales[i]),
                                           cfg_channels="all")
            _assert_close(outputs[i], alone[0])
            _assert_close(outputs[i + 2], alone[1])


def test_default_ledit_packed_forward_reads_no_grid_values(monkeypatch):
    """LEDiT's default path (dwconv stem, no RoPE, no temperature in training) needs no per-image host values:
    the grids go to the ops as data, so a GPU run never waits for them."""
    model = _model("LEDiT").train()
    latents, t, y = _inputs()
    packed, grids = pack(latents, model.patch_size)

    def refuse(*_):
        raise AssertionError("the packed forward read the grids on the host")

    monkeypatch.setattr(packing, "host_grids", refuse)
    assert torch.isfinite(model(packed, t, y, grids=grids)).all()


def test_learnable_position_table_refuses_with_the_fix():
    model = _model("DiT", pos_embed="learnable")
    latents, t, y = _inputs()
    with pytest.raises(ValueError, match="learnable position table.*use pos_embed='sincos' or 'rope'.*or LEDiT"):
        model(latents, t, y)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x, t, y: m([], t[:0], y[:0]), "x is an empty list"),
        (lambda m, x, t, y: m([x[0], x[1][:, :5]], t[:2], y[:2]), r"x\[1\]'s height x width = 5 x 10"),
        (lambda m, x, t, y: m([x[0], x[1][None]], t[:2], y[:2]), r"x\[1\] must be a \(C, H, W\) latent"),
        (lambda m, x, t, y: m([x[0], x[1].double()], t[:2], y[:2]), "share a dtype and a device"),
        (lambda m, x, t, y: m(x[:2], t[:3], y[:3]), r"t must be a tensor of shape \(n_images,\) = \(2,\)"),
        (lambda m, x, t, y: m(x[:2], t[:2], y[:2], grids=torch.ones(2, 2, dtype=torch.int32)), "pass grids=None"),
        (lambda m, x, t, y: m(pack(x[:2], 2)[0], t[:2], y[:2], grids=torch.tensor([[1, 1], [3, 4]])),
         "grids hold 13 tokens"),
        (lambda m, x, t, y: m(pack(x[:2], 2)[0], t[:2], y[:2], grids=torch.tensor([[1, 1.0]])), "grids.dtype"),
        (lambda m, x, t, y: m(torch.randn(16, 4, 4, 4), t[:1], y[:1], grids=torch.tensor([[4, 4]])),
         r"the \(T, C, 2, 2\) patches"),
        (lambda m, x, t, y: m.forward_with_cfg(x[:3], t[:3], y[:3], 4.0), "even packed batch of images"),
        (lambda m, x, t, y: m.forward_with_cfg(x[:2], t[:2], y[:2], 4.0), "second half of images must repeat"),
    ],
)
def test_packed_input_errors_name_the_argument(call, message):
    model = _model("LEDiT")
    latents, t, y = _inputs()
    with pytest.raises((ValueError, TypeError), match=message):
        call(model, latents, t, y)
