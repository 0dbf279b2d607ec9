"""Build the optional C extension `upwire._speedups`; everything else is in pyproject.toml.

The extension is optional: when it cannot be compiled (no compiler, no Python headers), the install goes on
and upwire uses the pure-Python twins of its functions.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[Extension("upwire._speedups", ["upwire/_speedups.c"], optional=True)],
)
