"""Reading the project's code as the tests that hold its layout and packaging do: a fresh interpreter
that reports what it loaded, and every import a module makes (lazy ones included)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tasks.core.settings import PROJECT_DIR


def fresh_python(code: str) -> list:
    """Run ``code`` in a new interpreter (nothing imported yet, no Prefect settings) at the project root;
    return the list literal it prints last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "BENTOML_DO_NOT_TRACK": "true"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own subprocess printed a list literal


def imports_of(path: Path) -> list[tuple[int, str, bool]]:
    """Every module ``path`` imports, lazily or not: (line, module, at module level). Absolute imports,
    and ``import_module("...")`` / ``__import__("...")`` with a literal name."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, id(node) in top))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value), False))
    return found
