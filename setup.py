"""Packaging: the metadata lives in setup.cfg.

``twisted.plugins`` is listed by hand: the directory has no ``__init__.py`` on
purpose (it must not shadow Twisted's own package), so ``find_packages`` cannot
see it. See ../shared/STYLE.md, habit 1.

The data folders (``cloudp2p/data/covers``: the default cover images;
``cloudp2p/web/static``: the web app's page, script and style) are listed
too: Python can import any folder, so setuptools wants every folder that ships
files named as a package (its package data is in setup.cfg).
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["cloudp2p", "cloudp2p.*"])
    + ["cloudp2p.data", "cloudp2p.data.covers", "cloudp2p.web.static", "twisted.plugins"],
)
