"""The engine is a library: jobqueue imports nothing of the app that uses it."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "jobqueue"


def test_no_engine_file_names_the_app():
    offenders = [
        str(path.relative_to(REPO))
        for path in ENGINE.rglob("*")
        if path.is_file() and path.suffix in (".py", ".lua") and "rideshare" in path.read_text()
    ]
    assert offenders == []


def test_no_engine_module_imports_the_app_or_flask():
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("rideshare", "tasks", "flask"), f"{path}: imports {name}"


def test_importing_the_engine_loads_no_app_module():
    code = (
        "import sys, jobqueue, jobqueue.task, jobqueue.worker\n"
        "print(sorted(m for m in sys.modules if m.startswith(('rideshare', 'tasks', 'flask'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
