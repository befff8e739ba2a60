"""The spec documents the API writes: one readable YAML file per object, under the Workspace's `api_directory`,
read by plan and apply like every other spec file. Where the spec directory is a git repository, each applied
change is committed with its user as the author and the operation's id in the message."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from pgaasctl import workspace
from pgaasctl.api.errors import ApiError
from pgaasctl.spec.desired import DesiredState


def api_root(loaded: workspace.LoadedWorkspace) -> Path:
    return loaded.spec_dir / loaded.desired.workspace.api_directory


def document_path(loaded: workspace.LoadedWorkspace, kind: str, pair: str, name: str) -> Path:
    return api_root(loaded) / pair / f"{kind.lower()}-{name}.yaml"


def declared_by_hand(loaded: workspace.LoadedWorkspace, address: str) -> str | None:
    """'file:line' of a document declaring `address` outside the API's directory, or None."""
    found = next((d for d in loaded.desired.documents if d.address == address), None)
    if found is None:
        return None
    return None if by_api(loaded, found.source.file) else f"{found.source.file}:{found.source.line}"


def by_api(loaded: workspace.LoadedWorkspace, file: Path | str) -> bool:
    """Whether a spec file is one the API wrote (under its directory). Spec files are loaded by absolute path."""
    return Path(os.path.abspath(file)).is_relative_to(os.path.abspath(api_root(loaded)))


def refuse_hand_written(loaded: workspace.LoadedWorkspace, address: str) -> None:
    where = declared_by_hand(loaded, address)
    if where is not None:
        raise ApiError(409, f"{address} is declared by hand in {where}; change it there (in git), not through the API",
                       reason="declared_by_hand")


def write_document(path: Path, document: dict[str, Any]) -> str | None:
    """Write the document (atomically); returns what the file held before, for undoing."""
    previous = path.read_text(encoding="utf-8") if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# written by pgaasctl serve; edits by hand are read like any spec\n" + yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return previous


def restore(path: Path, previous: str | None) -> None:
    """Put a file back as it was (None: it was not there)."""
    if previous is None:
        path.unlink(missing_ok=True)
        return
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(previous, encoding="utf-8")
    os.replace(temporary, path)


def load_checked(path: Path) -> DesiredState:
    """The workspace as it now reads; a problem the new document made is a 422 naming it."""
    try:
        return workspace.load(path).desired
    except Exception as exc:  # noqa: BLE001 - SpecError and friends: said to the caller, with file and line
        message = getattr(exc, "message", str(exc))
        raise ApiError(422, f"the specs would not load with this change: {message}", reason="invalid") from None


def commit(spec_dir: Path, paths: list[Path], user: str, message: str) -> str | None:
    """Commit `paths` (added, changed or removed) as `user`, when the spec directory is in a git repository;
    returns the commit's id."""
    top = _git(spec_dir, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    relative = [os.path.relpath(p, top.strip()) for p in paths]
    if _git(spec_dir, "add", "-A", "--", *relative) is None:
        return None
    author = f"{user} <{user}@pgaasctl>"
    done = _git(spec_dir, "-c", f"user.name={user}", "-c", f"user.email={user}@pgaasctl", "commit", "-q",
                f"--author={author}", "-m", message, "--", *relative)
    return None if done is None else (_git(spec_dir, "rev-parse", "HEAD") or "").strip() or None


def _git(where: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None
