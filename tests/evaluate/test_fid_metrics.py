import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ledit.cli import run as ledit
from ledit.data.npz import ImageSet, write_image_npz
from ledit.evaluate.evaluator import Reference, build_reference, evaluate
from ledit.evaluate.inception import InceptionFeatures, MissingWeightsError
from ledit.evaluate.metrics import RunningMoments, frechet_distance, inception_score, precision_recall

_W = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))


def stand_in_extractor(images: torch.Tensor) -> dict:
    """A tiny fixed feature extractor in Inception's place: 2x2 mean colours, mean colour, a linear classifier."""
    assert images.dtype == torch.uint8 and images.shape[1] == 3
    x = images.float() / 255
    pool = F.adaptive_avg_pool2d(x, 2).flatten(1)
    return {"pool": pool, "spatial": x.mean((2, 3)), "probs": torch.softmax(4 * pool @ _W, dim=1)}


def test_frechet_distance_of_gaussians_with_known_distance():
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 2.0])
    # Diagonal covariances: |mu1 - mu2|^2 + sum(a + b - 2 sqrt(ab)) = 9 + (1 + 1 + 4).
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(15.0, abs=1e-9)
    # Sigma2 = 4 Sigma1 (a full matrix): the trace term is tr(S) + 4 tr(S) - 2 * 2 tr(S) = tr(S).
    rng = np.random.default_rng(0)
    q = rng.standard_normal((4, 4))
    sigma = q @ q.T + np.eye(4)
    assert frechet_distance(np.ones(4), sigma, np.ones(4), 4 * sigma) == pytest.approx(np.trace(sigma), rel=1e-9)
    assert frechet_distance(mu2, np.diag(b), mu2, np.diag(b)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_singular_covariance_and_bad_shapes():
    x = np.random.default_rng(1).standard_normal((3, 6))  # 3 points in 6-d: rank-deficient covariance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fd = frechet_distance(x.mean(0), np.cov(x, rowvar=False), x.mean(0) + 1, np.cov(x, rowvar=False))
    assert np.isfinite(fd) and fd == pytest.approx(6.0, abs=1e-2)
    with pytest.raises(ValueError, match="differ in size"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_running_moments_match_numpy():
    x = np.random.default_rng(2).standard_normal((50, 5)) * 3 + 7
    acc = RunningMoments()
    for part in np.array_split(x, 4):
        acc.update(part)
    mu, sigma = acc.statistics()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-9)


def test_inception_score_extremes():
    assert inception_score(np.eye(4)[np.arange(40) % 4]) == pytest.approx(4.0, rel=1e-6)
    assert inception_score(np.full((40, 4), 0.25)) == pytest.approx(1.0)
    # ADM splits into chunks of 5000 and averages: two chunks of one class each score 1 each.
    assert inception_score(np.eye(2)[np.repeat([0, 1], 10)], split_size=10) == pytest.approx(1.0)


def test_precision_recall_on_point_sets():
    grid = np.stack(np.meshgrid(np.arange(6.0), np.arange(6.0)), -1).reshape(-1, 2)
    assert precision_recall(grid, grid) == (1.0, 1.0)
    assert precision_recall(grid, grid + 100) == (0.0, 0.0)
    half = np.concatenate([grid[:18], grid[:18] + 100])
    precision, recall = precision_recall(grid, half)
    assert precision == 0.5 and 0.5 <= recall < 1.0
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(grid[:3], grid)


def _random_images(n, h, w, seed, low=0, high=256):
    return np.random.default_rng(seed).integers(low, high, (n, h, w, 3), dtype=np.uint8)


def test_evaluate_matches_hand_computed_fid_with_a_stand_in_extractor(tmp_path):
    samples, ref = _random_images(20, 16, 16, 0), _random_images(24, 16, 16, 1, 40, 200)
    write_image_npz(tmp_path / "s.npz", [samples[:7], samples[7:]], 20, 16, 16)
    write_image_npz(tmp_path / "r.npz", [ref], 24, 16, 16)
    results = evaluate(ImageSet(tmp_path / "s.npz"), Reference(tmp_path / "r.npz"), stand_in_extractor,
                       batch_size=6)
    fs = stand_in_extractor(torch.from_numpy(samples).permute(0, 3, 1, 2))
    fr = stand_in_extractor(torch.from_numpy(ref).permute(0, 3, 1, 2))
    stats = [(f[k].numpy().mean(0), np.cov(f[k].numpy(), rowvar=False)) for k in ("pool", "spatial") for f in (fs, fr)]
    assert results["fid"] == pytest.approx(frechet_distance(*stats[0], *stats[1]), rel=1e-6)
    assert results["sfid"] == pytest.approx(frechet_distance(*stats[2], *stats[3]), rel=1e-4)
    assert results["is"] == pytest.approx(inception_score(fs["probs"].numpy()), rel=1e-6)
    assert (results["precision"], results["recall"]) == precision_recall(fr["pool"].numpy(), fs["pool"].numpy())
    assert results["swd"] > 0 and results["num_samples"] == 20
    same = evaluate(ImageSet(tmp_path / "s.npz"), Reference(tmp_path / "s.npz"), stand_in_extractor,
                    metrics=("fid", "swd"))
    assert same["fid"] == pytest.approx(0.0, abs=1e-6) and same["swd"] == pytest.approx(0.0, abs=1e-6)


def test_build_reference_at_any_size_is_an_adm_reference_batch(tmp_path):
    from workflow_fixtures import make_image_folder

    folder = make_image_folder(tmp_path / "imagenet", per_class=4)
    out = build_reference(folder, tmp_path / "VIRTUAL_test_24x40.npz", stand_in_extractor, 24, 40, num_images=5,
                          batch_size=3)
    with np.load(out) as archive:
        assert set(archive.files) == {"arr_0", "mu", "sigma", "mu_s", "sigma_s"}
        assert archive["arr_0"].shape == (5, 24, 40, 3) and archive["arr_0"].dtype == np.uint8
        mu, sigma = archive["mu"], archive["sigma"]
    crops = np.concatenate(list(ImageSet(folder, crop=(24, 40)).batches(100)))
    pool = stand_in_extractor(torch.from_numpy(crops).permute(0, 3, 1, 2))["pool"].numpy()
    np.testing.assert_allclose(mu, pool.mean(0), rtol=1e-5)
    np.testing.assert_allclose(sigma, np.cov(pool, rowvar=False), rtol=1e-4, atol=1e-9)
    # Statistics from the file, P/R and SWD from its images.
    write_image_npz(tmp_path / "s.npz", [crops[:6]], 6, 24, 40)
    results = evaluate(ImageSet(tmp_path / "s.npz"), Reference(out), stand_in_extractor)
    assert {"fid", "sfid", "is", "precision", "recall", "swd"} <= set(results) and "notes" not in results
    # A statistics-only reference gives FID/sFID and says what it had to skip.
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    results = evaluate(ImageSet(tmp_path / "s.npz"), Reference(tmp_path / "stats.npz"), stand_in_extractor)
    assert "fid" in results and "sfid" not in results and "swd" not in results and len(results["notes"]) == 3


def test_inception_features_take_adm_layers():
    class FakeInception(torch.nn.Module):  # torch-fidelity's interface: Mixed_6d.branch1x1, (pool, logits) out
        def __init__(self):
            super().__init__()
            self.Mixed_6d = torch.nn.Module()
            self.Mixed_6d.branch1x1 = torch.nn.Conv2d(3, 9, 1)

        def forward(self, x):
            spatial = self.Mixed_6d.branch1x1(F.adaptive_avg_pool2d(x.float(), (17, 17)))
            return spatial.mean((2, 3)), spatial.flatten(1)[:, :6]

    net = FakeInception()
    images = torch.randint(0, 256, (2, 3, 20, 30), dtype=torch.uint8)
    out = InceptionFeatures(net)(images)
    expected = net.Mixed_6d.branch1x1(F.adaptive_avg_pool2d(images.float(), (17, 17)))[:, :7]
    assert out["spatial"].shape == (2, 17 * 17 * 7)
    torch.testing.assert_close(out["spatial"], expected.permute(0, 2, 3, 1).reshape(2, -1))
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(2))


