"""Package layout: ``memtui/`` is the console, ``engine/`` installs as ``memtui.engine``
and ``themes/`` as ``memtui.themes`` (see the developers' brief)."""
from setuptools import find_packages, setup

packages = (
    find_packages(include=["memtui", "memtui.*"])
    + ["memtui.engine"] + [f"memtui.engine.{p}" for p in find_packages("engine")]
    + ["memtui.themes"]
)
setup(
    packages=packages,
    package_dir={"memtui": "memtui", "memtui.engine": "engine", "memtui.themes": "themes"},
    package_data={"memtui.engine.demo": ["weights/*.*", "weights/*/*.*", "weights/*/*/*.*"]},
)
