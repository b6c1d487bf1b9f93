"""The circuit-reuse notebook on the real bundled model, small setting."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_circuit_reuse_notebook_executes(run_notebook):
    assert not run_notebook("circuit_reuse.ipynb", {"INTERP_NB_N_PROMPTS": "2", "INTERP_NB_K": "2"})
