"""Packaging beyond pyproject.toml: the top-level ``kernels/`` and ``configs/`` folders (the source of
truth in the repository) are installed as ``simharmon/kernels`` and ``simharmon/configs``, where
``simharmon.bundled.bundled_dir`` finds them from a wheel; in the source tree it finds the originals.
"""

from setuptools import find_packages, setup

BUNDLED = {"simharmon.kernels": "kernels", "simharmon.kernels.host": "kernels/host", "simharmon.configs": "configs"}

setup(packages=find_packages(include=["simharmon", "simharmon.*"]) + list(BUNDLED), package_dir=BUNDLED)
