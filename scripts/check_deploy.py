#!/usr/bin/env python3
"""Build the stack as `sam deploy` would ship it and check what each function's artifact holds.

The tests run the Lambda code from the source tree; what Lambda runs is what `sam build` makes of
`functions/` and `functions/requirements.txt`. This script, offline from AWS (no credentials: it
only reaches PyPI, through pip, for the artifacts' dependencies):

1. installs the deploy tools of `ci/deploy-tools.txt` in a venv of their own (`.ci/deploy-venv`):
   aws-sam-cli pins a boto3 that conflicts with the project's, so they cannot share `.venv`;
2. finds a python3.12 (the template's Runtime: `sam build` installs dependencies with it) and
   fails with a clear message when there is none;
3. runs `sam build --build-dir .aws-sam/build`;
4. checks that every function's artifact holds the Lambda package and its runtime dependencies
   only (no moto, restarter_local, restarter_cli, tests, test tools) and prints its size,
   unpacked and zipped (as `sam deploy` uploads it);
5. runs `sam validate --lint --region us-east-1`.

Exit status: 0 when every step passed, 1 otherwise.
Usage: python scripts/check_deploy.py [--skip-build]   (--skip-build: check the last build)
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "ci" / "deploy-tools.txt"
VENV = REPO / ".ci" / "deploy-venv"
RUNTIME_BIN = REPO / ".ci" / "deploy-bin"
BUILD_DIR = REPO / ".aws-sam" / "build"
RUNTIME = "python3.12"
# top-level names an artifact must not hold: the local runtime, the CLI, moto and test tooling
FORBIDDEN = ("moto", "restarter_local", "restarter_cli", "tests", "pytest", "_pytest", "xdist", "mypy")
MB = 1024 * 1024


def _run(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode == 0


def _pinned_sam_version() -> str:
    for line in TOOLS.read_text().splitlines():
        if line.strip().startswith("aws-sam-cli=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit(f"error: {TOOLS.relative_to(REPO)} pins no aws-sam-cli==X")


def ensure_tools() -> Path:
    """The venv's `sam`, installed from the pinned file unless the right version is there."""
    sam = VENV / "bin" / "sam"
    wanted = _pinned_sam_version()
    if sam.exists():
        out = subprocess.run([str(sam), "--version"], capture_output=True, text=True, check=False).stdout
        if out.strip().endswith(wanted):
            return sam
    print(f"==> installing {TOOLS.relative_to(REPO)} into {VENV.relative_to(REPO)}", flush=True)
    if not (VENV / "bin" / "python").exists() and not _run([sys.executable, "-m", "venv", str(VENV)]):
        raise SystemExit("error: could not create the deploy tools venv")
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not _run([*pip, "-r", str(TOOLS)]):
        raise SystemExit("error: could not install the deploy tools")
    return sam


def _is_runtime(candidate: str) -> bool:
    """A pyenv shim is on PATH even when its version is not selected: run it to know."""
    proc = subprocess.run(
        [candidate, "-c", "import sys, pip; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0 and proc.stdout.strip() == RUNTIME.removeprefix("python")


def find_runtime() -> Path:
    """A python3.12 with pip: on PATH, else a pyenv or system install."""
    candidates = [shutil.which(RUNTIME) or ""]
    for root in (os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv"), "/root/.pyenv"):
        if root:
            candidates += sorted(glob.glob(f"{root}/versions/3.12*/bin/{RUNTIME}"), reverse=True)
    candidates += [f"/usr/local/bin/{RUNTIME}", f"/usr/bin/{RUNTIME}"]
    for candidate in candidates:
        if candidate and Path(candidate).exists() and _is_runtime(candidate):
            return Path(candidate)
    raise SystemExit(
        f"error: no {RUNTIME} with pip found (PATH, pyenv, /usr). sam build installs the functions'"
        f" dependencies with the template's Runtime: install Python 3.12 (e.g. `pyenv install 3.12`)"
        f" or put a {RUNTIME} on PATH"
    )


def sam_environment(runtime: Path) -> dict[str, str]:
    """PATH starts with a folder holding only `python3.12` (nothing else of that install shadows
    the caller's python3); no telemetry. The folder is outside the venv: a `pyvenv.cfg` in the
    link's parent would make the linked python take the venv's home, and lose its pip."""
    shim = RUNTIME_BIN
    shim.mkdir(parents=True, exist_ok=True)
    link = shim / RUNTIME
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(runtime)
    env = dict(os.environ)
    env["PATH"] = f"{shim}{os.pathsep}{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["SAM_CLI_TELEMETRY"] = "0"
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return env


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _zipped_bytes(path: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(path.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(path))
    return buffer.getbuffer().nbytes


def check_artifacts() -> bool:
    """Every function's artifact: what it must not hold, and its size."""
    artifacts = sorted(p for p in BUILD_DIR.iterdir() if p.is_dir() and (p / "restarter").is_dir())
    if not artifacts:
        print(f"FAILED: no function artifact under {BUILD_DIR.relative_to(REPO)}")
        return False
    ok = True
    zipped: dict[tuple[int, int], int] = {}  # identical trees (same size, file count) zip alike
    print(f"{'artifact':<32} {'unpacked MB':>11} {'zipped MB':>9} {'restarter/ MB':>13}  forbidden")
    for artifact in artifacts:
        found = sorted(name for name in FORBIDDEN if (artifact / name).exists())
        found += sorted(p.name for p in artifact.glob("*.dist-info") if p.name.split("-")[0].lower() in FORBIDDEN)
        ok = ok and not found
        size = _tree_bytes(artifact)
        key = (size, sum(1 for _ in artifact.rglob("*")))
        if key not in zipped:
            zipped[key] = _zipped_bytes(artifact)
        code = _tree_bytes(artifact / "restarter")
        sizes = f"{size / MB:>11.1f} {zipped[key] / MB:>9.1f} {code / MB:>13.2f}"
        print(f"{artifact.name:<32} {sizes}  {', '.join(found) or '-'}")
    top = sorted(p.name for p in artifacts[0].iterdir() if p.is_dir() and not p.name.endswith(".dist-info"))
    print(f"top-level packages of an artifact: {', '.join(top)}")
    print("artifacts: only Lambda code and its runtime dependencies" if ok else "FAILED: forbidden content above")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-build", action="store_true", help="check the last build instead of building")
    args = parser.parse_args()
    sam = ensure_tools()
    env = sam_environment(find_runtime())
    results: dict[str, bool] = {}
    if not args.skip_build:
        print("==> sam build", flush=True)
        results["sam build"] = _run(
            [str(sam), "build", "--template-file", "template.yaml", "--build-dir", str(BUILD_DIR)], env
        )
    if results.get("sam build", True):
        print("==> artifacts", flush=True)
        results["artifacts"] = check_artifacts()
    print("==> sam validate --lint", flush=True)
    results["sam validate --lint"] = _run([str(sam), "validate", "--lint", "--region", "us-east-1"], env)
    failed = [name for name, passed in results.items() if not passed]
    print("check_deploy: " + (f"FAILED ({', '.join(failed)})" if failed else "OK"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
