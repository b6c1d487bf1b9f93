"""The edge-circuits notebook on the tiny Llama model, small setting."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_edge_circuits_notebook_executes(run_notebook):
    assert not run_notebook("edge_circuits.ipynb", {"INTERP_NB_MODEL": "tiny-llama", "INTERP_NB_N_PROMPTS": "4",
                                                    "INTERP_NB_STEPS": "2"})
