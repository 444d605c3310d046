import pytest
from workflow_fixtures import image_folder, tiny_vae_dir  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def latent_shards(image_folder, tiny_vae_dir, tmp_path_factory):  # noqa: F811
    """10 images of 64x64 -> 8x8x4 latents in 3 shards."""
    from ledit.cli import run as ledit

    out = tmp_path_factory.mktemp("latents") / "shards"
    ledit(["extract-latents", "--data-path", str(image_folder), "--features-path", str(out), "--vae",
           str(tiny_vae_dir), "--image-size", "64", "--shard-size", "4", "--num-workers", "0", "--device", "cpu"])
    return out
