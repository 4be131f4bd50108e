"""The documented install command works: `pip install --no-build-isolation ./python` into a
throwaway virtual environment (--system-site-packages: Debian's numpy/pandas/dask), then
clipeval imports from anywhere with the bundled libclip.so, and clipeval-dask runs."""
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.join(HERE, "..", "..", "python")


def test_pip_install_into_a_venv(tmp_path, build_dir, tiny_model):
    lib = os.path.join(build_dir, "libclip.so")
    if not os.path.exists(lib):
        pytest.fail(f"{lib} not built (make builds it)")
    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"python3 -m venv failed (python3-venv is in .ci/deps): {r.stderr}")
    # a copy of python/: the build writes build/ and *.egg-info next to setup.py
    src = tmp_path / "src"
    shutil.copytree(PYDIR, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                              "__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLIPEVAL_LIB")}
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation",
                        "--no-index", str(src)], capture_output=True, text=True,
                       env=dict(env, CLIPEVAL_LIB=lib), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    probe = ("import clipeval, sys\n"
             "m = clipeval.Model(sys.argv[1], device='cpu', threads=1)\n"
             "print(clipeval.lib_path()); print(m.encode_texts(['a cat']).shape)\n")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", probe, tiny_model],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    lib_used, shape = r.stdout.split("\n")[:2]
    assert lib_used.startswith(str(venv)) and lib_used.endswith("clipeval/libclip.so.0")
    assert shape == "(1, 40)"
    r = subprocess.run([str(venv / "bin" / "clipeval-dask"), "--help"], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0 and "--scheduler" in r.stdout, r.stderr
