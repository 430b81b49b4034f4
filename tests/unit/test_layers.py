"""The import graph: no module imports one in a layer above its own, no two packages import each other, and project
imports sit at the top of a module (the commands' `__main__` modules and the deprecated aliases aside)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# bottom to top; a module belongs to the longest prefix listed (docs/code-layout.md draws the same picture)
LAYERS = [
    ["selfreward.records", "selfreward.schema", "selfreward.rng", "selfreward.conf", "selfreward.prompts"],
    ["selfreward.prompting", "selfreward.backends", "selfreward.rundir", "selfreward.tasks"],
    ["selfreward.scorers", "selfreward.train", "selfreward.observe"],
    ["selfreward.data", "selfreward.sample", "selfreward.select", "selfreward.evaluate", "selfreward.preferences",
     "selfreward.verify"],
    ["selfreward.m0"],
    ["selfreward.config", "selfreward.plan", "selfreward.loop", "selfreward.compare"],
    ["selfreward.__main__", "selfreward.m0.__main__"],
]
# old commands kept for one release: each only calls its replacement
DEPRECATED = {"selfreward.seed": "selfreward.m0.__main__", "selfreward.tasks.seed": "selfreward.m0.__main__"}


def layer(module: str) -> int:
    matches = [(len(p), i) for i, names in enumerate(LAYERS) for p in names if module == p or
               module.startswith(p + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS (and to docs/code-layout.md)"
    return max(matches)[1]


def is_module(name: str) -> bool:
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or path.is_dir()


def imports(path: Path) -> list[tuple[str, bool]]:
    """(project module imported, at the module's top level?) for every project import in `path`."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "selfreward":
            for alias in node.names:  # `from selfreward import data` imports the module selfreward.data
                sub = f"{node.module}.{alias.name}"
                found.append((sub if is_module(sub) else node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names if a.name.split(".")[0] == "selfreward"]
    return found


def graph() -> dict[str, list[tuple[str, bool]]]:
    out = {}
    for path in sorted((ROOT / "selfreward").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = [(m, top) for m, top in imports(path) if m != "selfreward"]
    return out


def package(module: str) -> str:
    """The unit that must not import another that imports it back: a subpackage, or a top-level module (a
    package's `__main__`, its command, stands apart)."""
    return module if module.endswith(".__main__") else ".".join(module.split(".")[:2])


def upward(edges: dict[str, list[tuple[str, bool]]]) -> list[str]:
    return [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})" for m, ts in edges.items() if m not in DEPRECATED
            for t, _ in ts if layer(t) > layer(m)]


def mutual(edges: dict[str, list[tuple[str, bool]]]) -> list[str]:
    deps = {}
    for m, ts in edges.items():
        if m not in DEPRECATED:
            deps.setdefault(package(m), set()).update(package(t) for t, _ in ts if package(t) != package(m))
    return sorted(f"{a} <-> {b}" for a in deps for b in deps[a] if a < b and a in deps.get(b, ()))


def test_no_module_imports_a_layer_above_its_own():
    assert upward(graph()) == []


def test_no_two_packages_import_each_other():
    assert mutual(graph()) == []


def test_the_checks_catch_what_they_look_for():
    """An upward import and a pair of packages importing each other are found (the checks above can fail)."""
    assert upward({"selfreward.backends.load": [("selfreward.m0.builtin", True)]}) == [
        "selfreward.backends.load (layer 1) imports selfreward.m0.builtin (layer 4)"]
    assert mutual({"selfreward.train.stage": [("selfreward.scorers.rubric", True)],
                   "selfreward.scorers.rubric": [("selfreward.train.sft", True)]}) == [
        "selfreward.scorers <-> selfreward.train"]


@pytest.mark.parametrize("module", sorted(DEPRECATED))
def test_deprecated_aliases_only_call_their_replacement(module):
    assert {m for m, _ in graph()[module]} == {DEPRECATED[module]}


def test_project_imports_are_at_the_top_of_a_module():
    """Inside a function only where a command loads a subcommand's module (or a deprecated alias its
    replacement): a reader finds every dependency in the first lines."""
    inner = [f"{m} imports {t} inside a function" for m, ts in graph().items() for t, top in ts
             if not top and not m.endswith("__main__") and m not in DEPRECATED]
    assert inner == []
