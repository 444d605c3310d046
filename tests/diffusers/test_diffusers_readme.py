"""The README's diffusers example, run literally on a pipeline folder exported from a tiny random LEDiT."""

import re
from pathlib import Path

from diffusers_helpers import save_ledit_checkpoint, tiny_ledit
from PIL import Image

from ledit.cli import run as ledit

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## In diffusers", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_the_readme_example_samples_a_2_to_1_image(tiny_vae_dir, tmp_path, monkeypatch):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 6  # five lines of code and a blank one
    ckpt = save_ledit_checkpoint(tiny_ledit(num_classes=1000), tmp_path / "model.pt")  # class 207 exists
    monkeypatch.chdir(tmp_path)
    ledit(["diffusers", "export", "--ckpt", str(ckpt), "--vae", str(tiny_vae_dir), "--output", "ledit-pipeline"])
    exec(compile(code, str(README), "exec"), {})
    (written,) = [p for p in tmp_path.glob("*.png")]
    assert Image.open(written).size == (512, 256)
