"""Data for training and evaluation: ADM centre-crop preprocessing, ImageFolder listing, latent shards."""

from ledit.data.images import ImageFolderDataset, center_crop_arr, list_image_folder
from ledit.data.shards import LatentShardDataset, ShardError, is_shard_dir

__all__ = [
    "ImageFolderDataset",
    "LatentShardDataset",
    "ShardError",
    "center_crop_arr",
    "is_shard_dir",
    "list_image_folder",
]
