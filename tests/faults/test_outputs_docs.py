"""docs/faults.md's "What survives what" table has a row for every test in tests/faults/ (the README points
there for what the fault suite proves): a test added without its row fails here."""

import ast
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, "..", "..", "docs", "faults.md")


def test_every_fault_test_has_a_row_in_docs_faults_md():
    doc = open(DOC).read()
    missing = []
    for name in sorted(os.listdir(HERE)):
        if not (name.startswith("test_") and name.endswith(".py")):
            continue
        tree = ast.parse(open(os.path.join(HERE, name)).read())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                if f"`{name}::{node.name}`" not in doc and f"`{name}::{node.name}`," not in doc:
                    missing.append(f"{name}::{node.name}")
    assert not missing, f"docs/faults.md has no row for: {', '.join(missing)}"
