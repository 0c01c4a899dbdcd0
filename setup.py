"""Package discovery. `nasdsl/` holds the language, space, compiler and CLI; the
top-level `runtime/`, `grammars/` and `spaces/` folders install as `nasdsl.runtime`,
`nasdsl.grammars` and `nasdsl.spaces`. Every package below them is found, not listed
(tests/test_packaging.py imports each module of a built wheel)."""

from setuptools import find_packages, setup

MOUNTED = {"nasdsl.runtime": "runtime", "nasdsl.grammars": "grammars", "nasdsl.spaces": "spaces"}

packages = find_packages(include=["nasdsl", "nasdsl.*"])
for name, folder in MOUNTED.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir={"nasdsl": "nasdsl", **MOUNTED})
