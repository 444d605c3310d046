from workflow_fixtures import image_folder, tiny_vae_dir  # noqa: F401  (fixtures)
