"""Evaluation of generated images. Submodules are imported on use, so importing ``ledit.evaluate`` stays light."""
