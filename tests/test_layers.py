"""ledit's layering, read from the source: every import from one ledit package into another follows an allowed
edge of ``MAY_IMPORT``, so imports point down and never sideways. docs/layout.md describes the layers.

The table is the one place the allowed edges live. A new package gets a row; a new edge is added here, on
purpose, where a reviewer sees it. Imports inside functions count the same as those at the top of a module.
"""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "ledit"

# The shared run helpers: atomic files, devices and process groups, checkpoint files, command-line arguments.
FOUNDATION = {"files", "runtime", "checkpoint", "arguments"}
BUILDING_BLOCKS = {"data", "models", "diffusion"}
WORKFLOWS = {"training", "sampling", "evaluate", "bench", "info"}

# package -> the ledit packages it may import (besides itself and the root package, which holds the version).
MAY_IMPORT = {
    "__main__": {"cli"},
    "cli": {"demo", "diffusers"} | WORKFLOWS | BUILDING_BLOCKS | FOUNDATION | {"ops"},  # names sub-commands as strings
    "demo": WORKFLOWS | BUILDING_BLOCKS | FOUNDATION | {"ops"},
    # ledit inside diffusers: its pipeline runs sampling's add-ons, its import reuses convert-dit.
    "diffusers": WORKFLOWS | BUILDING_BLOCKS | FOUNDATION | {"ops"},
    **{workflow: BUILDING_BLOCKS | FOUNDATION | {"ops"} for workflow in WORKFLOWS},
    "data": {"files", "runtime", "arguments"},
    "models": {"ops", "checkpoint"},
    "diffusion": set(),
    "checkpoint": {"files"},
    "runtime": set(),
    "files": set(),
    "arguments": set(),
    "ops": {"_C"},
    "_C": set(),  # the compiled kernels (csrc/)
}
ROOT = "ledit"
# Top-level names ledit must never import: the repository's test and benchmark code.
OUTSIDE = ("tests", "benchmarks", "conftest", "model_helpers", "workflow_fixtures")
OUTSIDE_TARGET = "<tests or benchmarks>"


def package_of(path: Path, source: Path) -> str:
    """ledit/models/dit.py -> "models"; ledit/info.py -> "info"; ledit/__init__.py -> "ledit"."""
    parts = path.relative_to(source).with_suffix("").parts
    return ROOT if parts == ("__init__",) else parts[0]


