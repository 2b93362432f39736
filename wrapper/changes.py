"""What a command changed in its working tree, read from git without touching the user's index,
HEAD or branches: before and after the command, the whole tree (untracked files included,
.gitignore respected) is written to git's object store through a private index file, and the two
trees are compared. Also the agent's own worktree (``--worktree``)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from shared.api import ChangeSet, FileChange

log = logging.getLogger("onsembl.agent")

#: Largest patch sent with a command; the rest is cut and the change set says so.
MAX_PATCH_BYTES = 200 * 1024
MAX_FILES = 500


def _git(args: list[str], cwd: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"git {args[0]} failed")
    return done.stdout


def repository_root(path: str) -> str | None:
    try:
        return _git(["rev-parse", "--show-toplevel"], path).strip() or None
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return None


def ensure_worktree(repository: str, target: Path, branch: str) -> str:
    """The agent's own worktree and branch of ``repository`` at ``target``, created on first use."""
    root = repository_root(repository)
    if root is None:
        raise RuntimeError(f"--worktree needs --workdir to be inside a git repository; {repository} is not")
    if (target / ".git").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    branches = _git(["branch", "--list", branch], root).strip()
    args = (
        ["worktree", "add", str(target), branch]
        if branches
        else ["worktree", "add", "-b", branch, str(target)]
    )
    _git(args, root)
    log.info("created worktree %s on branch %s", target, branch)
    return str(target)


def snapshot(workdir: str) -> str | None:
    """The id of a git tree holding the working tree as it is now; None outside a repository."""
    root = repository_root(workdir)
    if root is None:
        return None
    fd, index = tempfile.mkstemp(prefix="onsembl-index-")
    os.close(fd)
    os.unlink(index)
    env = dict(os.environ, GIT_INDEX_FILE=index)
    try:
        # Start from HEAD's tree when there is one, so unchanged files cost nothing to hash.
        try:
            _git(["read-tree", "HEAD"], root, env)
        except RuntimeError:
            pass
        _git(["add", "-A", "."], root, env)
        return _git(["write-tree"], root, env).strip()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not snapshot %s: %s", workdir, exc)
        return None
    finally:
        Path(index).unlink(missing_ok=True)


def compare(workdir: str, before: str, after: str) -> ChangeSet:
    root = repository_root(workdir) or workdir
    files: list[FileChange] = []
    status_of: dict[str, str] = {}
    for line in _git(["diff", "--name-status", "--no-renames", before, after], root).splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            status_of[parts[-1]] = {"A": "added", "D": "deleted"}.get(parts[0][:1], "modified")
    for line in _git(["diff", "--numstat", "--no-renames", before, after], root).splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        added, removed, path = parts
        binary = added == "-"
        files.append(
            FileChange(
                path=path,
                status=status_of.get(path, "modified"),
                added=0 if binary else int(added),
                removed=0 if binary else int(removed),
                binary=binary,
            )
        )
    patch = _git(["diff", "--no-renames", before, after], root) if files else ""
    raw = patch.encode()
    truncated = len(raw) > MAX_PATCH_BYTES or len(files) > MAX_FILES
    if len(raw) > MAX_PATCH_BYTES:
        patch = raw[:MAX_PATCH_BYTES].decode(errors="ignore")
    return ChangeSet(
        files=files[:MAX_FILES],
        added=sum(f.added for f in files),
        removed=sum(f.removed for f in files),
        patch=patch,
        truncated=truncated,
    )


async def snapshot_async(workdir: str) -> str | None:
    return await asyncio.to_thread(snapshot, workdir)


async def changes_since(workdir: str, before: str | None) -> ChangeSet | None:
    if before is None:
        return None
    after = await asyncio.to_thread(snapshot, workdir)
    if after is None:
        return None
    try:
        return await asyncio.to_thread(compare, workdir, before, after)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not compare the working tree: %s", exc)
        return None
