"""The maths of ADM's evaluation suite (openai/guided-diffusion ``evaluations/evaluator.py``), on features from
any extractor: Fréchet distance (FID on pool features, sFID on spatial ones), Inception Score, and k-NN manifold
precision/recall (Kynkäänniemi et al. 2019, k = 3). Matching ADM's definitions keeps the numbers comparable with
the paper's tables."""

from __future__ import annotations

import warnings

import numpy as np
import torch


class RunningMoments:
    """Mean and covariance of feature rows fed in batches, in float64 (a reference set of 1.28M images never has
    to sit in memory)."""

    def __init__(self):
        self.count, self.total, self.outer = 0, None, None

    def update(self, features: np.ndarray) -> None:
        x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        if self.total is None:
            self.total, self.outer = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        self.count += len(x)
        self.total += x.sum(0)
        self.outer += x.T @ x

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise ValueError(f"statistics need at least 2 images, got {self.count}")
        mu = self.total / self.count
        sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), as ADM/TTUR compute it: if the product is
    singular, an eps * I offset is added; a non-negligible imaginary part is an error, not a silent number."""
    from scipy import linalg  # the eval extra; SWD-only evaluation runs without it

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in size: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape} (features from different extractors or layers?)")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"fid: singular product of covariances; adding {eps} to the diagonals", stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"fid: imaginary component {np.max(np.abs(covmean.imag))} in the matrix square root")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(probs: np.ndarray, split_size: int = 5000) -> float:
    """ADM's IS: exp(E_x KL(p(y|x) || p(y))) on consecutive splits of `split_size` samples, averaged."""
    probs = np.asarray(probs, dtype=np.float64)
    scores = []
    for start in range(0, len(probs), split_size):
        part = probs[start : start + split_size]
        kl = part * (np.log(part + 1e-12) - np.log(part.mean(0, keepdims=True) + 1e-12))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores))


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096):
    for start in range(0, len(a), chunk):
        yield start, torch.cdist(a[start : start + chunk], b)


def manifold_radii(features: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Distance of each point to its k-th nearest neighbour in the same set (itself excluded)."""
    radii = torch.empty(len(features), dtype=features.dtype, device=features.device)
    for start, dist in _pairwise_distances(features, features):
        radii[start : start + len(dist)] = dist.kthvalue(k + 1, dim=1).values  # +1: the point itself, at 0
    return radii


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Fraction of `points` inside at least one ball (centre, radius)."""
    inside = 0
    for _, dist in _pairwise_distances(points, centres):
        inside += (dist <= radii[None]).any(dim=1).sum().item()
    return inside / len(points)


def precision_recall(reference: np.ndarray, samples: np.ndarray, k: int = 3, device="cpu") -> tuple[float, float]:
    """Precision: share of samples inside the reference manifold; recall: share of references inside the
    samples' manifold (each manifold = union of k-NN balls around its points). O(N^2) distances: use a GPU."""
    ref = torch.as_tensor(np.asarray(reference), dtype=torch.float32, device=device)
    sam = torch.as_tensor(np.asarray(samples), dtype=torch.float32, device=device)
    if min(len(ref), len(sam)) <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} images on each side")
    return _coverage(sam, ref, manifold_radii(ref, k)), _coverage(ref, sam, manifold_radii(sam, k))