def module_of(path: Path, source: Path) -> list[str]:
    """ledit/models/dit.py -> ["ledit", "models", "dit"]; a package's __init__.py -> the package."""
    parts = [ROOT, *path.relative_to(source).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(tree: ast.Module, module: list[str], is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the tree, relative imports resolved; ``from a import b``
    yields a.b, since b may be a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module if is_package else module[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def packages_in(source: Path) -> set[str]:
    """ledit's packages and top-level modules under ``source``, and the compiled ``_C``."""
    return {package_of(path, source) for path in source.rglob("*.py")} - {ROOT} | {"_C"}


def target_package(dotted: str, packages: set[str]) -> str | None:
    """The ledit package a dotted import lands in (ROOT for the root package itself, e.g. ``__version__``),
    OUTSIDE_TARGET for the repository's test and benchmark code, None for anything not ledit's."""
    parts = dotted.split(".")
    if parts[0] in OUTSIDE:
        return OUTSIDE_TARGET
    if parts[0] != ROOT:
        return None
    return parts[1] if len(parts) > 1 and parts[1] in packages else ROOT


def import_edges(source: Path = SOURCE) -> list[tuple[str, str, str, str]]:
    """(file:line, importing package, imported module, its package) for every import under ``source`` that
    leaves its own package for another ledit package or for test/benchmark code."""
    packages = packages_in(source)
    edges = []
    for path in sorted(source.rglob("*.py")):
        importer = package_of(path, source)
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, dotted in imported_modules(tree, module_of(path, source), path.name == "__init__.py"):
            target = target_package(dotted, packages)
            if target not in (None, ROOT, importer):
                edges.append((f"{path.relative_to(source.parent)}:{line}", importer, dotted, target))
    return edges


def layering_violations(source: Path = SOURCE) -> list[str]:
    """Every import under ``source`` that MAY_IMPORT does not allow, as 'file:line: why'."""
    violations = []
    for where, importer, dotted, target in import_edges(source):
        if target == OUTSIDE_TARGET:
            violations.append(f"{where}: {importer} imports {dotted}: ledit never imports tests or benchmarks")
        elif importer not in MAY_IMPORT:
            violations.append(f"{where}: package {importer!r} has no row in MAY_IMPORT: place it in the layers")
        elif target not in MAY_IMPORT[importer]:
            allowed = sorted(MAY_IMPORT[importer]) or "no other ledit package"
            violations.append(f"{where}: {importer} imports {dotted}, but {importer} may import only {allowed}")
    return violations


def test_every_import_between_ledit_packages_points_down():
    assert layering_violations() == []


def test_the_checker_reads_the_real_imports():
    """Absolute, relative and in-function imports of the real tree are all seen (a blind checker passes too)."""
    edges = {(importer, target) for _, importer, _, target in import_edges()}
    assert {("models", "ops"), ("models", "checkpoint"), ("ops", "_C"), ("sampling", "models"),
            ("training", "runtime"), ("__main__", "cli"), ("demo", "sampling")} <= edges


def test_every_package_has_a_row_and_every_row_a_package():
    packages = packages_in(SOURCE)
    assert packages - set(MAY_IMPORT) == set(), "place the new package in MAY_IMPORT"
    assert set(MAY_IMPORT) - packages == set(), "remove the rows of packages that no longer exist"


def test_the_allowed_edges_form_layers():
    """No cycle: each package can be given a layer strictly above everything it may import."""
    layer: dict[str, int] = {}

    def depth(package, path=()):
        assert package not in path, f"MAY_IMPORT has a cycle: {' -> '.join((*path, package))}"
        if package not in layer:
            layer[package] = 1 + max((depth(dep, (*path, package)) for dep in MAY_IMPORT[package]), default=-1)
        return layer[package]

    for package in MAY_IMPORT:
        depth(package)
    assert layer["cli"] > layer["demo"] > layer["training"] > layer["models"] > layer["ops"] > layer["_C"]


BAD_IMPORTS = {
    "models/upward.py": "from ledit.training import train\n",
    "data/sideways.py": "def late():\n    from ..sampling import loop\n",
    "training/sideways.py": "import ledit.sampling.loop as loop\n",
    "ops/upward.py": "from ledit import models\n",
    "diffusion/__init__.py": "from ..models.dit import DiT\n",
    "files.py": "from tests.conftest import _seed\n",
    "newpackage/__init__.py": "from ledit import ops\n",
}
GOOD_IMPORTS = {
    "models/ok.py": "from ledit.ops import scan_attention\nfrom . import sibling\nfrom .layers import DiTBlock\n",
    "sampling/ok.py": "import ledit\nfrom ledit import __version__, models\nfrom ledit.runtime import barrier\n",
    "ops/ok.py": "from ledit import _C\nimport torch\n",
}


def test_a_bad_edge_fails(tmp_path):
    """The checker finds upward, sideways and out-of-tree imports, relative or absolute, at any depth."""
    source = tmp_path / "ledit"
    stubs = {f"{package}/__init__.py": "" for package in MAY_IMPORT if package != "_C"}
    for name, text in {**stubs, **BAD_IMPORTS, **GOOD_IMPORTS}.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    violations = layering_violations(source)
    flagged = {violation.split(":")[0].removeprefix("ledit/") for violation in violations}
    assert flagged == set(BAD_IMPORTS), violations
    assert any("data imports ledit.sampling.loop, but data may import only ['arguments', 'files', 'runtime']" in v
               for v in violations)
    assert any("never imports tests" in v for v in violations)
    assert any("'newpackage' has no row" in v for v in violations)


@pytest.mark.parametrize("importer,target", [("models", "training"), ("data", "models"), ("sampling", "evaluate"),
                                             ("diffusion", "models"), ("ops", "models"), ("files", "runtime")])
def test_edges_the_layering_forbids_are_not_in_the_table(importer, target):
    assert target not in MAY_IMPORT[importer]
