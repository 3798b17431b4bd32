"""Rules of the code's shape that a reviewer should not have to check by eye, read from
the source: where a transaction commits (docs/decisions/0006-transactions.md), how
long a function may be."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "sms", "mobile_api")
# Entry points: the unit of work's owner commits there (decision 0006, rule 1).
ENTRY_MODULES = {"views.py", "tasks.py", "cli.py", "webhooks.py", "web_errors.py"}


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_entry_point(path: Path) -> bool:
    parts = path.relative_to(ROOT).parts
    return parts[0] == "mobile_api" or parts[:2] == ("server", "web") or path.name in ENTRY_MODULES


def _marked(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in function.decorator_list:
        name = decorator.attr if isinstance(decorator, ast.Attribute) else None
        if isinstance(decorator, ast.Name):
            name = decorator.id
        if name == "commits_per_batch":
            return True
    return False


def _session_calls(tree: ast.Module) -> Iterator[tuple[ast.Call, list[ast.AST]]]:
    """Each ``<...>.session.commit()`` / ``.rollback()`` with its enclosing functions."""

    def walk(node: ast.AST, stack: list[ast.AST]) -> Iterator[tuple[ast.Call, list[ast.AST]]]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            stack = [*stack, node]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("commit", "rollback")
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "session"
        ):
            yield node, stack
        for child in ast.iter_child_nodes(node):
            yield from walk(child, stack)

    yield from walk(tree, [])


def test_only_entry_points_and_named_batch_operations_commit_or_roll_back() -> None:
    offenders = []
    seen = 0
    for path, tree in _sources():
        for call, stack in _session_calls(tree):
            seen += 1
            if _is_entry_point(path):
                continue
            if any(_marked(f) for f in stack if isinstance(f, ast.FunctionDef)):
                continue
            where = ".".join(f.name for f in stack if isinstance(f, ast.FunctionDef))
            offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} in {where or '<module>'}")
    assert seen > 20  # the walk finds the commits that exist
    assert offenders == [], (
        "a service commits or rolls back the session: flush instead, use a savepoint, or "
        "mark a batch operation with @commits_per_batch (docs/decisions/0006):\n"
        + "\n".join(offenders)
    )


MAX_FUNCTION_LINES = 80
# Functions allowed to be longer, each with its reason (declarative tables only).
LONG_FUNCTIONS: dict[str, str] = {
    "server/config.py:defaults": "the table of every setting's default: one literal dict",
}


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path.relative_to(ROOT)}:{node.name}"
                if lines > MAX_FUNCTION_LINES and where not in LONG_FUNCTIONS:
                    long.append(f"{where} ({lines} lines)")
    assert long == [], "split these (or list one with its reason):\n" + "\n".join(long)
