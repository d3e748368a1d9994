"""Webdataset shards as img2dataset writes them: plain tar files of ``KEY.jpg`` (the image), ``KEY.txt`` (its
caption) and ``KEY.json`` (metadata), named ``00000.tar``, ``00001.tar``, ...

A shard set is given as a folder (its ``*.tar``), a list file (one shard path per line, relative to the file;
blank lines and ``#`` comments ignored), a glob, or one ``.tar``. Each shard is indexed once by reading its tar
headers (no image data); members are then read by offset, so any process can read any image without unpacking.
A truncated shard (cut inside a member, or missing the tar end-of-archive blocks) is refused naming the file, and so
are compressed shards (``.tar.gz``, ...) in a shard folder or pattern: leaving them out would change every number.

Splits: webdataset shards carry none, so each image is placed in ``test``, ``dev`` or ``train`` by a stable hash of
its key (:data:`SPLIT_SHARES`), the same on every machine and for any set of shards.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from capsearch.data.flickr8k import IMAGE_SUFFIXES
from capsearch.errors import CapsearchError

SHARD_SUFFIX = ".tar"
COMPRESSED = (".tar.gz", ".tgz", ".tar.zst", ".tar.bz2", ".tar.xz")  # shards webdataset can stream, not index
CAPTION_SUFFIX = ".txt"
END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE  # two zero blocks close every complete tar
SPLIT_SHARES = (("test", 20), ("dev", 20), ("train", 60))  # percent of keys, by hash


class ShardError(CapsearchError, ValueError):
    """A shard (or shard list) that cannot be used; the message names the file."""


class CaptionError(ValueError):
    """A caption member that cannot be read as text; the message names it (the image is excluded, not the run)."""


@dataclass(frozen=True)
class Member:
    """Where one file's bytes are inside a shard."""

    offset: int
    size: int


def is_shard_spec(location: str | Path) -> bool:
    """Whether ``location`` names webdataset shards: a ``.tar``, a list file, a glob, or a folder holding ``.tar``."""
    text = str(location)
    path = Path(text).expanduser()
    if any(ch in text for ch in "*?[") and not path.exists():
        return True
    if path.is_dir():
        return any(p.suffix == SHARD_SUFFIX for p in path.iterdir())
    return path.is_file() and (path.suffix == SHARD_SUFFIX or path.suffix in (".txt", ".lst", ".list"))


def resolve_shards(spec: str | Path) -> list[Path]:
    """The shard files a folder, list file, glob or single ``.tar`` names, in order (sorted for folders/globs)."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.suffix == SHARD_SUFFIX and p.is_file())
        compressed = [p.name for p in unread_files(path) if p.name.endswith(COMPRESSED)]
        if compressed:  # a part of the collection left out would change every number without a word
            raise ShardError(
                f"{path}: {len(compressed)} compressed shard{'s' if len(compressed) != 1 else ''} ({compressed[0]}"
                f"{', ...' if len(compressed) > 1 else ''}), which are not read (members are read by offset): "
                "decompress them to .tar, or name the shards to use in a list file"
            )
        if not shards:
            raise ShardError(f"{path}: no {SHARD_SUFFIX} shards in this folder")
        return shards
    if path.is_file() and path.suffix == SHARD_SUFFIX:
        return [path]
    if path.is_file():
        shards = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            shard = Path(entry).expanduser()
            shard = shard if shard.is_absolute() else path.parent / shard
            if not shard.is_file():
                raise ShardError(f"{path}:{number}: shard {entry!r} not found")
            shards.append(shard)
        if not shards:
            raise ShardError(f"{path}: the shard list names no shards")
        return shards
    if any(ch in text for ch in "*?["):
        matched = glob.glob(os.path.expanduser(text))
        compressed = sorted(p for p in matched if p.endswith(COMPRESSED))
        if compressed:
            raise ShardError(f"{text}: matches compressed shards ({Path(compressed[0]).name}), which are not read: "
                             "decompress them to .tar")  # fmt: skip
        shards = sorted(Path(p) for p in matched if p.endswith(SHARD_SUFFIX))
        if not shards:
            raise ShardError(f"{text}: no {SHARD_SUFFIX} files match this pattern")
        return shards
    raise ShardError(f"{text}: no such shard, shard folder, shard list or pattern")


def unread_files(spec: str | Path) -> list[Path]:
    """The files of a shard folder that are not read as shards (a ``.tar.gz``, a stray file), so a summary can name
    them; none for a list file, a glob or a single shard."""
    path = Path(str(spec)).expanduser()
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix != SHARD_SUFFIX and not p.name.startswith("."))


def describe_unread(files: list[Path]) -> str:
    """One clause naming the files a shard folder holds that are not read (compressed shards said so)."""
    if not files:
        return ""
    names = ", ".join(p.name for p in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    compressed = any(p.name.endswith(COMPRESSED) for p in files)
    hint = " (compressed shards are not read: decompress them to .tar)" if compressed else ""
    return f"{len(files)} file{'s' if len(files) != 1 else ''} in the shard folder not read: {names}{hint}"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hashlib releases the GIL while it hashes: threads can hash files side by side)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def shards_digest(shards: Iterable[tuple[Path, str]]) -> str:
    """What identifies the images of the given (shard, its SHA-256) pairs: part keys' content for shard sources."""
    digest = hashlib.sha256()
    for path, sha256 in shards:
        digest.update(path.name.encode() + b"\0" + sha256.encode())
    return digest.hexdigest()


