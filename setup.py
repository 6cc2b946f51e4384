"""The one compiled part of the engine: the voxel loops of a click's paste-back
(fastsam3d_core/geometry/_voxels.c). Everything else is in pyproject.toml.

The extension is optional: where no C compiler is found (a Windows or macOS machine without
build tools), installation goes on without it and the engine uses NumPy for the same loops
(fastsam3d_core/geometry/voxel_kernels.py), giving the same masks, more slowly.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptimisedBuildExt(build_ext):
    """Builds with the compiler's full optimisation (the loops are vectorised at -O3)."""

    def build_extensions(self) -> None:
        flags = ["/O2"] if self.compiler.compiler_type == "msvc" else ["-O3"]
        for extension in self.extensions:
            extension.extra_compile_args = flags
        super().build_extensions()


def voxel_extension(root: str = ".") -> Extension:
    """The extension, its source in ``root`` (the client's setup.py builds it from ``..``)."""
    source = f"{root}/fastsam3d_core/geometry/_voxels.c"
    return Extension("fastsam3d_core.geometry._voxels", sources=[source], optional=True)


# The client's setup.py reads the two definitions above without building (run_name differs).
if __name__ == "__main__":
    setup(ext_modules=[voxel_extension()], cmdclass={"build_ext": OptimisedBuildExt})
