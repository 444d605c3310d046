"""The Inception network of ADM's evaluator, from torch-fidelity (a TF-exact port of the 2015 graph,
including TF1's bilinear resize to 299), with local weights only.

``InceptionFeatures`` returns ADM's three feature sets for uint8 NCHW images of any size:
    pool     (N, 2048)  pool_3: FID, precision/recall
    spatial  (N, 2023)  the first 7 channels of mixed_6/conv (17 x 17, NHWC order as TF): sFID
    probs    (N, 1008)  softmax of pool_3 @ W without the bias (ADM's "softmax"): Inception Score
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_NAME}"
SPATIAL_CHANNELS = 7


class MissingWeightsError(FileNotFoundError):
    """Inception weights were needed but not given (no FID package ships them; ledit never downloads)."""


class InceptionFeatures(torch.nn.Module):
    """ADM's pool/spatial/probs features from a torch-fidelity-style InceptionV3 (``network(x)`` returns
    (pool_3, logits without bias); ``network.Mixed_6d.branch1x1`` is TF's mixed_6/conv)."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        self._spatial = None
        network.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output) -> None:
        self._spatial = output

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pool, logits = self.network(images)
        spatial = self._spatial[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)
        self._spatial = None
        return {"pool": pool, "spatial": spatial.float(), "probs": torch.softmax(logits, dim=1)}


def load_inception(weights: str | os.PathLike | None, device: torch.device | str = "cpu") -> InceptionFeatures:
    if weights is None:
        raise MissingWeightsError(
            "FID, sFID, IS and precision/recall need the Inception weights, which no package ships and ledit never "
            f"downloads: fetch {WEIGHTS_URL} once and pass --inception-weights /path/to/{WEIGHTS_NAME} "
            "(or evaluate with the weight-free --metrics swd)"
        )
    path = Path(weights)
    if not path.is_file():
        raise MissingWeightsError(f"--inception-weights {str(path)!r} does not exist (expected {WEIGHTS_NAME})")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise ImportError(
            f"--inception-weights needs torch-fidelity (and a torchvision built for your torch): "
            f"pip install torch-fidelity ({e})"
        ) from e
    # torch-fidelity reads the file with weights_only=False; reading it weights-only first guarantees it is
    # a plain tensor file, so that second read cannot run code.
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"--inception-weights {str(path)!r} is not a weights-only state dict ({e})") from e
    network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                          feature_extractor_weights_path=str(path))
    return InceptionFeatures(network).to(device).eval()
