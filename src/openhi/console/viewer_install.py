"""Installing the OHIF viewer: fetch the pinned ``@ohif/app`` package with npm, check its integrity,
unpack its prebuilt ``dist/`` into ``<data-dir>/viewer/`` and rewrite it to live under :data:`PREFIX`."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
#: ``npm view @ohif/app@3.13.2 dist.integrity``: the tarball is refused unless it has this digest
INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
#: where openhi serves the dist (the prebuilt files assume ``/``; install rewrites them)
PREFIX = "/ohif/"
MARKER = "openhi-viewer.json"
_WEBPACK_PUBLIC_PATH = '__webpack_require__.p = "/";'


class InstallError(Exception):
    """The viewer could not be installed (npm missing or failing, wrong digest, a bad archive)."""


def integrity_of(path: Path) -> str:
    """The Subresource Integrity string (``sha512-<base64>``) of a file, as npm records it."""
    digest = hashlib.sha512()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def npm_pack(workdir: Path, npm: str = "npm", timeout: float = 600) -> Path:
    """``npm pack @ohif/app@VERSION`` into ``workdir``; the tarball's path.

    Raises:
        InstallError: npm is not on PATH, fails, or produces no tarball.
    """
    found = shutil.which(npm)
    if found is None:
        raise InstallError("npm is not installed (the viewer is fetched from the npm registry with it)")
    try:
        done = subprocess.run(
            [found, "pack", f"{PACKAGE}@{VERSION}", "--json", "--pack-destination", str(workdir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InstallError(f"npm pack did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise InstallError(f"npm pack failed: {(done.stderr or done.stdout).strip()[-800:]}")
    tarballs = sorted(workdir.glob("*.tgz"))
    if not tarballs:
        raise InstallError("npm pack produced no tarball")
    return tarballs[0]


def verify(tarball: Path) -> None:
    """Raises InstallError unless ``tarball`` has the pinned :data:`INTEGRITY`."""
    found = integrity_of(tarball)
    if found != INTEGRITY:
        raise InstallError(
            f"{tarball.name} is not {PACKAGE}@{VERSION}: integrity {found}, expected {INTEGRITY}"
        )


def unpack_dist(tarball: Path, target: Path) -> None:
    """Extract the package's ``dist/`` (only regular files and folders, no path leaving ``target``).

    Raises:
        InstallError: not a gzip tar, or no ``package/dist/index.html`` in it.
    """
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                name = member.name
                if not name.startswith("package/dist/") or not (member.isfile() or member.isdir()):
                    continue
                relative = name[len("package/dist/") :]
                parts = relative.split("/")
                if not relative or any(p in ("", ".", "..") for p in parts) or relative.startswith("/"):
                    continue
                destination = target.joinpath(*parts)
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                if source is None:
                    continue
                with source, destination.open("wb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InstallError(f"cannot unpack {tarball.name}: {exc}") from None
    if not (target / "index.html").is_file():
        raise InstallError(f"{tarball.name} has no package/dist/index.html")


def rewrite_dist(root: Path, prefix: str = PREFIX) -> int:
    """Move the dist from ``/`` to ``prefix``: ``window.PUBLIC_URL``, the absolute ``src`` / ``href``
    of index.html, webpack's public path in every bundle, ``url(/…)`` in the style sheets and the icon
    paths of manifest.json. The generated ``app-config.js`` replaces the packaged one (openhi serves its
    own). Returns the number of files changed."""
    changed = 0
    index = root / "index.html"
    html = index.read_text(encoding="utf-8")
    new = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{prefix}"')
    new = re.sub(r'(\s(?:src|href))="/(?!/)', rf'\1="{prefix}', new)
    if new != html:
        index.write_text(new, encoding="utf-8")
        changed += 1
    for path in root.rglob("*"):
        if not path.is_file() or path == index:
            continue
        suffix = path.suffix.lower()
        if suffix not in (".js", ".css", ".json"):
            continue
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        if suffix == ".js":
            new = text.replace(_WEBPACK_PUBLIC_PATH, f'__webpack_require__.p = "{prefix}";')
        elif suffix == ".css":
            new = re.sub(r"url\(/(?!/)", f"url({prefix}", text)
        elif path.name == "manifest.json":
            new = re.sub(r'"(src|start_url)": "/(?!/)', rf'"\1": "{prefix}', text)
        else:
            continue
        if new != text:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")
            changed += 1
    return changed


def install(data_dir: Path, tarball: Path | None = None, *, npm: str = "npm") -> Path:
    """Fetch (unless ``tarball`` is given), verify, unpack and rewrite the viewer into
    ``<data_dir>/viewer``, replacing an earlier install only once the new one is complete.

    Raises:
        InstallError: see :func:`npm_pack`, :func:`verify`, :func:`unpack_dist`.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    final = data_dir / "viewer"
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".viewer-install-") as work:
        workdir = Path(work)
        source = tarball if tarball is not None else npm_pack(workdir, npm)
        verify(source)
        staged = workdir / "viewer"
        staged.mkdir()
        unpack_dist(source, staged)
        rewrite_dist(staged)
        marker = {"package": PACKAGE, "version": VERSION, "integrity": INTEGRITY, "prefix": PREFIX}
        (staged / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        old = workdir / "old"
        if final.exists():
            os.replace(final, old)
        os.replace(staged, final)
    return final


def installed(data_dir: Path) -> dict[str, str] | None:
    """The marker of the viewer installed under ``data_dir``, or None."""
    try:
        found: dict[str, str] = json.loads((data_dir / "viewer" / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return found


def viewer_dir(services: Any) -> Path | None:
    """Where the viewer is installed for this server (``<data-dir>/viewer``), or None."""
    scratch = getattr(services, "scratch_dir", None)
    if scratch is None:
        return None
    path = Path(scratch) / "viewer"
    return path if (path / MARKER).is_file() and (path / "index.html").is_file() else None


def viewer_installed(services: Any) -> bool:
    return viewer_dir(services) is not None