def index_shard(path: str | Path) -> dict[str, Member]:
    """Every regular file of a tar by member name, with where its data is; a truncated tar is a ShardError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        members: dict[str, Member] = {}
        with tarfile.open(path, "r:") as tar:  # img2dataset writes plain (uncompressed) tar
            for info in tar:
                if not info.isfile():
                    continue
                if info.offset_data + info.size > size:
                    raise ShardError(f"{path}: truncated inside member {info.name!r}; re-download or re-write it")
                if info.name in members:  # tar keeps both; which one a reader gets would be a guess
                    raise ShardError(
                        f"{path}: member {info.name!r} appears twice; re-write the shard with unique names"
                    )
                members[info.name] = Member(info.offset_data, info.size)
            end = tar.offset
    except (tarfile.TarError, OSError) as exc:
        raise ShardError(f"{path}: not a readable tar shard ({exc})") from exc
    if size < end + END_OF_ARCHIVE:
        raise ShardError(f"{path}: truncated (no end-of-archive after {len(members)} members); re-write it")
    return members


def sample_key(member: str) -> str:
    """The webdataset key of a member: its name up to the first dot of the file name."""
    folder, _, name = member.rpartition("/")
    stem = name.split(".", 1)[0]
    return f"{folder}/{stem}" if folder else stem


def split_of(key: str) -> str:
    """The split a key belongs to, by a stable hash (:data:`SPLIT_SHARES`)."""
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    for name, share in SPLIT_SHARES:
        if bucket < share:
            return name
        bucket -= share
    raise AssertionError("split shares must add up to 100")


class ShardReader:
    """Reads members of one shard by offset; opens its file once per process (safe after fork)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.members = index_shard(self.path)
        self._fd: int | None = None
        self._pid: int | None = None
        self._sha256: str | None = None

    def sha256(self) -> str:
        """SHA-256 of the whole shard file (read once per reader): what its images' bytes are."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_fd"] = state["_pid"] = None
        return state

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def read(self, name: str) -> bytes:
        """The bytes of member ``name`` (KeyError if the shard has none)."""
        member = self.members[name]
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        data = os.pread(self._fd, member.size, member.offset)
        if len(data) != member.size:
            raise ShardError(f"{self.path}: member {name!r} is cut short ({len(data)} of {member.size} bytes)")
        return data

    def images(self) -> list[str]:
        """The image members (``.jpg``, ``.jpeg``, ``.png``, ``.webp``), in tar order."""
        return [name for name in self.members if name.lower().endswith(IMAGE_SUFFIXES)]

    def caption_of(self, image: str) -> str | None:
        """The ``KEY.txt`` caption beside an image member, stripped; None if there is none. A caption that is not
        UTF-8 text is a :class:`CaptionError` naming it (never decoded with replacement characters)."""
        name = sample_key(image) + CAPTION_SUFFIX
        if name not in self.members:
            return None
        data = self.read(name)
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise CaptionError(
                f"caption {name} is not UTF-8 text (byte {data[exc.start]:#04x} at {exc.start})"
            ) from None

    def samples(self) -> Iterator[tuple[str, str | None]]:
        """(image member, caption or None) for every image of the shard."""
        for image in self.images():
            yield image, self.caption_of(image)
