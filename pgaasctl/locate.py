"""Where a workspace is: its root, the spec directory loaded, the part a PATH names, and where its state lives.

A workspace's root is the directory of its Workspace document, or the spec directory given when there is
none. Relative paths of the Workspace document (store, local_dir) resolve against the root, never against
the current directory, so a command gives the same answer from any directory. A PATH inside a workspace
(one file, or a subdirectory) names a part of it: the whole workspace is loaded, and only the objects the
part declares are planned, so objects declared elsewhere are never planned for destroy because one file
was named.

Overrides, strongest first (each relative path in a flag or variable is relative to the current directory,
as any path typed in a shell):
  state store:  --store URL  >  $PGAASCTL_STORE  >  Workspace spec.store  >  sqlite:///state/pgaasctl.db
  local_dir:    $PGAASCTL_LOCAL_DIR  >  Workspace spec.local_dir  >  state/local
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pgaasctl.errors import SpecError
from pgaasctl.spec.loader import parse_text, spec_files
from pgaasctl.spec.models import WorkspaceDoc, WorkspaceSpec

STORE_ENV = "PGAASCTL_STORE"
LOCAL_DIR_ENV = "PGAASCTL_LOCAL_DIR"
_MENTIONS_WORKSPACE = re.compile(r"\bWorkspace\b")
_YAML = (".yaml", ".yml")


@dataclass(frozen=True)
class Setting:
    """A resolved value and where it came from, for `status` and error messages."""

    value: str
    source: str


@dataclass(frozen=True)
class WorkspaceLocation:
    root: Path  # relative paths of the Workspace document resolve here
    spec_dir: Path  # loaded recursively: the whole workspace
    part: Path | None  # the file or subdirectory PATH named inside the workspace; None: all of it
    workspace_file: Path | None
    spec: WorkspaceSpec

    def store(self, flag: str | None) -> Setting:
        if flag:
            return Setting(_absolute_sqlite(flag, Path.cwd()), "--store")
        if os.environ.get(STORE_ENV):
            return Setting(_absolute_sqlite(os.environ[STORE_ENV], Path.cwd()), f"${STORE_ENV}")
        source = f"Workspace document {self.workspace_file}" if self._declares("store") else f"default, root {self.root}"
        return Setting(_absolute_sqlite(self.spec.store, self.root), source)

    def local_dir(self) -> Setting:
        if os.environ.get(LOCAL_DIR_ENV):
            return Setting(str(_absolute(os.environ[LOCAL_DIR_ENV], Path.cwd())), f"${LOCAL_DIR_ENV}")
        source = f"Workspace document {self.workspace_file}" if self._declares("local_dir") else f"default, root {self.root}"
        return Setting(str(_absolute(self.spec.local_dir, self.root)), source)

    def cloud_dir(self) -> Path:
        return _absolute(self.spec.cloud_dir, self.root)

    def secrets_dir(self) -> Path:
        return _absolute(self.spec.secrets_dir, self.root)

    def _declares(self, field: str) -> bool:
        return self.workspace_file is not None and field in self.spec.model_fields_set


def locate(path: Path) -> WorkspaceLocation:
    """Find the workspace `path` belongs to. Raises SpecError when a single file belongs to none."""
    path = Path(os.path.abspath(path.expanduser()))
    if not path.exists():
        raise SpecError([f"{path}: no such file or directory"])
    if path.is_dir():
        found = _workspace_docs(spec_files(path))
        if len(found) > 1:
            raise SpecError([f"{found[1][0]}: a second Workspace document (the first is in {found[0][0]}); "
                             "a workspace has one"])
        if found:
            file, spec = found[0]
            return WorkspaceLocation(root=file.parent, spec_dir=path, part=None, workspace_file=file, spec=spec)
        above = _workspace_above(path.parent)
        if above is None:
            return WorkspaceLocation(root=path, spec_dir=path, part=None, workspace_file=None, spec=WorkspaceSpec())
        file, spec = above
        return WorkspaceLocation(root=file.parent, spec_dir=file.parent, part=path, workspace_file=file, spec=spec)
    above = _workspace_above(path.parent)
    if above is None:
        raise SpecError([
            f"{path}: this file belongs to no workspace (no Workspace document in {path.parent} or above it)",
            "  Name the spec directory instead, or add a `kind: Workspace` document beside the specs.",
        ])
    file, spec = above
    return WorkspaceLocation(root=file.parent, spec_dir=file.parent, part=path, workspace_file=file, spec=spec)


def _shared_roots() -> set[Path]:
    """Directories that hold unrelated things: a stray workspace.yaml there must never capture specs below."""
    roots = {Path("/"), Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")}
    try:
        roots.add(Path.home())
    except RuntimeError:
        pass
    return roots


def _workspace_above(start: Path) -> tuple[Path, WorkspaceSpec] | None:
    """The Workspace document in `start` or the nearest directory above it, looking only at the YAML files
    directly in each directory; the search stops at a git repository's top and never looks in /, the home
    directory or a temporary directory."""
    shared = _shared_roots()
    for directory in (start, *start.parents):
        if directory in shared:
            return None
        try:
            files = sorted(p for p in directory.iterdir()
                           if p.suffix.lower() in _YAML and p.is_file() and not p.name.startswith("."))
        except OSError:
            return None
        found = _workspace_docs(files)
        if found:
            return found[0]
        if (directory / ".git").exists():
            return None
    return None


def _workspace_docs(files: list[Path]) -> list[tuple[Path, WorkspaceSpec]]:
    """The Workspace documents in `files`: a cheap text check first, then the file is parsed."""
    out: list[tuple[Path, WorkspaceSpec]] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # reported by the full load, with the file's name
        if not _MENTIONS_WORKSPACE.search(text):
            continue
        docs, problems = parse_text(text, file)
        workspace_problems = [p for p in problems if "Workspace" in p]
        if workspace_problems:
            raise SpecError(workspace_problems)
        out.extend((file, d.doc.spec) for d in docs if isinstance(d.doc, WorkspaceDoc))
    return out


def _absolute(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _absolute_sqlite(url: str, base: Path) -> str:
    """sqlite:///relative.db made absolute against `base`; other URLs as they are."""
    if not url.startswith("sqlite:///"):
        return url
    raw = url.removeprefix("sqlite:///")
    return "sqlite:///" + str(_absolute(raw, base))
