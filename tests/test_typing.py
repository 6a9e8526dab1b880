"""The package type-checks under mypy --strict, and so does the README's quickstart (which
needs instance() to return the subclass, not BaseClient)."""

import os
import re
import subprocess
import sys

from .support import TESTS, t

ROOT = TESTS.parent
#: Names the quickstart leaves to the reader's application.
APP_STUBS = "def load_checkpoint() -> str:\n    return \"2026-01-01T00:00:00Z\"\ndef notify(message: object) -> None: ...\n"


def mypy(*args, cwd):
    env = {**os.environ, "MYPYPATH": str(ROOT)}  # the source tree, whichever way it is installed
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=t(300))


def test_mypy_strict_passes_on_the_package(tmp_path):
    result = mypy("--strict", "--cache-dir", str(tmp_path / "cache"), "hermes_gevent", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_quickstart_type_checks(tmp_path):
    readme = (ROOT / "README.md").read_text()
    quickstart = readme[readme.index("## Quickstart"):]
    code = re.search(r"```python\n(.*?)```", quickstart, re.S).group(1)
    assert "MyClient.instance()" in code and "client.start()" in code
    lines = code.splitlines()
    body = "\n".join(lines[:3] + [APP_STUBS] + lines[3:])  # after the imports
    (tmp_path / "quickstart.py").write_text(body)
    result = mypy("--cache-dir", str(tmp_path / "cache"), "quickstart.py", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_declares_its_public_names():
    import importlib
    import pkgutil

    import hermes_gevent

    for info in pkgutil.iter_modules(hermes_gevent.__path__):
        module = importlib.import_module(f"hermes_gevent.{info.name}")
        names = getattr(module, "__all__", None)
        assert names, f"hermes_gevent.{info.name} has no __all__"
        assert [n for n in names if not hasattr(module, n)] == [], info.name


def test_every_public_name_a_module_defines_is_in_its_all():
    """Names defined at a module's top level without a leading underscore are its public API."""
    import ast

    missing = {}
    for path in sorted((ROOT / "hermes_gevent").glob("*.py")):
        defined, declared = set(), set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                if names == {"__all__"}:
                    declared = set(ast.literal_eval(node.value))
                defined |= names
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
        public = {name for name in defined if not name.startswith("_")}
        if public - declared:
            missing[path.name] = sorted(public - declared)
    assert missing == {}
