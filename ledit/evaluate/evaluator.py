"""Sample set vs reference: feature extraction in batches, then ADM's metrics and the weight-free SWD.

A reference is an ADM reference batch (``arr_0`` images + ``mu, sigma, mu_s, sigma_s``, e.g.
VIRTUAL_imagenet256_labeled.npz, or one made by ``build_reference`` at any resolution), a statistics-only
.npz (FID/sFID only), or plain images (.npz or folder). The extractor is any callable mapping uint8 NCHW images
to {"pool", "spatial", "probs"}; ``ledit fid`` uses Inception, the tests a stand-in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ledit.data.npz import ImageSet, npz_keys, read_npz_arrays, write_image_npz
from ledit.evaluate.metrics import RunningMoments, frechet_distance, inception_score, precision_recall
from ledit.evaluate.swd import sliced_wasserstein

METRICS = ("fid", "sfid", "is", "pr", "swd")
INCEPTION_METRICS = frozenset({"fid", "sfid", "is", "pr"})
STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
Extractor = Callable[[torch.Tensor], dict]


def extract_features(images: ImageSet, extractor: Extractor, batch_size: int, device, keep=("pool", "probs"),
                     desc: str = "features") -> tuple[dict, dict]:
    """({name: all rows} for names in `keep`, {"pool"/"spatial": (mu, sigma)}) over the whole set."""
    kept = {name: [] for name in keep}
    moments = {"pool": RunningMoments(), "spatial": RunningMoments()}
    for batch in tqdm(images.batches(batch_size), total=-(-len(images) // batch_size), desc=desc, unit="batch"):
        out = extractor(torch.from_numpy(np.array(batch)).permute(0, 3, 1, 2).to(device))
        out = {name: value.float().cpu().numpy() for name, value in out.items()}
        for name, acc in moments.items():
            acc.update(out[name])
        for name in keep:
            kept[name].append(out[name])
    stats = {name: acc.statistics() for name, acc in moments.items()}
    return {name: np.concatenate(rows) for name, rows in kept.items()}, stats


class Reference:
    """What a reference file or folder offers: statistics, images, or both."""

    def __init__(self, source: str | os.PathLike, limit: int | None = None, **image_checks):
        """``image_checks``: ``check`` and ``skip_bad`` for a folder of images (see ImageSet)."""
        self.source = Path(source)
        self.stats, self.images = None, None
        if self.source.is_file():
            keys = npz_keys(self.source)
            if all(k in keys for k in ("mu", "sigma")):
                self.stats = read_npz_arrays(self.source, [k for k in STAT_KEYS if k in keys])
            if "arr_0" in keys:
                self.images = ImageSet(self.source, limit)
            if self.stats is None and self.images is None:
                raise ValueError(f"reference {str(self.source)!r} has neither mu/sigma statistics nor arr_0 images")
        else:
            self.images = ImageSet(self.source, limit, **image_checks)


def _images_tensor(images: ImageSet, limit: int) -> torch.Tensor:
    batches, count = [], 0
    for batch in images.batches(256):
        batches.append(torch.from_numpy(np.array(batch[: limit - count])))
        count += len(batches[-1])
        if count >= limit:
            break
    return torch.cat(batches).permute(0, 3, 1, 2)


def evaluate(samples: ImageSet, reference: Reference, extractor: Extractor | None, metrics=METRICS,
             batch_size: int = 100, device="cpu", swd_images: int = 10_000) -> dict:
    """{metric: value} for the requested metrics (see METRICS); "notes" says what was skipped and why."""
    results, notes = {"num_samples": len(samples)}, []
    if INCEPTION_METRICS & set(metrics):
        feats, stats = extract_features(samples, extractor, batch_size, device, desc="sample features")
        ref_stats = reference.stats
        ref_pool = None
        if reference.images is not None and (ref_stats is None or "pr" in metrics):
            ref_feats, computed = extract_features(reference.images, extractor, batch_size, device, keep=("pool",),
                                                   desc="reference features")
            ref_pool = ref_feats["pool"]
            if ref_stats is None:
                ref_stats = {"mu": computed["pool"][0], "sigma": computed["pool"][1],
                             "mu_s": computed["spatial"][0], "sigma_s": computed["spatial"][1]}
        if "fid" in metrics:
            results["fid"] = frechet_distance(*stats["pool"], ref_stats["mu"], ref_stats["sigma"])
        if "sfid" in metrics:
            if "mu_s" in ref_stats:
                results["sfid"] = frechet_distance(*stats["spatial"], ref_stats["mu_s"], ref_stats["sigma_s"])
            else:
                notes.append("sfid skipped: the reference statistics have no mu_s/sigma_s")
        if "is" in metrics:
            results["is"] = inception_score(feats["probs"])
        if "pr" in metrics:
            if ref_pool is None:
                notes.append("precision/recall skipped: the reference has statistics only, no arr_0 images")
            else:
                results["precision"], results["recall"] = precision_recall(ref_pool, feats["pool"], device=device)
    if "swd" in metrics:
        if reference.images is None:
            notes.append("swd skipped: the reference has statistics only, no images")
        else:
            a, b = _images_tensor(samples, swd_images), _images_tensor(reference.images, swd_images)
            if a.shape[1:] != b.shape[1:]:
                raise ValueError(f"swd compares images of one size: samples {tuple(a.shape[2:])}, reference "
                                 f"{tuple(b.shape[2:])}; build the reference at the sample size")
            levels = sliced_wasserstein(a, b)
            results["swd"] = levels.pop("mean")
            results["swd_levels"] = levels
    if notes:
        results["notes"] = notes
    return results


def build_reference(folder: str | os.PathLike, out: str | os.PathLike, extractor: Extractor, height: int, width: int,
                    num_images: int = 10_000, max_images: int | None = None, batch_size: int = 100, device="cpu",
                    seed: int = 0, **image_checks) -> Path:
    """An ADM reference batch at height x width from an image folder (ADM's centre crop): statistics over all
    (or `max_images`) images, plus `num_images` randomly chosen crops as ``arr_0`` for precision/recall/SWD.
    ADM's own evaluator reads the result as it reads VIRTUAL_imagenet256_labeled.npz. ``image_checks``: ``check``
    and ``skip_bad`` (see ImageSet)."""
    images = ImageSet(folder, limit=max_images, crop=(height, width), **image_checks)
    _, stats = extract_features(images, extractor, batch_size, device, keep=(), desc="reference statistics")
    chosen = np.sort(np.random.default_rng(seed).permutation(len(images))[: min(num_images, len(images))])
    files = [images.files[i] for i in chosen]
    batches = (images.read_files(files[i : i + batch_size]) for i in range(0, len(files), batch_size))
    extra = {"mu": stats["pool"][0], "sigma": stats["pool"][1], "mu_s": stats["spatial"][0],
             "sigma_s": stats["spatial"][1]}
    return write_image_npz(out, tqdm(batches, desc="reference images"), len(files), height, width, extra=extra)
