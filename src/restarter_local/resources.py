"""Where the embedded AWS finds the project's own files: `template.yaml`, the ASL of the state
machines and the sample events.

They live at the top of the repository (SAM and `sam local invoke` read them there). The
package carries them as `restarter_local/bundled/` (symlinks into the repository, copied into
the wheel at build time), so a non-editable `pip install` runs `restarter demo` without a
checkout. A checkout whose symlinks are missing (a file system without them) falls back to
the repository itself.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

BUNDLE = "bundled"
REPO_ROOT = Path(__file__).resolve().parents[2]


class ResourceNotFoundError(FileNotFoundError):
    """The package was installed without its bundled project files."""


@cache
def project_root() -> Path:
    """The folder holding `template.yaml`, `statemachine/` and `events/`."""
    bundled = Path(str(files("restarter_local").joinpath(BUNDLE)))
    for candidate in (bundled, REPO_ROOT):
        if (candidate / "template.yaml").is_file() and (candidate / "statemachine").is_dir():
            return candidate
    raise ResourceNotFoundError(
        f"template.yaml and statemachine/ are neither in {bundled} nor in {REPO_ROOT}: "
        "reinstall restarter (its wheel carries them) or run from a checkout"
    )


def template_path() -> Path:
    return project_root() / "template.yaml"


def project_file(relative: str) -> Path:
    """A file named relative to the template, as `DefinitionUri` names the ASL."""
    return project_root() / relative


def events_dir() -> Path:
    """The sample events (`events/*.json`), valid for `sam local invoke -e` and `restarter invoke -e`."""
    return project_root() / "events"