def test_fid_cli_errors_and_weight_free_swd(tmp_path):
    write_image_npz(tmp_path / "a.npz", [_random_images(6, 16, 16, 0)], 6, 16, 16)
    write_image_npz(tmp_path / "b.npz", [_random_images(6, 16, 16, 1)], 6, 16, 16)
    with pytest.raises(MissingWeightsError, match="--inception-weights.*weights-inception-2015-12-05"):
        ledit(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--device", "cpu"])
    with pytest.raises(MissingWeightsError, match="does not exist"):
        ledit(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--inception-weights", "nope.pth"])
    with pytest.raises(ValueError, match="unknown kid; choose a comma-separated subset of fid,sfid,is,pr,swd"):
        ledit(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--metrics", "fid,kid"])
    with pytest.raises(ValueError, match="--num-samples 1000: .*a.npz holds only 6 images"):
        ledit(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--metrics", "swd", "--num-samples", "1000"])
    with pytest.raises(FileNotFoundError, match="neither an .npz file nor an image folder"):
        ledit(["fid", str(tmp_path / "missing"), str(tmp_path / "b.npz"), "--metrics", "swd"])
    ledit(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--metrics", "swd", "--device", "cpu",
           "--output", str(tmp_path / "r.json")])
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["swd"] > 0 and set(results) == {"num_samples", "swd", "swd_levels"}


def test_damaged_npz_files_are_named(tmp_path):
    write_image_npz(tmp_path / "a.npz", [_random_images(6, 16, 16, 0)], 6, 16, 16)
    raw = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])  # a copy cut off mid-way
    with pytest.raises(ValueError, match=r"cut.npz' is not a readable .npz archive \(BadZipFile"):
        ImageSet(tmp_path / "cut.npz")
    data_start = raw.index(b"\x93NUMPY")  # arr_0's header; flip a byte of its pixels: zip's CRC check finds it
    damaged = bytearray(raw)
    damaged[data_start + 200] ^= 0xFF
    (tmp_path / "damaged.npz").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"damaged.npz' is truncated or damaged \(BadZipFile: Bad CRC-32"):
        list(ImageSet(tmp_path / "damaged.npz").batches(4))
    np.savez(tmp_path / "stats.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="stats.npz' has neither mu/sigma statistics nor arr_0 images"):
        Reference(tmp_path / "stats.npz")
