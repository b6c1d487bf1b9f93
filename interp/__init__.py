"""interp: a mechanistic interpretability workbench.

    from interp import load_model, Site
    model = load_model("smollm2-135m")
"""

from interp.core.sites import Component, Site
from interp.models.loading import load_model

__version__ = "0.1.0"
__all__ = ["Component", "Site", "load_model", "__version__"]
