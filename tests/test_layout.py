"""The layout of `workers/`: the deployed service never reaches the local platform.

`workers/service/` is what runs in production; `workers/local/` replaces
Supabase, Stripe and Twilio on one machine. The service must run where the
local package is absent, so no module it imports, directly or through another
module of the package, may import `workers.local`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path, name: str) -> set[str]:
    """Every module `path` imports, anywhere in it (functions included), as absolute names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from workers.service import db` imports the module workers.service.db.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def reaches(root: Path, start: str, forbidden: str) -> list[list[str]]:
    """Import chains from the modules under package `start` to package `forbidden`.

    `root` holds the top-level package; only its own modules are followed.
    """
    modules = {module_name(p, root): p for p in root.glob("**/*.py")}
    chains: list[list[str]] = []
    seen: set[str] = set()
    queue = [[m] for m in sorted(modules) if m == start or m.startswith(start + ".")]
    while queue:
        chain = queue.pop(0)
        current = chain[-1]
        if current in seen:
            continue
        seen.add(current)
        names = imported_names(modules[current], current)
        hits = {n for n in names if n == forbidden or n.startswith(forbidden + ".")}
        for hit in sorted(hits):
            # `from workers.local import up` names both workers.local and workers.local.up.
            if not any(hit.startswith(other + ".") for other in hits):
                chains.append([*chain, hit])
        for imported in sorted(names - hits):
            if imported in modules and imported not in seen:
                queue.append([*chain, imported])
    return chains


def test_the_service_never_imports_the_local_platform() -> None:
    chains = reaches(ROOT, "workers.service", "workers.local")
    assert not chains, "the service imports the local platform:\n" + "\n".join(
        " -> ".join(chain) for chain in chains
    )


def test_the_import_check_finds_an_indirect_import(tmp_path: Path) -> None:
    tree = {
        "workers/__init__.py": "",
        "workers/service/__init__.py": "",
        "workers/service/app.py": "from . import helpers\n",
        "workers/service/helpers.py": "def f():\n    from workers.ops import tool\n",
        "workers/ops/__init__.py": "",
        "workers/ops/tool.py": "import workers.local.up\n",
        "workers/local/__init__.py": "",
        "workers/local/up.py": "",
    }
    for relative, text in tree.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    assert reaches(tmp_path, "workers.service", "workers.local") == [
        ["workers.service.helpers", "workers.ops.tool", "workers.local.up"],
    ]


def test_the_service_imports_without_the_local_package() -> None:
    script = textwrap.dedent(
        """
        import importlib, importlib.abc, pkgutil, sys

        class NoLocal(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "workers.local" or name.startswith("workers.local."):
                    raise ImportError(f"{name} is not deployed")
                return None

        sys.meta_path.insert(0, NoLocal())
        import workers.service
        for info in pkgutil.walk_packages(workers.service.__path__, "workers.service."):
            importlib.import_module(info.name)
        assert not any(m.startswith("workers.local") for m in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_no_module_is_over_600_lines() -> None:
    long = {}
    for path in sorted((ROOT / "workers").glob("**/*.py")):
        count = len(path.read_text().splitlines())
        if count > 600:
            long[str(path.relative_to(ROOT))] = count
    assert not long, f"split these by subject: {long}"
