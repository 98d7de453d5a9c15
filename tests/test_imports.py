"""Imports flow one way (STYLE.md): `bitlut` (errors, files, formats) under everything; `arch` and
`quant` side by side; `compiler` and `rtl` above them; `sim` above the compiler; `verif`,
`reports` and `dse` above `sim`; `bench` on top; the `cli.py` modules, which wire commands
together, may import anything. Function-level imports count: hiding a cycle inside a function
does not remove it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYER = {"bitlut": 0, "arch": 1, "quant": 1, "compiler": 2, "rtl": 2, "sim": 3,
         "verif": 4, "reports": 4, "dse": 4, "bench": 5}


def imported_packages(tree):
    """(line, module) of every absolute import in a parsed module, nested ones included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module


def arrows_against_the_order(package, tree):
    """Imports of `package`'s module `tree` that point at its own layer or above."""
    bad = []
    for line, module in imported_packages(tree):
        top = module.split(".")[0]
        if top in LAYER and top != package and top != "bitlut" \
                and LAYER[top] >= LAYER[package]:
            bad.append((line, module))
    return bad


def test_imports_flow_one_way():
    offenders = []
    for package in LAYER:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "cli.py":
                continue
            tree = ast.parse(path.read_text(), str(path))
            offenders += [f"{path.relative_to(ROOT)}:{line} imports {module}"
                          for line, module in arrows_against_the_order(package, tree)]
    assert not offenders, "imports against the layer order:\n" + "\n".join(offenders)


def test_the_scan_would_catch_a_cycle():
    # compiler -> sim (a layer above), hidden in a function, and quant <-> arch (same layer)
    tree = ast.parse("def f():\n    from sim import golden\nimport arch.config\nfrom . import x\n")
    assert arrows_against_the_order("compiler", tree) == [(2, "sim")]
    assert sorted(arrows_against_the_order("quant", tree)) == [(2, "sim"), (3, "arch.config")]
    assert arrows_against_the_order("sim", tree) == []
