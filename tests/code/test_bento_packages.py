"""A packaged bento installs only ``RUNTIME_PACKAGES`` (and what they depend on): every third-party
package the service's own code imports must be among them, or the container fails where the
development virtualenv, which has everything, never would. (``make test-images`` proves it in the
built image.)

Read from the code the service loads (every import, lazy ones included), not from ``sys.modules``: the
libraries' own optional imports (``h2`` if installed, ...) are theirs to do without."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from tasks.core.settings import PROJECT_DIR
from tasks.registry.packaging import RUNTIME_PACKAGES

LOADED = """
import sys
import bentos.service
print(sorted(m.__file__ for n, m in sys.modules.items() if n.split('.')[0] in ('bentos', 'tasks')))
"""
# the one import of the Prefect side: a named credentials block (a bento uses keys or its task role)
NOT_IN_A_BENTO = {"flows"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_closure(roots: list[str]) -> set[str]:
    """``roots`` and every distribution they require (markers evaluated, no extras), installed here."""
    seen: set[str] = set()
    todo = [_canonical(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_canonical(req.name))
    return seen


def imported_modules(path: Path) -> set[str]:
    """The top-level names a module imports, lazily or not (absolute imports)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def uncovered(modules: set[str], declared: set[str]) -> dict[str, list[str]]:
    """Third-party top-level modules none of whose distributions is ``declared``: module -> its
    distributions (a namespace package such as ``opentelemetry`` has several; one is enough)."""
    by_module = metadata.packages_distributions()
    missing = {}
    for module in sorted(modules - set(sys.stdlib_module_names) - {"bentos", "tasks", "__future__"}):
        dists = {_canonical(d) for d in by_module.get(module, [])}
        if not dists & declared:
            missing[module] = sorted(dists) or ["not installed"]
    return missing


def test_the_bento_declares_every_package_the_service_loads():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    out = subprocess.run(
        [sys.executable, "-c", LOADED],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "BENTOML_DO_NOT_TRACK": "true"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    files = [Path(f) for f in eval(out.stdout.strip().splitlines()[-1])]  # noqa: S307 - our own subprocess
    assert any(f.name == "service.py" for f in files) and len(files) > 10
    imported = set().union(*(imported_modules(f) for f in files)) - NOT_IN_A_BENTO
    assert {"bentoml", "lightgbm", "polars"} <= imported  # the check sees what the service imports
    assert uncovered(imported, installed_closure(RUNTIME_PACKAGES)) == {}


def test_the_check_finds_a_package_nothing_declared_brings():
    assert "fastapi" not in installed_closure(["lightgbm"])
    assert "numpy" in installed_closure(["lightgbm"])  # a declared package's own requirements count
    assert uncovered({"fastapi", "numpy", "json"}, installed_closure(["lightgbm"])) == {
        "fastapi": ["fastapi"]
    }
