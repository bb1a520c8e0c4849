"""The shape of the code, checked: what `lint-imports` cannot see (DESIGN.md, STYLE.md).

`make lint` runs `lint-imports` for the layers and the absence of import cycles.  These tests
hold the rest of issue 14's rules: a docstring on every module saying what it owns, modules
under 400 lines, functions under 80, the formatter left on, and a function-level import only
with a ``# lazy import:`` comment right above it giving its measured reason (a hand-kept list
of modules to pre-import once hid a start-up deadlock that lazy imports caused).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "daemon" / "pgwarden"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_FMT_SKIPS = 10
LAZY_MARK = "# lazy import:"


def _modules() -> list[tuple[Path, str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        out.append((path, text, ast.parse(text, filename=str(path))))
    assert len(out) > 50, f"no modules found under {PACKAGE}"
    return out


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_every_module_says_what_it_owns() -> None:
    missing = [_name(p) for p, _, tree in _modules() if not ast.get_docstring(tree)]
    assert missing == []


def test_modules_stay_under_400_lines() -> None:
    long = {_name(p): text.count("\n") for p, text, _ in _modules()}
    assert {n: lines for n, lines in long.items() if lines > MAX_MODULE_LINES} == {}


def test_functions_stay_under_80_lines() -> None:
    long = {}
    for path, _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{_name(path)}:{node.lineno} {node.name}"] = lines
    assert long == {}


def test_the_formatter_formats() -> None:
    skips = sum(text.count("fmt: skip") for _, text, _ in _modules())
    offs = [_name(p) for p, text, _ in _modules() if "fmt: off" in text]
    assert skips < MAX_FMT_SKIPS
    assert offs == []


def test_function_level_imports_say_why() -> None:
    unexplained = []
    for path, text, tree in _modules():
        lines = text.splitlines()
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                above = node.lineno - 2
                while above >= 0 and lines[above].strip().startswith(("from ", "import ", "try:")):
                    above -= 1  # a group of lazy imports shares one comment
                while above >= 0 and lines[above].strip().startswith("#"):
                    if lines[above].strip().startswith(LAZY_MARK):
                        break
                    above -= 1
                if above < 0 or not lines[above].strip().startswith(LAZY_MARK):
                    unexplained.append(f"{_name(path)}:{node.lineno}")
    assert unexplained == []
