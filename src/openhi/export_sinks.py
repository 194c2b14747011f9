"""Where ``openhi export`` writes: a folder, a zip file, or ``s3://bucket/prefix`` through the server."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from openhi.cli_client import CommandError
from openhi.export_http import Client
from openhi.export_plan import Item
from openhi.export_verify import problem

if TYPE_CHECKING:
    import zipfile  # loaded by ZipSink: a folder export does not need it

#: names of files being written (``.<SOP>.dcm.<pid>.export-tmp``); renamed when complete
_TMP = re.compile(r"^\..+\.dcm\.\d+\.export-tmp$")
_BUCKET = re.compile(r"[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9]")
UPLOAD = "/openhi/upload"


class Sink(Protocol):
    """One destination. ``verified`` and ``write`` are called from several threads at once."""

    where: str

    def verified(self, item: Item, syntax: str) -> bool:
        """Whether the item is already there, complete and in ``syntax`` (a resumed export skips it)."""
        ...

    def write(self, item: Item, data: bytes | memoryview) -> None:
        """Store the file (atomically: a reader never sees part of it). Raises OSError or CommandError."""
        ...

    def finish(self) -> None:
        """Make what was written final (the zip file); called once, after every write."""
        ...


class FolderSink:
    """``DIR/<SOPInstanceUID>.dcm``: written under a temporary name, then renamed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)
        if folder.exists() and not folder.is_dir():
            raise CommandError(f"--out {folder} exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        self._dir = str(folder)
        #: the names in the folder when the export started: only those can be verified files
        self._present: set[str] = set()
        for name in os.listdir(folder):
            if _TMP.match(name):  # what an interrupted run was writing
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._dir, name))
            else:
                self._present.add(name)

    def verified(self, item: Item, syntax: str) -> bool:
        if item.name not in self._present:
            return False
        try:
            data = (self.folder / item.name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        return problem(data, item, syntax) is None

    def write(self, item: Item, data: bytes | memoryview) -> None:
        tmp = os.path.join(self._dir, f".{item.name}.{os.getpid()}.export-tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, os.path.join(self._dir, item.name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def finish(self) -> None:
        return None


class ZipSink:
    """``FILE.zip`` holding ``<SOPInstanceUID>.dcm`` entries (stored, not compressed).

    New files are written to the folder ``FILE.zip.partial/`` (so an interrupted export keeps them);
    :meth:`finish` writes a new zip of the verified entries of the old one (other entries kept as they
    are) and the new files, renames it over ``FILE.zip`` and removes the folder.
    """

    def __init__(self, path: Path) -> None:
        import zipfile  # loaded for zip outputs only

        self.path = path
        self.where = str(path)
        if path.is_dir():
            raise CommandError(f"--out {path} is a folder, not a zip file")
        if not path.parent.is_dir():
            raise CommandError(f"--out {path}: the folder {path.parent} does not exist")
        self.staged = FolderSink(path.with_name(path.name + ".partial"))
        self._old: zipfile.ZipFile | None = None
        if path.exists():
            try:
                self._old = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError):
                self._old = None  # unreadable: rewritten from what is exported now
        self._names = set(self._old.namelist()) if self._old is not None else set()
        self._refused: set[str] = set()  # listed entries that did not verify: replaced
        self._new: set[str] = set()
        self._lock = threading.Lock()

    def verified(self, item: Item, syntax: str) -> bool:
        import zipfile

        if self._old is not None and item.name in self._names:
            try:
                with self._lock:
                    data = self._old.read(item.name)
            except (zipfile.BadZipFile, OSError, EOFError):
                data = b""
            if problem(data, item, syntax) is None:
                return True
            with self._lock:
                self._refused.add(item.name)
        if self.staged.verified(item, syntax):
            with self._lock:
                self._new.add(item.name)
            return True
        return False

    def write(self, item: Item, data: bytes | memoryview) -> None:
        self.staged.write(item, data)
        with self._lock:
            self._new.add(item.name)

    def finish(self) -> None:
        import shutil
        import zipfile

        if self._old is not None and not self._new and not self._refused:
            self._old.close()  # nothing changed
            shutil.rmtree(self.staged.folder, ignore_errors=True)
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
                if self._old is not None:
                    for info in self._old.infolist():
                        if info.filename not in self._new and info.filename not in self._refused:
                            out.writestr(info, self._old.read(info))
                for name in sorted(self._new):
                    out.write(self.staged.folder / name, name)
            if self._old is not None:
                self._old.close()
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        shutil.rmtree(self.staged.folder, ignore_errors=True)


class BucketSink:
    """``s3://bucket/prefix/<SOPInstanceUID>.dcm`` in the server's object store (its embedded buckets,
    or the S3 it was started with), through ``/openhi/upload/{bucket}/{key}`` on the same endpoint."""

    def __init__(self, client: Client, uri: str) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise CommandError(f"--out {uri}: {bucket!r} is not a valid S3 bucket name")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.where = f"s3://{bucket}/{self.prefix}"

    def _path(self, item: Item) -> str:
        return f"{UPLOAD}/{self.bucket}/{self.prefix}{item.name}"

    def verified(self, item: Item, syntax: str) -> bool:
        answer = self.client.send("GET", self._path(item))
        if answer.status == 404 and answer.error_message().startswith("No openhi route"):
            raise CommandError(f"{self.client.conn.endpoint} has no upload route (an older openhi?)")
        return answer.status == 200 and problem(answer.body, item, syntax) is None

    def write(self, item: Item, data: bytes | memoryview) -> None:
        answer = self.client.send("PUT", self._path(item), body=bytes(data))
        if answer.status != 200:
            raise OSError(f"writing {self.where}{item.name} failed: {answer.error_message()}")

    def finish(self) -> None:
        return None


def open_sink(out: str, client: Client) -> Sink:
    """The sink ``--out`` names: ``s3://…``, a path ending in ``.zip``, else a folder. Raises CommandError."""
    if out.startswith("s3://"):
        return BucketSink(client, out)
    if "://" in out:
        raise CommandError(f"--out {out}: only folders, .zip files and s3:// URIs are written")
    path = Path(out)
    if path.suffix.lower() == ".zip" and not path.is_dir():
        return ZipSink(path)
    return FolderSink(path)
