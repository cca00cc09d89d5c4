"""The engine's shape: folders by pipeline stage, few loose modules, small files, no import cycle, and a CLI whose
shared module imports no other CLI file; CMake packages every engine file, sub-packages included."""
import ast
import re
from pathlib import Path

from conftest import ROOT

ENGINE = ROOT / "SegLossBrain" / "SegLossBrainLib"


def engine_modules() -> dict:
    """{dotted module name: path} of every engine file (a package by its __init__)."""
    modules = {}
    for path in ENGINE.rglob("*.py"):
        parts = ("SegLossBrainLib",) + path.relative_to(ENGINE).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict) -> set:
    """Engine modules that ``name`` imports (a package's __init__ imported by its own children is not counted)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return found


def test_stage_folders_few_loose_modules_and_small_files():
    loose = [p.name for p in ENGINE.glob("*.py") if p.name != "__init__.py"]
    stages = [p.name for p in ENGINE.iterdir() if (p / "__init__.py").is_file()]
    assert len(loose) <= 10, loose
    assert {"imageio", "preprocessing", "synthesis", "training", "inference", "models", "cli"} <= set(stages)
    too_long = {p.name: n for p in ENGINE.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not too_long


def test_no_import_cycle_in_the_engine():
    modules = engine_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}

    def reaches(start, goal, seen):
        for nxt in graph[start] - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    cycles = [name for name in graph if reaches(name, name, set())]
    assert not cycles, cycles


def test_cli_common_imports_no_other_cli_file():
    modules = engine_modules()
    name = "SegLossBrainLib.cli.common"
    assert not {m for m in imports_of(name, modules[name], modules) if m.startswith("SegLossBrainLib.cli")}


def test_cmake_packages_every_engine_file_with_its_sub_packages():
    cmake = (ROOT / "SegLossBrain" / "CMakeLists.txt").read_text()
    assert re.search(r"file\(GLOB_RECURSE _engine_scripts .*\n\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/SegLossBrainLib/\*\.py\)",
                     cmake)
    assert "list(APPEND MODULE_PYTHON_SCRIPTS ${_engine_scripts})" in cmake
