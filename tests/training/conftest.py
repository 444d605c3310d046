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


@pytest.fixture(scope="session")
def native_latent_shards(tiny_vae_dir, tmp_path_factory):  # noqa: F811
    """12 images of 6 sizes and aspect ratios -> native-resolution latents (area <= 64^2 px, sides multiples of 16
    px): latent grids 8x8, 6x8, 8x6, 4x14, 6x10 and 4x4, in 3 shards."""
    from workflow_fixtures import make_image_folder

    from ledit.cli import run as ledit

    sizes = ((64, 64), (72, 80), (96, 70), (40, 130), (50, 80), (32, 32))
    images = make_image_folder(tmp_path_factory.mktemp("mixed") / "train", per_class=6, sizes=sizes, seed=1)
    out = tmp_path_factory.mktemp("native") / "shards"
    ledit(["extract-latents", "--data-path", str(images), "--features-path", str(out), "--vae", str(tiny_vae_dir),
           "--image-size", "64", "--native-resolution", "--shard-size", "5", "--num-workers", "0", "--device", "cpu"])
    return out
