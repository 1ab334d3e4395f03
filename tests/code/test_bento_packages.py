"""A packaged bento installs only ``bentos/requirements.in`` (and what they depend on): every third-party
package the service's own code imports must be among them, or the container fails where the
development virtualenv, which has everything, never would. (``make test-images`` proves it in the
built image.)

Read from the code the service loads (every import, lazy ones included), not from ``sys.modules``: the
libraries' own optional imports (``h2`` if installed, ...) are theirs to do without."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from tasks.registry.packaging import serving_packages
from tests.source_reading import fresh_python, imports_of

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
    """The top-level names a module imports, lazily or not."""
    return {module.split(".")[0] for _, module, _ in imports_of(path)}


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
    files = [Path(f) for f in fresh_python(LOADED)]
    assert any(f.name == "service.py" for f in files) and len(files) > 10
    imported = set().union(*(imported_modules(f) for f in files)) - NOT_IN_A_BENTO
    assert {"bentoml", "lightgbm", "polars"} <= imported  # the check sees what the service imports
    assert uncovered(imported, installed_closure(serving_packages())) == {}


def test_the_check_finds_a_package_nothing_declared_brings():
    assert "fastapi" not in installed_closure(["lightgbm"])
    assert "numpy" in installed_closure(["lightgbm"])  # a declared package's own requirements count
    assert uncovered({"fastapi", "numpy", "json"}, installed_closure(["lightgbm"])) == {
        "fastapi": ["fastapi"]
    }
