

# First, so the tests' shape-checking import hook (tests/conftest.py) finds its checker while
# it wraps the rest of the package.
from interp.core import shapes as shapes  # noqa: E402,F401
