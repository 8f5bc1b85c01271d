#!/usr/bin/env python3
"""Developer entry point that needs nothing but Python 3.11+.

    python3 dev.py demo          # install into .venv, then run `python -m workbench demo`
    python3 dev.py test [ARGS]   # install (with dev extras), lint, then run the test suite
    python3 dev.py lint          # just ruff and mypy
    python3 dev.py bench [ARGS]  # install, then run the benchmarks
    python3 dev.py install       # just (re)install

    python3 dev.py --venv DIR CMD ...   # the same in another virtual environment (CI's smoke run
                                        # makes a fresh one with the newest Python it has)

The virtual environment (.venv unless --venv) is made by the Python running this script, and is
reused; it is reinstalled only when pyproject.toml changes. --venv is a flag, not an environment
variable, because WORKBENCH_* variables belong to the product, which rejects unknown ones.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".workbench-install"


def use_venv(path: str) -> None:
    """Point every command at the virtual environment in ``path`` (made on first use)."""
    global VENV, PY, STAMP
    VENV = Path(path).expanduser().absolute()
    PY = VENV / "bin" / "python"
    STAMP = VENV / ".workbench-install"


def _run(*cmd: str | Path, **kw: object) -> None:
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)  # type: ignore[arg-type]


def install(extras: str = "dev") -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py itself runs on whatever python3 is
        sys.exit(f"Workbench needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if not (STAMP.exists() and STAMP.read_text() == want):
        _install(extras)
        STAMP.write_text(want)
    compile_bytecode()


def compile_bytecode() -> None:
    """Byte-compile the package (and the benchmarks), as pip does for a regular install but not
    for an editable one. Where bytecode is never written (PYTHONDONTWRITEBYTECODE=1, common in
    containers and set on our CI machines) every process otherwise compiles the package from
    source as it imports it: ~0.1 s of CPU more for each worker process to start, and for each
    process a test starts (benchmarks/NOTES.md, session 11). Up-to-date files are skipped. Best
    effort: a file that does not compile (Python 3.13.0 cannot write a constant holding a lone
    surrogate, as workbench/api/models.py has) is imported from source as before."""
    cmd = [str(PY), "-m", "compileall", "-q", "workbench", "benchmarks"]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    if subprocess.call(cmd, cwd=ROOT, stdout=subprocess.DEVNULL):
        print("(some files were not byte-compiled; they are compiled as they are imported)",
              file=sys.stderr)


def _install(extras: str) -> None:
    _run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _run(PY, "-m", "pip", "install", "--quiet", "-e", f".[{extras}]", cwd=ROOT)
    if extras == "dev":
        # notebooks run under nbval in a kernel from this venv, whatever else the machine has
        _run(PY, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3",
             "--display-name", "Python 3 (workbench)")


def lint(env: dict[str, str]) -> int:
    """ruff over the code, tests and benchmarks, then mypy over the package (pyproject.toml)."""
    for cmd in (
        [str(PY), "-m", "ruff", "check", "workbench", "tests", "benchmarks", "dev.py"],
        [str(PY), "-m", "mypy"],
    ):
        print("+", " ".join(cmd[1:]), file=sys.stderr, flush=True)
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        if code:
            return code
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--venv"] and len(argv) >= 2:
        use_venv(argv[1])
        argv = argv[2:]
    elif argv[:1] and argv[0].startswith("--venv="):
        use_venv(argv[0].split("=", 1)[1])
        argv = argv[1:]
    cmd, args = (argv[0], argv[1:]) if argv else ("help", [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if cmd == "install":
        install()
        return 0
    if cmd == "demo":
        install()
        return subprocess.call([str(PY), "-m", "workbench", "demo", *args], cwd=ROOT, env=env)
    if cmd == "lint":
        install()
        return lint(env)
    if cmd == "test":
        install()
        if not args:  # the whole suite starts with the static checks (CI runs this command)
            failed = lint(env)
            if failed:
                return failed
        # one pytest run, so one closing line counts everything: tests and nbval'd notebooks
        paths = args or ["tests", "notebooks"]
        return subprocess.call(
            # --nbval-current-env: notebook kernels run on this venv's interpreter, whatever
            # kernelspecs the machine has
            [str(PY), "-m", "pytest", "--nbval-lax", "--nbval-current-env", *paths],
            cwd=ROOT, env=env,
        )
    if cmd == "bench":
        install()
        return subprocess.call([str(PY), "-m", "benchmarks", *args], cwd=ROOT, env=env)
    print(__doc__, file=sys.stderr)
    return 0 if cmd in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
