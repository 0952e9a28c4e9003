"""The default configuration ships inside the package.

A wheel is built from a copy of the source tree (as ``pip install .`` builds it; the
build backend comes from the configured package index or pip's cache, no network index
is needed). Fast check: the wheel holds ``tradeguard/paper.toml`` and, imported straight
from the wheel, ``load_settings()`` reads it through importlib.resources. Full check: the
wheel installed (not editable) into a fresh virtual environment, whose dependencies come
from this environment's site-packages, runs ``check-config`` and ``run`` from another
directory with nothing but the installed package to find the default in.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = tuple(pattern.rstrip("*") for pattern in tomllib.loads(
    (ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"])
"""The packages the project ships, as pyproject.toml lists them."""

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the source tree."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    out = base / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, timeout=240, cwd=base,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    [built] = out.glob("tradeguard-*.whl")
    return built


def test_the_wheel_holds_the_default_and_loads_it_through_importlib_resources(
        wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        packaged = archive.read("tradeguard/paper.toml")
    assert packaged == (ROOT / "config" / "paper.toml").read_bytes()
    probe = (
        "import tradeguard, tradeguard.settings as s\n"
        "print(tradeguard.__file__)\n"
        "print(s.DEFAULT_CONFIG)\n"
        "settings = s.load_settings()\n"
        "print([c.name for c in settings.connector_configs()], [t.name for t in settings.strategies])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(wheel)})
    assert result.returncode == 0, result.stderr
    module, default, names = result.stdout.splitlines()
    assert module.startswith(str(wheel) + os.sep)  # imported from the wheel, not the source tree
    assert default == f"{wheel}{os.sep}tradeguard{os.sep}paper.toml"
    assert names == "['paper'] ['sample']"


def test_a_non_editable_install_runs_the_default_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=240,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # The dependencies (pykka, msgspec, quickfix, ...) from this environment, after the
    # fresh site-packages; .pth files found there are not run, so its editable tradeguard
    # stays out of the way.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRADEGUARD_STATE_DIR")}
    where = subprocess.run([str(python), "-c", "import tradeguard.settings as s; print(s.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=elsewhere, env=env)
    assert where.stdout.startswith(site), where.stdout + where.stderr

    tradeguard = str(venv / "bin" / "tradeguard")
    check = subprocess.run([tradeguard, "check-config"], capture_output=True, text=True, timeout=60,
                           cwd=elsewhere, env=env)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("ok: mode paper; connectors: paper (paper); strategies: sample")

    with open(tmp_path / "run.out", "wb") as out:
        proc = subprocess.Popen([tradeguard, "run"], cwd=elsewhere, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            status = subprocess.run([tradeguard, "status"], capture_output=True, text=True, timeout=60,
                                    cwd=elsewhere, env=env)
            if status.returncode == 0 and status.stdout.startswith("mode: LIVE"):
                break
            time.sleep(0.5)
        assert status is not None and status.stdout.startswith("mode: LIVE"), (
            (tmp_path / "run.out").read_text()[-3000:])
        assert (elsewhere / "state" / "journal.sqlite3").exists()  # the default's ./state
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
