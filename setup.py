"""Declares the compiled extension; everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [
            Extension(name, [f"{name.replace('.', '/')}.pyx"], extra_compile_args=["-O3"])
            for name in ("fastroute._match", "fastroute._http")
        ],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
            # plain builtin methods: CPython calls them faster than function objects;
            # clinic-style signatures keep inspect.signature (and stubtest) working
            "binding": False,
            "embedsignature.format": "clinic",
            # a Router and a parsed head own C memory: no automatic pickling, no doctest dict
            "auto_pickle": False,
            "autotestdict": False,
        },
    ),
)
