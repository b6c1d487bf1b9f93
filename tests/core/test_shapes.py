"""The run-time shape checker the test suite installs (`interp.core.shapes`)."""

from __future__ import annotations

import pytest
import torch
from jaxtyping import TypeCheckError, jaxtyped

from interp.core.shapes import check_shapes
from interp.core.types import Float, Tensor


@jaxtyped(typechecker=check_shapes)
def _mean_over_pos(x: Float[Tensor, "batch pos d"], w: Float[Tensor, " d"] | None = None) -> Float[Tensor, "batch d"]:
    return x.mean(1) if w is None else (x * w).mean(1)


@jaxtyped(typechecker=check_shapes)
def _wrong_return(x: Float[Tensor, "batch pos d"]) -> Float[Tensor, "batch d"]:
    return x


def test_matching_shapes_pass_and_none_is_allowed():
    assert _mean_over_pos(torch.ones(2, 3, 4)).shape == (2, 4)
    assert _mean_over_pos(torch.ones(2, 3, 4), torch.ones(4)).shape == (2, 4)


def test_a_dimension_binds_across_arguments():
    with pytest.raises(TypeCheckError, match="parameter 'w'.*\\n.*f32\\[5\\]"):
        _mean_over_pos(torch.ones(2, 3, 4), torch.ones(5))


def test_wrong_rank_dtype_and_return_are_caught():
    with pytest.raises(TypeCheckError, match="parameter 'x'"):
        _mean_over_pos(torch.ones(2, 4))
    with pytest.raises(TypeCheckError, match="parameter 'x'"):
        _mean_over_pos(torch.ones(2, 3, 4, dtype=torch.long))
    with pytest.raises(TypeCheckError, match="the return value"):
        _wrong_return(torch.ones(2, 3, 4))


def test_the_suite_wraps_the_annotated_functions_only():
    """tests/conftest.py wraps every jaxtyping-annotated function of interp, where it is defined
    and where it is imported; functions without one are left alone."""
    import interp.analyses.ablation as ablation
    from interp.core.shapes import CHECKED
    from interp.core.sites import head_sites

    assert "interp.analyses.ablation.ablation_hooks" in CHECKED
    assert getattr(ablation.ablation_hooks, "__shape_checked__", False)
    assert not hasattr(head_sites, "__wrapped__")
