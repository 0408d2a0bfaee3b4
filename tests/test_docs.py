"""The docs name tests as proof: each one they name exists."""

from __future__ import annotations

import ast
import re

import pytest

from .stack import ROOT

DOCS = ["docs/guarantees.md", "docs/internals.md", "docs/scaling.md"]
REFERENCE = re.compile(r"tests/(\w+\.py)::(\w+)")


def defined_names(path: str) -> set[str]:
    tree = ast.parse((ROOT / "tests" / path).read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
    }


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_a_doc_names_as_proof_exists(doc):
    references = REFERENCE.findall((ROOT / doc).read_text())
    assert references, f"{doc} names no test"
    missing = [
        f"{path}::{name}"
        for path, name in sorted(set(references))
        if not (ROOT / "tests" / path).exists() or name not in defined_names(path)
    ]
    assert missing == []
