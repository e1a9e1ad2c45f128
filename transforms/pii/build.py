"""Compile the redaction engine's hot modules with Cython (optional; ``make`` runs it).

    python -m transforms.pii.build            # warn and exit 0 if it cannot build
    python -m transforms.pii.build --require  # fail instead (CI, the container image)

Compiles ``transforms.pii.compiled.COMPILED_MODULES`` of the ``transforms.pii`` package that
Python imports (the checkout in a development install, site-packages in the container image),
unchanged and under their own module names, into its ``_compiled`` directory, then writes the
manifest that ``transforms.pii.compiled.compiled_dir`` checks. Needs Cython (the ``accel`` and
``dev`` extras) and a C compiler. The build happens in a temporary directory; the old build is
replaced only when the new one is complete, manifest last.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path


def _package_dir() -> Path:
    spec = importlib.util.find_spec("transforms.pii")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("transforms.pii is not importable: install the project first")
    # The last entry is the package's own directory (a current build is inserted first).
    return Path(list(spec.submodule_search_locations)[-1])


def build(package_dir: Path) -> Path:
    """Builds the extension modules and returns the directory now holding them."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    from transforms.pii.compiled import (
        COMPILED_DIR,
        COMPILED_MODULES,
        MANIFEST,
        source_digests,
    )

    digests = source_digests(package_dir)
    with tempfile.TemporaryDirectory(prefix="compile-redaction-") as tmp:
        work = Path(tmp)
        tree = work / "src" / "transforms" / "pii"
        tree.mkdir(parents=True)
        for package in (tree.parent, tree):
            (package / "__init__.py").write_text("")
        for name in COMPILED_MODULES:
            shutil.copyfile(package_dir / f"{name}.py", tree / f"{name}.py")
        extensions = cythonize(
            [Extension(f"transforms.pii.{n}", [str(tree / f"{n}.py")]) for n in COMPILED_MODULES],
            compiler_directives={"language_level": 3},
            quiet=True,
        )
        command = Distribution({"ext_modules": extensions}).get_command_obj("build_ext")
        command.build_lib = str(work / "lib")
        command.build_temp = str(work / "temp")
        command.ensure_finalized()
        command.run()
        built = sorted((work / "lib" / "transforms" / "pii").glob("*.so"))
        if len(built) != len(COMPILED_MODULES):
            raise RuntimeError(f"expected {len(COMPILED_MODULES)} modules, built {built}")
        target = package_dir / COMPILED_DIR
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for path in built:
            shutil.copyfile(path, target / path.name)
    manifest = {"cache_tag": sys.implementation.cache_tag, "sources": digests}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require", action="store_true", help="fail if it cannot build")
    args = parser.parse_args(argv)
    try:
        target = build(_package_dir())
    except Exception as exc:  # no Cython, no compiler: the sources run as they are
        if args.require:
            raise
        print(
            f"compile_redaction: not built ({type(exc).__name__}: {exc}); the redaction engine "
            "runs as plain Python (same results, ~10% more CPU per event)",
            file=sys.stderr,
        )
        return 0
    print(f"compile_redaction: compiled redaction modules in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
