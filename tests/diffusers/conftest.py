"""Fixtures of the diffusers tests: a tiny ledit checkpoint, the pipeline folder `ledit diffusers export` writes
from it with the tiny AutoencoderKL, and a tiny diffusers DiT folder. Everything local, nothing downloaded."""

import pytest
from diffusers_helpers import save_ledit_checkpoint, tiny_diffusers_dit, tiny_ledit
from workflow_fixtures import tiny_vae_dir  # noqa: F401  (fixture)


@pytest.fixture(scope="session")
def ledit_ckpt(tmp_path_factory):
    return save_ledit_checkpoint(tiny_ledit(), tmp_path_factory.mktemp("ckpt") / "ledit.pt")


@pytest.fixture(scope="session")
def pipeline_dir(ledit_ckpt, tiny_vae_dir, tmp_path_factory):  # noqa: F811  (the fixture)
    """`ledit diffusers export` of the tiny LEDiT with the tiny VAE and DiT's DDIM scheduler."""
    from ledit.cli import run as ledit

    folder = tmp_path_factory.mktemp("pipelines") / "ledit-pipeline"
    ledit(["diffusers", "export", "--ckpt", str(ledit_ckpt), "--vae", str(tiny_vae_dir), "--output", str(folder)])
    return folder


@pytest.fixture(scope="session")
def diffusers_dit_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dit") / "tiny-dit"
    tiny_diffusers_dit().save_pretrained(folder)
    return folder
