"""The rooms of docs/ARCHITECTURE.md and what each may import, read from the source (no
framework needed): an import that crosses a wall fails here, not in a reviewer's head."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"ddpm_core": "ddpm_core", "models": "ddpm_core.models", "interop": "ddpm_core.interop",
           "backends": "ddpm_core.backends", "app": "ddpm_core.app"}
FRAMEWORKS = ("torch", "jax", "flax", "optax")
APP = "ddpm_core.app"

# room (a module-name prefix) -> the prefixes no import in it may name, anywhere in a module
FORBIDDEN = {
    "ddpm_core.models": (APP, "ddpm_core.backends", "ddpm_core.interop", *FRAMEWORKS),
    "ddpm_core.interop": (f"{APP}.training", f"{APP}.sampling", f"{APP}.evaluation", f"{APP}.cli",
                          f"{APP}.backend_api", "ddpm_core.backends", *FRAMEWORKS),
    f"{APP}.run": (f"{APP}.training", f"{APP}.sampling", f"{APP}.evaluation", f"{APP}.cli",
                   f"{APP}.backend_api", "ddpm_core.interop", "ddpm_core.backends", *FRAMEWORKS),
    f"{APP}.training": (f"{APP}.sampling", f"{APP}.evaluation", f"{APP}.cli", f"{APP}.backend_api",
                        "ddpm_core.backends", *FRAMEWORKS),
    f"{APP}.sampling": (f"{APP}.training", f"{APP}.evaluation", f"{APP}.cli", f"{APP}.backend_api",
                        "ddpm_core.backends", *FRAMEWORKS),
    f"{APP}.evaluation": (f"{APP}.training", f"{APP}.cli", f"{APP}.backend_api"),
    "ddpm_core.backends.torch": ("ddpm_core.backends.jax", "jax", "flax", "optax"),
    "ddpm_core.backends.jax": ("ddpm_core.backends.torch",),
}
# the core's mathematics: no application, no network description, and a framework only
# lazily, to read the arrays a caller passed (``_namespace``)
CORE_FORBIDDEN = (APP, "ddpm_core.backends", "ddpm_core.models", "ddpm_core.interop")
CORE_FACADES = {"ddpm_core.runs", "ddpm_core.__main__"}  # documented entry points into app
KNOWN: set[tuple[str, str]] = set()  # crossings allowed until a move removes them: none


def _modules():
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            yield name, path


def _imports(path: Path, *, top_level_only: bool = False) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _rules(module: str) -> tuple[str, ...]:
    if (module.split(".") + [""])[1] not in {"app", "backends", "models", "interop"}:
        return () if module in CORE_FACADES else CORE_FORBIDDEN
    return tuple(p for room, ps in FORBIDDEN.items() if _under(module, room) for p in ps)


MODULES = list(_modules())


@pytest.mark.parametrize("module, path", MODULES, ids=[m for m, _ in MODULES])
def test_each_room_imports_only_what_it_may(module, path):
    bad = [name for name in _imports(path) for prefix in _rules(module)
           if _under(name, prefix) and (module, name) not in KNOWN]
    assert not bad, f"{module} imports {bad}: docs/ARCHITECTURE.md says it may not"


LAZY = [(m, p) for m, p in MODULES if _under(m, APP) or m in CORE_FACADES or _rules(m) == CORE_FORBIDDEN]


@pytest.mark.parametrize("module, path", LAZY, ids=[m for m, _ in LAZY])
def test_the_core_and_the_application_import_a_framework_only_when_called(module, path):
    bad = [n for n in _imports(path, top_level_only=True)
           if _under(n, "ddpm_core.backends") or n.split(".")[0] in FRAMEWORKS]
    assert not bad, f"{module} imports {bad} at import time"


def test_the_rules_see_the_modules():  # a moved folder would leave the rules checking nothing
    rooms = {room for room in FORBIDDEN if any(_under(m, room) for m, _ in MODULES)}
    assert rooms == set(FORBIDDEN)


def _vocabularies() -> dict[frozenset, str]:
    from ddpm_core import losses, parameterization, respacing, samplers, schedules

    homes = {"ddpm_core.samplers": samplers.SAMPLERS, "ddpm_core.parameterization": parameterization.PREDICTIONS,
             "ddpm_core.parameterization ": parameterization.VARIANCES,
             "ddpm_core.parameterization  ": parameterization.LEARNED_VARIANCES,
             "ddpm_core.schedules": schedules.SCHEDULES, "ddpm_core.schedules ": schedules.SCHEDULE_ENTRIES,
             "ddpm_core.respacing": respacing.SPACINGS, "ddpm_core.losses": losses.LOSSES}
    return {frozenset(names): home.strip() for home, names in homes.items()}


@pytest.mark.parametrize("module, path", MODULES, ids=[m for m, _ in MODULES])
def test_each_vocabulary_is_spelled_out_only_in_its_home(module, path):
    vocabularies = _vocabularies()
    literals = [node for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) > 1
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts)]
    again = [(vocabularies[key], node.lineno) for node in literals
             if (key := frozenset(e.value for e in node.elts)) in vocabularies and vocabularies[key] != module]
    assert not again, f"{module} spells out the names defined in {again}: import them instead"
