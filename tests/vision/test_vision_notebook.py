"""The vision-heads notebook on the real shapes-llava, small setting."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_vision_heads_notebook_executes(run_notebook):
    from interp.models import llava

    if not llava.weights_present():
        pytest.skip(f"shapes-llava parts missing: {llava.INSTALL_HINT}")
    assert not run_notebook("vision_heads.ipynb", {"INTERP_NB_N_PROBE": "3", "INTERP_NB_N_SHAPES": "3",
                                                   "INTERP_NB_MAX_NEW_TOKENS": "4"})
