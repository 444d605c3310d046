"""What setup.py compiles into each extension (build_utils): ledit._C gets every op's C++ and CUDA source and no
program (csrc/tests/test_scan_tiles.cpp, the ctest program, was once linked into it, main() and all), and
ledit._C_emulated gets the executor's units only."""

from __future__ import annotations

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from build_utils import emulated_sources, extension_sources  # noqa: E402

DEFINES_MAIN = re.compile(r"^\s*int\s+main\s*\(", re.MULTILINE)


def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def test_ledit_c_compiles_no_program():
    cpp, cuda = extension_sources(ROOT)
    programs = [path for path in cpp + cuda if DEFINES_MAIN.search(read(path))]
    assert programs == [], "sources with a main() would be linked into ledit._C"
    # The one C++ unit test today, which CMake builds for ctest: the check above would find it.
    assert DEFINES_MAIN.search(read(os.path.join("csrc", "tests", "test_scan_tiles.cpp")))


def test_ledit_c_compiles_every_op_source():
    cpp, cuda = extension_sources(ROOT)
    op_folders = {os.path.dirname(path) for path in glob.glob(os.path.join("csrc", "*", ""), root_dir=ROOT)}
    op_folders -= {os.path.join("csrc", "emulator"), os.path.join("csrc", "tests")}
    assert {os.path.join("csrc", "scan_attention"), os.path.join("csrc", "dwconv_modulate")} <= op_folders
    for folder in op_folders:
        for ext, chosen in (("cpp", cpp), ("cu", cuda)):
            expected = sorted(glob.glob(os.path.join(folder, f"*.{ext}"), root_dir=ROOT))
            assert [path for path in chosen if os.path.dirname(path) == folder] == expected
    assert os.path.join("csrc", "ledit_module.cpp") in cpp


def test_ledit_c_emulated_compiles_the_executor_alone():
    sources = emulated_sources(ROOT)
    cpp, cuda = extension_sources(ROOT)
    assert os.path.join("csrc", "emulator", "torch_ops.cpp") in sources
    assert all(os.path.dirname(path) == os.path.join("csrc", "emulator") for path in sources)
    assert not set(sources) & set(cpp + cuda)
