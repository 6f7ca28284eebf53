"""Only the optional C extension lives here; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ndmpd._speedups",
            ["src/ndmpd/_speedups.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,  # no compiler: ndmpd runs on its pure-Python paths
        )
    ]
)
