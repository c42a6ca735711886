"""The house's rules, read from the code's own imports (ast): maskgan/ lives in rooms whose imports point down
only, data_loader/ sits below all of maskgan/, nothing imports the CLI, and a project import inside a function
is allowed only where it guards an optional dependency (its line or the line above says "optional")."""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# maskgan's rooms, lowest first: a room imports only itself and the rooms before it (docs/house.md says what
# each holds). metrics.py imports nothing of the project and sits below all; demo.py sits on top.
ROOMS = ["config", "models", "design", "run", "evaluation", "training", "reporting", "check"]
FLAT_ALLOWED = {"__init__.py", "demo.py", "metrics.py"}
PROJECT = ("maskgan", "data_loader", "tune", "cluster", "cli", "bench")
# who may import whom among the top-level folders: data_loader < maskgan < cluster (Ray plumbing, KubeRay) < tune;
# cli, bench and tests sit on top of everything
MAY_IMPORT = {"data_loader": {"data_loader"}, "maskgan": {"data_loader", "maskgan"},
              "cluster": {"data_loader", "maskgan", "cluster"}, "tune": {"data_loader", "maskgan", "cluster", "tune"}}


def _modules(folder: str):
    for path in sorted((REPO / folder).rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path, ast.parse(path.read_text(), str(path))


def _imports(tree: ast.AST):
    """(node, dotted module) of every project import in a module, with the function it sits in (or None)."""
    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [child.module] + [f"{child.module}.{a.name}" for a in child.names]
                out.extend((child, n, func) for n in names[:1] + [n for n in names[1:] if n.count(".") <= 2])
            elif isinstance(child, ast.Import):
                out.extend((child, a.name, func) for a in child.names)
            visit(child, inner)

    visit(tree, None)
    return [(n, m, f) for n, m, f in out if m.split(".")[0] in PROJECT]


def _room(path: pathlib.Path) -> str | None:
    rel = path.relative_to(REPO / "maskgan").parts
    return rel[0] if len(rel) > 1 else None


def _room_of_module(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else None


def test_maskgan_has_no_flat_modules_besides_its_face_demo_and_metrics():
    flat = sorted(p.name for p in (REPO / "maskgan").glob("*.py") if p.name not in FLAT_ALLOWED)
    assert not flat, f"maskgan/ holds flat modules {flat}: each belongs in a room ({', '.join(ROOMS)})"
    rooms = sorted(p.name for p in (REPO / "maskgan").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert rooms == sorted(ROOMS), f"maskgan/'s rooms {rooms} are not the ones the import order knows {ROOMS}"


def test_maskgan_rooms_import_only_rooms_below_them():
    wrong = []
    for path, tree in _modules("maskgan"):
        here = _room(path)
        rank = len(ROOMS) if here is None else ROOMS.index(here)  # demo.py / __init__ / metrics: on top
        for node, dotted, _ in _imports(tree):
            top = dotted.split(".")[0]
            if top not in MAY_IMPORT["maskgan"]:
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} imports {dotted} (above maskgan)")
            there = _room_of_module(dotted)
            if path.name == "metrics.py" and top == "maskgan":
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} imports {dotted} (metrics sits below all)")
            if there is not None and ROOMS.index(there) > rank:
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} ({here}) imports {dotted} ({there} is above it)")
    assert not wrong, "imports that run up:\n" + "\n".join(wrong)


@pytest.mark.parametrize("folder", sorted(MAY_IMPORT))
def test_top_level_folders_import_only_what_sits_below_them(folder):
    wrong = [f"{p.relative_to(REPO)}:{n.lineno} imports {m}" for p, t in _modules(folder)
             for n, m, _ in _imports(t) if m.split(".")[0] not in MAY_IMPORT[folder]]
    assert not wrong, f"{folder}/ imports from above it:\n" + "\n".join(wrong)


@pytest.mark.parametrize("folder", ["maskgan", "data_loader", "tune", "cluster"])
def test_no_project_import_inside_a_function_unless_it_guards_an_optional_dependency(folder):
    wrong = []
    for path, tree in _modules(folder):
        lines = path.read_text().splitlines()
        for node, dotted, func in _imports(tree):
            said = " ".join(lines[max(0, node.lineno - 2):node.end_lineno]).lower()
            if func is not None and "optional" not in said:
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} imports {dotted} inside {func.name}()")
    assert not wrong, ("project imports inside functions (move them to the top; only an optional dependency's "
                       "guard may stay, with a comment saying so):\n" + "\n".join(sorted(set(wrong))))


def test_the_rules_catch_a_planted_upward_import_and_a_hidden_one(tmp_path):
    """A test that cannot fail is a defect: the readers above see a planted upward import and an inner import."""
    planted = ast.parse("from maskgan.reporting import report\n\ndef f():\n    from maskgan.run import build\n")
    found = _imports(planted)
    assert [m for _, m, _ in found][:1] == ["maskgan.reporting"]
    assert _room_of_module("maskgan.reporting.report") == "reporting"
    assert ROOMS.index("reporting") > ROOMS.index("models")  # so a models/ module importing it is refused
    assert [f.name for _, _, f in found if f is not None] == ["f", "f"]


def test_readme_room_table_matches_the_tree():
    """Every path in the README's room table exists, and every maskgan room and top-level folder is in it."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Where does a change go", 1)[1].split("\n## ", 1)[0]
    paths = [p.strip("`") for row in table.splitlines() if row.startswith("| `")
             for p in row.split("|")[1].replace(",", " ").split()]
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing, f"README's room table names paths the tree does not have: {missing}"
    for room in ROOMS:
        assert f"maskgan/{room}/" in paths, f"README's room table lacks maskgan/{room}/"
    for folder in ("data_loader/", "cluster/", "tune/", "cli/", "k8s/", "bench/", "tests/"):
        assert folder in paths, f"README's room table lacks {folder}"
    assert len(readme.splitlines()) <= 120 and max(map(len, readme.splitlines())) <= 200
