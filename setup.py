"""Packaging: the metadata lives in setup.cfg.

``twisted.plugins`` is listed by hand: the directory has no ``__init__.py`` on
purpose (it must not shadow Twisted's own package), so ``find_packages`` cannot
see it. See ../shared/STYLE.md, habit 1.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["cloudp2p", "cloudp2p.*"]) + ["twisted.plugins"],
)
