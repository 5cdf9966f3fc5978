"""The layers' import rules, read from the source (no imports needed):

- `engine/` (the core, the host included) imports nothing from `training/` or `studio/` — not even by
  a module name in a string (importlib, `python -m …`) — and never Qt;
- `training/` imports nothing from `studio/`;
- `studio/` never imports torch, transformers, trl, audiobox or an engine module that does (it reaches
  the model through the host client);
- `engine/api.py` and `engine/job_api.py`, the contract every process imports, are light (pydantic, no torch);
- the layers agree on the contract: training's rewards, presets and run options are the API's.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"torch", "transformers", "trl", "audiobox_aesthetics", "accelerate", "peft", "datasets", "vllm"}
QT = {"PySide6", "shiboken6", "pyqtgraph"}


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(package: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts)


def imports(path: Path, *, top_level_only: bool = False, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) of every import in the file (relative imports resolved); with `top_level_only`,
    only those that run when the module is imported (not inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if top_level_only and isinstance(node, (ast.If, ast.Try)):  # guarded module-level imports
            nodes_inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
        else:
            nodes_inner = [node]
        for n in nodes_inner:
            if isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant) \
                    and isinstance(n.args[0].value, str) \
                    and getattr(n.func, "attr", getattr(n.func, "id", "")) in ("import_module", "__import__"):
                out.append((n.lineno, n.args[0].value))  # importlib.import_module("name")
            elif isinstance(n, ast.Import):
                out += [(n.lineno, a.name) for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    anchor = package.split(".")[: len(package.split(".")) - (n.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                out.append((n.lineno, base))
                out += [(n.lineno, f"{base}.{a.name}" if base else a.name) for a in n.names if a.name != "*"]
    return out


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant that is not a docstring."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            value = first.value if isinstance(first, ast.Expr) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.add(id(value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def top(name: str) -> str:
    return name.split(".")[0]


def violations(package: str, forbidden: set[str], *, strings: bool, root: Path = ROOT) -> list[str]:
    """Imports of `forbidden` packages in `package` (and, with `strings`, string literals naming them)."""
    found = []
    # A dotted module path ("training.grpo"); a bare word ("training" as an API tag) is English.
    pattern = re.compile(r"(?<![\w.\-/])(" + "|".join(map(re.escape, sorted(forbidden))) + r")\.\w")
    for path in sources(package, root):
        rel = path.relative_to(root)
        found += [f"{rel}:{line}: imports {name}" for line, name in imports(path, root=root)
                  if top(name) in forbidden]
        if strings:
            found += [f"{rel}:{line}: names module {text!r}" for line, text in string_literals(path)
                      if pattern.search(text)]
    return found


def test_engine_imports_neither_training_nor_studio_nor_qt():
    assert violations("engine", {"training", "studio"}, strings=True) == []
    assert violations("engine", QT, strings=False) == []


def test_training_imports_nothing_from_studio():
    assert violations("training", {"studio"}, strings=True) == []
    assert violations("training", QT, strings=False) == []


def heavy_engine_modules() -> set[str]:
    """Engine modules that load torch & co. when imported (directly or through another engine module)."""
    deps = {module_name(p): {n for _, n in imports(p, top_level_only=True)} for p in sources("engine")}
    heavy = {m for m, names in deps.items() if any(top(n) in HEAVY for n in names)}
    while True:
        more = {m for m, names in deps.items() if m not in heavy and any(n in heavy or n.rpartition(".")[0] in heavy
                                                                          for n in names)}
        if not more:
            return heavy
        heavy |= more


def test_heavy_engine_modules_are_found():
    heavy = heavy_engine_modules()
    assert {"engine.policy", "engine.scorer", "engine.fastdecode", "engine.host.server"} <= heavy
    assert not {"engine.api", "engine.job_api", "engine.host_client", "engine.music", "engine.errors",
                "engine.maa_weights"} & heavy


def test_studio_never_imports_torch_or_heavy_engine_modules():
    heavy = heavy_engine_modules()
    found = []
    for path in sources("studio"):
        for line, name in imports(path):
            if top(name) in HEAVY or name in heavy:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    assert found == []


@pytest.mark.parametrize("contract", ["api.py", "job_api.py"])
def test_the_contract_is_light(contract):
    names = {n for _, n in imports(ROOT / "engine" / contract)}
    engine_deps = {n for n in names if top(n) == "engine"}
    assert not {top(n) for n in names} & (HEAVY | QT)
    assert not engine_deps & heavy_engine_modules()


def test_forbidden_imports_and_module_strings_are_detected(tmp_path):
    """The walker itself: each kind of violation in a scratch package is reported."""
    pkg = tmp_path / "engine"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Mentions training.grpo in a docstring: allowed."""\n')
    (pkg / "a.py").write_text("import training.grpo\n")
    (pkg / "b.py").write_text("def f():\n    from studio import app\n")
    (pkg / "c.py").write_text('import importlib\nM = importlib.import_module("training.host_job")\n')
    (pkg / "d.py").write_text('CMD = ["python", "-m", "engine.cli", "serve"]\n')
    (pkg / "e.py").write_text("from . import a\nfrom .. import studio\n")
    (pkg / "f.py").write_text('import importlib\nimportlib.import_module("studio")\nTAGS = ["training"]\n')
    found = violations("engine", {"training", "studio"}, strings=True, root=tmp_path)
    assert any("a.py:1: imports training.grpo" in f for f in found)
    assert any("b.py:2: imports studio" in f for f in found)
    assert any("c.py:2: names module 'training.host_job'" in f for f in found)
    assert any("e.py:2: imports studio" in f for f in found)  # relative import out of the package
    assert any("f.py:2: imports studio" in f for f in found) and not any("f.py:3" in f for f in found)
    assert not any("d.py" in f or "__init__" in f or "e.py:1" in f for f in found)


# ------------------------------------------------------------------------------ one contract, all layers
def test_smart_commands_are_entry_points_in_help_order():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    commands = project["project"]["entry-points"]["smart.commands"]
    assert list(commands) == sorted(commands), "the names carry the --help order"
    for name, module in commands.items():
        path = ROOT / (module.replace(".", "/") + ".py")
        assert path.is_file(), (name, module)
        assert any(isinstance(n, ast.FunctionDef) and n.name == "register" for n in ast.parse(path.read_text()).body)


def test_training_builds_on_the_contract():
    pytest.importorskip("torch")
    from dataclasses import fields

    from engine import api
    from training.grpo import PRESETS, GRPORunConfig
    from training.rewards import BUILTIN_REWARDS, NEEDS_MAA, parse_reward_spec

    # Other tests register rewards of their own at run time; the built-in set is the catalogue.
    assert BUILTIN_REWARDS == {r.name for r in api.REWARDS}
    assert {r.name for r in api.REWARDS if r.needs_maa} <= NEEDS_MAA
    assert PRESETS == {name: p.options for name, p in api.PRESETS.items()}
    config_fields = {f.name: f.default for f in fields(GRPORunConfig)}
    assert {name: config_fields[name] for name in api.OPTION_NAMES} == \
        {f.name: f.default for f in fields(api.GRPOOptions)}
    assert set(config_fields) - set(api.OPTION_NAMES) == {"out_dir", "resume"}
    # The old name of the scale-consistency reward is still accepted (saved configurations).
    assert [s.name for s in parse_reward_spec("scale=0.5,notes")] == ["scale-consistency", "notes"]
