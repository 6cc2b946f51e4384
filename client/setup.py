"""Build settings pyproject.toml cannot hold: the distribution packs ../fastsam3d_core, a folder
outside this one, so it is built as a wheel only (``pip install ./client``, ``pip wheel
./client``)."""

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.sdist import sdist


class NoSourceDistribution(sdist):
    """Refuses: an sdist cannot hold ../fastsam3d_core, and setuptools would copy it into this
    folder while trying."""

    def run(self) -> None:
        raise SystemExit(
            "fastsam3d-client is built as a wheel only (pip install ./client, or pip wheel "
            "./client): its package lies outside this folder"
        )


# pip < 21.3 builds a copy of this folder made elsewhere, without the ../fastsam3d_core it packs;
# the build would then fail later, or make a wheel without the package.
if not (Path(__file__).resolve().parent.parent / "fastsam3d_core" / "__init__.py").is_file():
    raise SystemExit(
        "fastsam3d-client needs pip >= 21.3 (it builds ../fastsam3d_core in place), or "
        "../fastsam3d_core is missing: upgrade pip with python -m pip install -U pip, then "
        "pip install ./client from the repository root"
    )

# The build's metadata folder here: by default setuptools writes it beside the package, in the
# repository's root, where a Python started there would take it for an installed distribution.
# The compiled voxel loops, defined once in the main distribution's setup.py (optional there too).
main_build = runpy.run_path(
    str(Path(__file__).resolve().parent.parent / "setup.py"), run_name="build"
)
setup(
    ext_modules=[main_build["voxel_extension"]("..")],
    cmdclass={"sdist": NoSourceDistribution, "build_ext": main_build["OptimisedBuildExt"]},
    options={"egg_info": {"egg_base": "."}},
)
