"""The layout keeps its promises: the folder says the layer, the file says the stage.

- nothing under ``tasks/`` (the domain: ``core``, ``data``, ``model``, ``registry``, ``serving``,
  ``monitoring`` and ``decisions.py``) imports Prefect or the flows, lazily or not, and neither does
  the prediction service (but for one lazy import of the Prefect side, to read a credentials block);
- no stage package imports a later stage (core < data < model < registry < serving < monitoring <
  decisions), so the folders are layers;
- every Prefect task is defined in ``flows/steps/``, every flow in ``flows/``;
- nothing under ``tasks/`` reads or writes the environment or builds its own ``Settings()``;
- the README's "Where things are" table names every module and only modules that exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tasks.core.settings import PROJECT_DIR
from tests.source_reading import fresh_python, imports_of

STAGES = ("core", "data", "model", "registry", "serving", "monitoring")  # in the order they may import
LAYERS = (*STAGES, "decisions")
PREFECT_PACKAGES = ("prefect", "prefect_aws", "prefect_dask", "prefect_docker")


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (PROJECT_DIR / folder).rglob("*.py") if p.name != "__init__.py")


def _rel(path: Path) -> str:
    return path.relative_to(PROJECT_DIR).as_posix()


def _domain_modules() -> list[str]:
    return [_rel(p).removesuffix(".py").replace("/", ".") for p in _modules("tasks")]


def _mentions_prefect(path: Path) -> list[str]:
    """Imports of Prefect (or of the flows, the Prefect side) in ``path``, as ``<line> <module>``."""
    return [f"{line} {module}" for line, module, _ in imports_of(path) if _is_prefect_side(module)]


def _is_prefect_side(module: str) -> bool:
    return module.split(".")[0] in (*PREFECT_PACKAGES, "flows")


def test_nothing_under_tasks_imports_prefect_or_the_flows_even_lazily():
    modules = _modules("tasks")
    assert len(modules) > 30
    assert [f"{_rel(p)}:{m}" for p in modules for m in _mentions_prefect(p)] == []
    assert sorted(p.name for p in (PROJECT_DIR / "tasks").rglob("steps.py")) == []


def test_the_folder_check_sees_a_lazy_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from prefect import flow\n    importlib.import_module('flows.x')\n")
    assert _mentions_prefect(module) == ["2 prefect", "3 flows.x"]


def test_the_service_reaches_the_prefect_side_only_lazily_for_a_credentials_block():
    found = [(m, top) for p in _modules("bentos") for _, m, top in imports_of(p) if _is_prefect_side(m)]
    assert found == [("flows.steps.runtime", False)]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tasks" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def test_no_stage_imports_a_later_stage():
    upward = []
    for path in _modules("tasks"):
        own = _layer(_rel(path).removesuffix(".py").replace("/", "."))
        assert own is not None, f"{_rel(path)} is in no stage"
        for line, module, _ in imports_of(path):
            other = _layer(module)
            if other is not None and LAYERS.index(other) > LAYERS.index(own):
                upward.append(f"{_rel(path)}:{line} ({own}) imports {module} ({other})")
    assert upward == []


def _imports_prefect(modules: list[str]) -> list[str]:
    return fresh_python(
        "import importlib, sys\n"
        f"for name in {modules!r}:\n    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')))"
    )


def test_domain_code_imports_no_prefect():
    modules = _domain_modules()
    assert len(modules) > 20  # the check covers the stage packages, not an empty list
    assert _imports_prefect(modules) == []


def test_the_service_does_not_load_prefect():
    assert _imports_prefect(["bentos.service"]) == []


def test_the_check_sees_prefect_when_it_is_loaded():
    assert "prefect" in _imports_prefect(["flows.steps.data"])


IMPORT_CHECK = """
import ast, importlib, pathlib, sys
sys.path[:0] = [".", "bench"]  # bench scripts import their helpers as lib.*
own = ("tasks", "flows", "deployments", "bentos", "bench", "lib", "tests")
missing = []
for path in sorted(p for d in own[:5] + ("tests",) for p in pathlib.Path(d).rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in own:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(node.module + "." + alias.name)
                    except ImportError:
                        missing.append(f"{path}:{node.lineno} {node.module}.{alias.name}")
print(missing)
"""


def test_every_import_of_project_code_resolves():
    """Imports inside functions (lazy, so a module loads fast) are not checked by importing the
    module: this reads every ``from <project module> import name`` and resolves it."""
    assert fresh_python(IMPORT_CHECK) == []


def _decorated(path: Path, names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
                if name in names:
                    found.append(node.name)
    return found


TASK_DECORATORS = {"task", "io_task", "cached_task"}
CODE_DIRS = ("flows", "tasks", "deployments", "bentos", "bench")


def test_every_task_lives_in_the_steps_folder_and_every_flow_in_flows():
    tasks_at, flows_at = {}, {}
    for folder in CODE_DIRS:
        for path in _modules(folder):
            if _decorated(path, TASK_DECORATORS):
                tasks_at[_rel(path)] = _decorated(path, TASK_DECORATORS)
            if _decorated(path, {"flow"}):
                flows_at[_rel(path)] = _decorated(path, {"flow"})
    assert tasks_at and flows_at
    assert [p for p in tasks_at if not re.fullmatch(r"flows/steps/[a-z_]+\.py", p)] == []
    assert [p for p in flows_at if not p.startswith("flows/")] == []


def _environment_uses(source: str) -> list[str]:
    """``os.environ``, ``os.getenv``/``putenv`` and ``Settings()`` in a module's source, by line."""
    uses = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv", "putenv", "unsetenv")
        ):
            uses.append(f"{node.lineno}: os.{node.attr}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Settings":
            uses.append(f"{node.lineno}: Settings()")
    return sorted(uses, key=lambda u: int(u.split(":")[0]))


def test_nothing_below_the_flows_reads_the_environment():
    below = _modules("tasks")
    assert len(below) > 30
    assert [f"{_rel(p)}:{u}" for p in below for u in _environment_uses(p.read_text())] == []


def test_the_environment_check_finds_each_kind_of_use():
    source = "import os\nx = os.environ.get('A')\ny = os.getenv('B')\ns = Settings()\n"
    assert _environment_uses(source) == ["2: os.environ", "3: os.getenv", "4: Settings()"]


def _where_things_are() -> str:
    text = (PROJECT_DIR / "README.md").read_text()
    match = re.search(r"^## Where things are\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Where things are' section"
    return match.group(1)


def test_readme_where_things_are_is_true_to_the_tree():
    section = _where_things_are()
    named = set(
        re.findall(r"`((?:flows|tasks|deployments|bentos|infra|configs|tests|bench)/[\w./-]*)`", section)
    )
    assert named, "the section names no paths"
    missing = sorted(n for n in named if not (PROJECT_DIR / n.rstrip("/")).exists())
    assert missing == [], f"README names paths that do not exist: {missing}"
    modules = [_rel(p) for folder in ("flows", "tasks") for p in _modules(folder)]
    unnamed = sorted(m for m in modules if m not in named)
    assert unnamed == [], f"README's 'Where things are' does not name: {unnamed}"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_package_is_documented(stage):
    init = PROJECT_DIR / "tasks" / stage / "__init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), (
        f"tasks/{stage}/__init__.py should say what the stage is"
    )
