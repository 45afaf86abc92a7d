"""The README's model table is the one sepp.model_table computes, and its counts agree with known figures."""

from __future__ import annotations

from pathlib import Path

import pytest

import sepp
import sepp.reference as reference
from sepp import model_table

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def rows():
    return {r.name: r for r in model_table.rows()}


def test_the_readme_holds_the_table_the_code_computes(rows):
    table = model_table.markdown(list(rows.values()))
    assert table in README.read_text(encoding="utf-8"), "README's model table is stale: python -m sepp.model_table"


def test_every_model_of_the_factory_table_has_a_row(rows):
    assert set(rows) == set(sepp.model_names()) == set(reference.model_names())


@pytest.mark.parametrize(
    "name, gmacs",
    [("resnet18", 1.81), ("resnet50", 4.09), ("resnet101", 7.80), ("resnet152", 11.51)],
)
def test_multiply_adds_match_torchvisions_published_figures(rows, name, gmacs):
    # torchvision's model docs list these as "GFLOPS" at 224 px, counting one multiply-add as one operation.
    assert rows[name].resolution == 224
    assert round(rows[name].gmacs, 2) == gmacs


def test_a_model_without_published_weights_is_said_to_have_none(rows):
    assert rows["seresnet18"].weights.startswith("none")
    assert "`seresnet50.a1_in1k`" in rows["seresnet50"].weights
