"""The architecture as the imports draw it (parsed with ast, nothing imported).

app/       the HTTP API        may import kernel
worker/    the pipeline        may import kernel; never app
kernel/    shared kernel       imports only kernel
cli/       command line, demo  may import app, worker, kernel
devtools/  fakes for dev/tests the product never imports them; the demo alone loads them,
                               lazily, inside the functions that start the fake servers
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("app", "worker", "kernel", "cli")
FIRST_PARTY = (*PRODUCT, "devtools", "bench", "tests")
# Where a product module may import a dev tool: only inside a function (never at import time).
LAZY_DEVTOOLS_ALLOWED = {"cli.demo"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported first-party module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path)
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = top_level and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import):
                found.extend((alias.name, top_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module's package
                    base = module.split(".")[: -child.level]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                found.append((target, top_level))
                found.extend((f"{target}.{alias.name}", top_level) for alias in child.names)
            visit(child, nested)

    visit(tree, True)
    return [(name, top) for name, top in found if name.split(".")[0] in FIRST_PARTY]


def _package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{_module_name(path)} imports {name}"
        for path in _package_files(package)
        for name, _top in _imports(path)
        if name.split(".")[0] in forbidden
    ]


def test_the_packages_exist() -> None:
    for package in (*PRODUCT, "devtools"):
        assert (ROOT / package / "__init__.py").is_file(), package
        assert _package_files(package)


def test_the_kernel_imports_only_the_kernel() -> None:
    assert _violations("kernel", ("app", "worker", "cli", "devtools", "bench", "tests")) == []


def test_the_worker_never_imports_the_http_layer() -> None:
    assert _violations("worker", ("app", "cli", "devtools", "bench", "tests")) == []


def test_the_http_layer_never_imports_the_worker_or_the_command_line() -> None:
    assert _violations("app", ("worker", "cli", "devtools", "bench", "tests")) == []


def test_no_handler_talks_to_gmail_directly() -> None:
    # The OAuth code exchange and the grant checks live in kernel.gmail_connect.
    offenders = [
        f"{_module_name(path)} imports {name}"
        for path in _package_files("app")
        for name, _top in _imports(path)
        if name == "kernel.gmail" or name.startswith("kernel.gmail.")
    ]
    assert offenders == []
    # (app/push.py fetches Google's public certificates to authenticate pushes: edge auth.)
    for path in sorted((ROOT / "app" / "handlers").glob("*.py")):
        source = path.read_text()
        assert "aiohttp.ClientSession" not in source, path
        assert "GmailClient" not in source, path


@pytest.mark.parametrize("package", PRODUCT)
def test_the_product_never_imports_dev_tools_at_import_time(package: str) -> None:
    offenders = []
    for path in _package_files(package):
        module = _module_name(path)
        for name, top_level in _imports(path):
            if name.split(".")[0] != "devtools":
                continue
            if top_level or module not in LAZY_DEVTOOLS_ALLOWED:
                offenders.append(f"{module} imports {name}")
    assert offenders == []


def test_loading_the_product_loads_no_dev_tool_and_the_worker_no_http_layer() -> None:
    """What the interpreter really loads: the `ticketing` entry point and everything it
    reaches at import time, then the worker's task module alone."""
    probe = (
        "import sys\n"
        "import cli.main, cli.demo, cli.importer, cli.mailbox_admin, app.server\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'devtools'], 'devtools'\n"
    )
    worker_probe = (
        "import sys\n"
        "import worker.tasks, worker.runner\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('app', 'cli', 'devtools')]\n"
        "assert not bad, bad\n"
    )
    for code in (probe, worker_probe):
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
