"""The optional dependency: a missing or too old diffusers is a clear ImportError, and only for ledit.diffusers."""

import subprocess
import sys

import pytest

SCRIPTS = {
    "missing": "import sys; sys.modules['diffusers'] = None\nimport ledit.diffusers",
    "too old": "import diffusers; diffusers.__version__ = '0.32.2'\nimport ledit.diffusers",
    "cli": "import sys; sys.modules['diffusers'] = None\nfrom ledit.cli import main\n"
           "main(['diffusers', 'export', '--ckpt', 'x.pt', '--output', 'y'])",
}
MESSAGES = {
    "missing": "ImportError: ledit.diffusers needs diffusers: pip install 'ledit[diffusers]'",
    "too old": "ImportError: ledit.diffusers needs diffusers >= 0.33, found 0.32.2: pip install -U 'ledit[diffusers]'",
    "cli": "ledit diffusers: error: ledit.diffusers needs diffusers: pip install 'ledit[diffusers]'",  # one line
}


@pytest.mark.parametrize("case", list(SCRIPTS))
def test_without_a_usable_diffusers_the_error_says_what_to_install(case):
    done = subprocess.run([sys.executable, "-c", SCRIPTS[case]], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == MESSAGES[case]


def test_ledit_itself_never_imports_diffusers():
    script = "import sys; sys.modules['diffusers'] = None\nimport ledit, ledit.cli, ledit.models, ledit.sampling.loop"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
