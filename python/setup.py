"""Builds the clipeval wheel with libclip.so inside it (clipeval/libclip.so.0), so an installed
package needs no CLIPEVAL_LIB. The library is taken from $CLIPEVAL_LIB, else ../build/libclip.so
(run `make` first). Without either, the package is installed alone and looks for the system's
libclip.so.0 (`make install`) at import time."""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


def find_library():
    env = os.environ.get("CLIPEVAL_LIB")
    if env:
        if not os.path.exists(env):
            raise SystemExit(f"CLIPEVAL_LIB={env}: no such file")
        return os.path.realpath(env)
    built = os.path.join(HERE, "..", "build", "libclip.so")
    return os.path.realpath(built) if os.path.exists(built) else None


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        lib = find_library()
        dest = os.path.join(self.build_lib, "clipeval", "libclip.so.0")
        if lib:
            shutil.copyfile(lib, dest)
            os.chmod(dest, 0o755)
            print(f"clipeval: bundling {lib} as clipeval/libclip.so.0")
        else:
            print("clipeval: WARNING: libclip.so not found (run `make` or set CLIPEVAL_LIB); "
                  "the package will use the system's libclip.so.0")


class BinaryDistribution(Distribution):
    """The wheel carries a native library: tag it for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
