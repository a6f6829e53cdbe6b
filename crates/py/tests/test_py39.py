"""The package promises CPython 3.9 (`requires-python`, an abi3-py39 wheel),
but the tests run on the machine's newer Python. The grammar of every
module and stub is held to 3.9's here, and so are the names the code takes
from the standard library that 3.9 lacks, so that a newer construct fails
a test rather than a user on 3.9."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "crates" / "py" / "python" / "pymatris"
# Used only at run time, they fail on 3.9 (annotations are strings under
# `from __future__ import annotations`, so types there may be newer).
NEWER = {
    "dataclass slots=": lambda node: _call_kw(node, "dataclass", "slots"),
    "dataclass kw_only=": lambda node: _call_kw(node, "dataclass", "kw_only"),
    "zip strict=": lambda node: _call_kw(node, "zip", "strict"),
    "typing.TypeAlias": lambda node: _imports(node, "typing", "TypeAlias"),
    "typing.ParamSpec": lambda node: _imports(node, "typing", "ParamSpec"),
    "typing.Self": lambda node: _imports(node, "typing", "Self"),
    "itertools.pairwise": lambda node: _imports(node, "itertools", "pairwise"),
    "contextlib.aclosing": lambda node: _imports(node, "contextlib", "aclosing"),
}


def _call_kw(node, name, keyword):
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return called == name and any(k.arg == keyword for k in node.keywords)


def _imports(node, module, name):
    return isinstance(node, ast.ImportFrom) and node.module == module and any(
        a.name == name for a in node.names
    )


def _sources():
    found = sorted(PACKAGE.glob("*.py")) + sorted(PACKAGE.glob("*.pyi"))
    assert len(found) >= 8, found
    return found


def test_every_module_parses_as_python_3_9():
    for path in _sources():
        try:
            ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))
        except SyntaxError as e:
            raise AssertionError(f"{path.name} is not Python 3.9: {e}") from e


def test_no_module_uses_what_3_9_lacks():
    used = []
    for path in _sources():
        if path.suffix == ".pyi":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            used += [f"{path.name}:{node.lineno}: {what}" for what, test in NEWER.items() if test(node)]
    assert not used, used


def test_the_checks_catch_what_they_look_for():
    try:
        ast.parse("match x:\n    case 1: pass\n", feature_version=(3, 9))
    except SyntaxError:
        pass
    else:
        raise AssertionError("a match statement parsed as Python 3.9")
    tree = ast.parse("@dataclass(slots=True)\nclass A: pass\nfrom typing import TypeAlias\n")
    hits = {what for node in ast.walk(tree) for what, test in NEWER.items() if test(node)}
    assert hits == {"dataclass slots=", "typing.TypeAlias"}, hits
