"""Reading the files of a folder or an archive into memory, trusting nothing in it.

Archive members are read in memory (never extracted to disk); names that are absolute or contain
`..` and links are refused, whether the member is kept or not.
"""

from __future__ import annotations

import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PureWindowsPath

from onecycle.data.split import DataError

# What a damaged or truncated archive raises while it is read (gzip and bz2 raise OSError subclasses).
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)

Keep = Callable[[str], bool]  # which file members to read into memory, by normalized name


def member_name(raw: str, archive: Path) -> str:
    """The normalized relative name of an archive member; DataError if it could point outside the archive."""
    if raw.startswith(("/", "\\")) or PureWindowsPath(raw).drive:
        raise DataError(f"{archive}: member {raw!r} has an absolute path: refusing to read this archive (unsafe)")
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{archive}: member {raw!r} points outside the archive ('..'): refusing to read it (unsafe)")
    return "/".join(parts)


def hidden(name: str) -> bool:
    """Files the OS or an archiver adds (.DS_Store, ._x, __MACOSX/): never data."""
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def location(path: Path, name: str) -> str:
    """How an error names a file: its path in a folder, or the member and the archive."""
    return str(path / name) if path.is_dir() else f"member {name} of {path}"


def read_members(path: Path, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    """File contents (name -> bytes) of the kept, non-hidden members of a folder or archive, and all folder names.

    Every member is validated, kept or not. Archives are read in memory: .tar in any compression
    as a stream (a .tar.xz cannot seek cheaply), .zip by its index.
    """
    if path.is_dir():
        return _read_folder_files(path, keep)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path, keep)
        return _read_tar(path, keep)
    except _ARCHIVE_ERRORS as err:
        raise DataError(
            f"cannot read archive {path} ({type(err).__name__}: {err}): it is damaged or truncated (copy or "
            "download it again), or not a .tar, .tar.gz, .tar.xz or .zip archive"
        ) from err


def _read_tar(path: Path, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    files, dirs = {}, set()
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            name = member_name(member.name, path)
            if member.issym() or member.islnk():
                kind = "symlink" if member.issym() else "hardlink"
                raise DataError(f"{path}: member {member.name!r} is a {kind} (to {member.linkname!r}): links are refused")
            if member.isdir():
                if not hidden(name):
                    dirs.add(name)
            elif not member.isfile():
                raise DataError(f"{path}: member {member.name!r} is a device or fifo, not a file: refused")
            elif not hidden(name) and keep(name):
                files[name] = tar.extractfile(member).read()
    return files, dirs


def _read_zip(path: Path, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    files, dirs = {}, set()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = member_name(info.filename, path)
            if stat.S_ISLNK(info.external_attr >> 16):  # unix mode in the high 16 bits
                raise DataError(f"{path}: member {info.filename!r} is a symlink: links are refused")
            if info.is_dir():
                if not hidden(name):
                    dirs.add(name)
            elif not hidden(name) and keep(name):
                files[name] = archive.read(info)
    return files, dirs


def _read_folder_files(root: Path, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    files, dirs = {}, set()
    for current, subdirs, names in os.walk(root):
        base = Path(current).relative_to(root).as_posix()
        for entry in subdirs + names:
            name = entry if base == "." else f"{base}/{entry}"
            if hidden(name):
                continue
            if os.path.islink(os.path.join(current, entry)):
                raise DataError(f"{root / name} is a symlink: links are not followed, copy the file or folder in instead")
            if entry in subdirs:
                dirs.add(name)
            elif keep(name):
                files[name] = (root / name).read_bytes()
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    return files, dirs
