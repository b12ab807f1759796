"""Reading the files of a folder or an archive into memory, trusting nothing in it.

Archive members are read in memory (never extracted to disk). Refused by name, whether the member
is kept or not: names that are absolute, contain `..` or are not UTF-8; links; anything but a
regular file (a FIFO or a device never ends); the same name twice. Sizes are checked before a
byte is read: a member (or a file to read) declaring more than MAX_MEMBER_BYTES is refused, all
those read together may not pass MAX_TOTAL_BYTES, and each read stops at the size declared.
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
from typing import BinaryIO

from onecycle.data.split import DataError

# The largest file or archive member read: 64 MiB. The largest one a source needs is an official
# python-version batch (31 MB); an image, even a photo to resize, is a few MB. Checked against the
# size a member declares, before reading it: a 1 GiB member compressed to 1 MB (a zip bomb) is
# refused unread.
MAX_MEMBER_BYTES = 64 << 20
# All the files read from one source together: 2 GiB. They are held in memory until decoded; both
# official archives hold 184 MB, the JPEG CIFAR-10 tree 55 MB. Bounds a source of many bombs just
# under MAX_MEMBER_BYTES.
MAX_TOTAL_BYTES = 2 << 30

# What a damaged or truncated archive raises while it is read (gzip and bz2 raise OSError subclasses).
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)
# O_NONBLOCK: opening a FIFO would otherwise wait for a writer before fstat could tell what it is
# (regular files ignore the flag). O_BINARY: Windows only.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)

Keep = Callable[[str], bool]  # which file members to read into memory, by normalized name


def member_name(raw: str, archive: Path) -> str:
    """The normalized relative name of an archive member; DataError if it could point outside the
    archive, or is not UTF-8 (class and file names become text in classes.json and the plots)."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by the surrogateescape of os.walk and tarfile
        name = raw.encode("utf-8", "surrogateescape")
        raise DataError(f"{archive}: the name {name!r} is not valid UTF-8: rename it (file and class names "
                        "must be text)") from None
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


def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading; DataError naming `path` if it is a FIFO, a device, a socket
    or a folder. The check is on the open file (fstat), so nothing can be swapped in after it."""
    fd = os.open(path, _READ_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(
                f"{path} is {_kind(mode)}, not a regular file: only regular files are read (a FIFO or a device "
                "may never end): point data.path at an archive or a folder, and keep only files in the tree"
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def read_members(path: Path, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    """File contents (name -> bytes) of the kept, non-hidden members of a folder or archive, and all folder names.

    Every member is validated, kept or not. Archives are read in memory: .tar in any compression
    as a stream (a .tar.xz cannot seek cheaply), .zip by its index.
    """
    if path.is_dir():
        return _read_folder_files(path, keep)
    with open_regular(path) as handle:
        try:
            is_zip = zipfile.is_zipfile(handle)
            handle.seek(0)
            return (_read_zip if is_zip else _read_tar)(path, handle, keep)
        except UnicodeDecodeError as err:  # a zip member flagged UTF-8 whose name is not
            raise DataError(f"{path}: a member's name is not valid UTF-8 ({err}): rename it") from err
        except _ARCHIVE_ERRORS as err:
            raise DataError(
                f"cannot read archive {path} ({type(err).__name__}: {err}): it is damaged or truncated (copy or "
                "download it again), or not a .tar, .tar.gz, .tar.xz or .zip archive"
            ) from err


class _Reads:
    """The checks on an archive's file members as they come: the size each declares, names seen
    once, and the bytes read so far against MAX_TOTAL_BYTES."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total = 0  # bytes read from this source so far
        self.seen: dict[str, str] = {}  # normalized name -> the member's raw name

    def check(self, name: str, raw: str, size: int) -> None:
        """Refuse a member declaring more than MAX_MEMBER_BYTES (checked for skipped members too:
        skipping a tar member means decompressing it), or named like an earlier one."""
        if name in self.seen:
            raise DataError(f"{self.path} holds {name!r} twice (members {self.seen[name]!r} and {raw!r}): "
                            "one would silently replace the other; remove one")
        self.seen[name] = raw
        _check_size(size, f"member {name} of {self.path}")

    def read(self, handle: BinaryIO, size: int, where: str) -> bytes:
        """Read what a member or file declared as `size` bytes, within MAX_TOTAL_BYTES."""
        if self.total + size > MAX_TOTAL_BYTES:
            raise DataError(
                f"{self.path} holds more than {MAX_TOTAL_BYTES >> 30} GiB of files to read (reached at {where}): "
                "refused before reading it; a source of 32x32 images needs far less"
            )
        data = handle.read(size + 1)  # one byte more than declared tells a file that lied or grew
        if len(data) > size:
            raise DataError(f"{where} holds more than the {size} bytes it declared: refused")
        self.total += len(data)
        return data


def _check_size(size: int, where: str) -> None:
    if size > MAX_MEMBER_BYTES:
        raise DataError(
            f"{where} is {size:,} bytes, more than the {MAX_MEMBER_BYTES >> 20} MiB a file or archive member "
            "may be: refused before reading it (no image or CIFAR-10 batch is that large; a decompression bomb is)"
        )


def _read_tar(path: Path, handle: BinaryIO, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    files, dirs, reads = {}, set(), _Reads(path)
    with tarfile.open(fileobj=handle, mode="r|*") as tar:
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
            else:
                reads.check(name, member.name, member.size)
                if not hidden(name) and keep(name):
                    files[name] = reads.read(tar.extractfile(member), member.size, f"member {name} of {path}")
    return files, dirs


def _read_zip(path: Path, handle: BinaryIO, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    files, dirs, reads = {}, set(), _Reads(path)
    with zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            name = member_name(info.filename, path)
            if stat.S_ISLNK(info.external_attr >> 16):  # unix mode in the high 16 bits
                raise DataError(f"{path}: member {info.filename!r} is a symlink: links are refused")
            if info.is_dir():
                if not hidden(name):
                    dirs.add(name)
            else:
                reads.check(name, info.filename, info.file_size)
                if not hidden(name) and keep(name):
                    with archive.open(info) as member:
                        files[name] = reads.read(member, info.file_size, f"member {name} of {path}")
    return files, dirs


def _read_folder_files(root: Path, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    files, dirs, reads = {}, set(), _Reads(root)
    for current, subdirs, names in os.walk(root):
        base = Path(current).relative_to(root).as_posix()
        for entry in subdirs + names:
            name = entry if base == "." else f"{base}/{entry}"
            if hidden(name):
                continue
            name = member_name(name, root)
            mode = os.lstat(os.path.join(current, entry)).st_mode
            if stat.S_ISLNK(mode):
                raise DataError(f"{root / name} is a symlink: links are not followed, copy the file or folder in instead")
            if stat.S_ISDIR(mode):
                dirs.add(name)
            elif not stat.S_ISREG(mode):
                raise DataError(f"{root / name} is {_kind(mode)}, not a regular file: only regular files are read "
                                "(a FIFO or a device may never end); remove it from the tree")
            elif keep(name):
                with open_regular(root / name) as handle:
                    size = os.fstat(handle.fileno()).st_size
                    _check_size(size, str(root / name))
                    files[name] = reads.read(handle, size, str(root / name))
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    return files, dirs
