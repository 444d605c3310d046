"""The add-on flags through `ledit sample` and `ledit sample-ddp` on a tiny checkpoint."""

import numpy as np
import pytest
from PIL import Image

from ledit.cli import run as ledit

PIXELS = ["--vae", "none", "--image-size", "8", "--num-sampling-steps", "3", "--device", "cpu",
          "--class-labels", "1", "2"]


def _sample(ckpt, out, *extra):
    ledit(["sample", "--ckpt", str(ckpt), *PIXELS, "--height", "16", "--width", "16", "--output", str(out), *extra])
    return np.asarray(Image.open(out))


def test_sample_with_every_kind_of_addon(pixel_ckpt, tmp_path):
    plain = _sample(pixel_ckpt, tmp_path / "plain.png")
    flags = ["--cfg-scale-per-doubling", "0.5", "--guidance-interval", "0.2,0.8", "--timestep-shift", "auto",
             "--lowres-renoise", "0.6", "--temperature-full", "fitv2-log", "--temperature-causal", "none",
             "--temperature-until", "0.5", "--stem-dilation", "2", "--stem-dilation-until", "0.4"]
    with_addons = _sample(pixel_ckpt, tmp_path / "addons.png", *flags)
    assert with_addons.shape == plain.shape and not np.array_equal(with_addons, plain)
    np.testing.assert_array_equal(_sample(pixel_ckpt, tmp_path / "again.png", *flags), with_addons)


@pytest.mark.parametrize("flags,message", [
    (["--rope-dynamic", "dy-ntk"], "--rope-dynamic dy-ntk: rope_dynamic='dy-ntk' needs a RoPE model"),
    (["--temperature-until", "2"], "--temperature-until 2.0: temperature_until must be a fraction"),
    (["--lowres-renoise", "0"], r"--lowres-renoise must lie in \(0, 1\)"),
    (["--guidance-interval", "a,b"], "--guidance-interval 'a,b': write LO,HI"),
])
def test_sample_rejects_bad_addon_flags_naming_them(pixel_ckpt, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        _sample(pixel_ckpt, tmp_path / "x.png", *flags)
    assert not (tmp_path / "x.png").exists()


def test_sample_ddp_names_the_npz_after_the_addons(pixel_ckpt, tmp_path):
    ledit(["sample-ddp", "--ckpt", str(pixel_ckpt), *PIXELS[:-3], "--height", "16", "--width", "16",
           "--per-proc-batch-size", "2", "--num-fid-samples", "2", "--sample-dir", str(tmp_path),
           "--timestep-shift", "auto", "--lowres-renoise", "0.6"])
    (npz,) = tmp_path.glob("*.npz")
    assert "-shiftauto-lowres0.6-seed-0" in npz.name
    with np.load(npz) as archive:
        assert archive["arr_0"].shape == (2, 16, 16, 3)
