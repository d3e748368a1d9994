"""Downloading and unpacking the Flickr8k release: resumable, checksum-verified, traversal-safe."""

from __future__ import annotations

import hashlib
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from capsearch.errors import CapsearchError
from capsearch.progress import progress

CHUNK = 1 << 20
SKIPPED_PREFIXES = ("__MACOSX/",)


class FetchError(CapsearchError, RuntimeError):
    """A download or archive problem; the message says what to do."""


@dataclass
class FetchResult:
    """What happened to one file: ``present`` (verified, not downloaded) or ``downloaded``."""

    path: Path
    action: str
    bytes: int


def md5_of(path: str | Path) -> str:
    """Hex MD5 of a file, streamed."""
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _manual_hint(url: str, dest: Path, md5: str) -> str:
    return (
        f"Without network access, download {url} by hand and place it at {dest} (md5 {md5}), "
        "or point the fetch url in params.yaml at a mirror or a file:// path."
    )


def _stream(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``, asking for a byte range when part of it is there already."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "capsearch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = getattr(response, "status", 200)
        if offset and status != 206:
            offset = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        mode = "ab" if offset else "wb"
        with (
            part.open(mode) as handle,
            progress(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name) as bar,
        ):
            while chunk := response.read(CHUNK):
                handle.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")


def download(url: str, dest: str | Path, md5: str, *, retries: int = 3, timeout: float = 60.0) -> FetchResult:
    """Make ``dest`` hold the file at ``url`` with MD5 ``md5``.

    A file already at ``dest`` is verified and kept (never re-downloaded); a wrong checksum there is an error
    that leaves the file alone. Otherwise the download streams to ``dest.part``, resumes after a dropped
    connection (HTTP Range), is verified and renamed. A downloaded file with a wrong checksum is deleted.
    """
    dest = Path(dest)
    md5 = md5.lower()
    if dest.exists():
        actual = md5_of(dest)
        if actual != md5:
            raise FetchError(
                f"{dest} exists but its md5 is {actual}, expected {md5}. Delete it to download again, "
                "or fix the md5 in params.yaml if you use another release."
            )
        return FetchResult(dest, "present", dest.stat().st_size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("", "file"):
        source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path)) if scheme else Path(url)
        if not source.exists():
            raise FetchError(f"{url}: no such file. {_manual_hint(url, dest, md5)}")
        shutil.copyfile(source, part)
    else:
        last_error: Exception | None = None
        for attempt in range(retries + 1):
            try:
                _stream(url, part, timeout)
                last_error = None
                break
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and part.exists():  # range past the end: we already have it all
                    last_error = None
                    break
                raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}. {_manual_hint(url, dest, md5)}") from exc
            except urllib.error.URLError as exc:
                raise FetchError(f"{url}: cannot connect ({exc.reason}). {_manual_hint(url, dest, md5)}") from exc
            except (ConnectionError, TimeoutError, OSError) as exc:
                last_error = exc
                time.sleep(min(2.0**attempt, 10.0) * 0.1)
        if last_error is not None:
            raise FetchError(
                f"{url}: download kept failing ({last_error}); {part} is kept so a re-run resumes. "
                + _manual_hint(url, dest, md5)
            )
    actual = md5_of(part)
    if actual != md5:
        part.unlink()
        raise FetchError(f"{url}: downloaded file has md5 {actual}, expected {md5}; it was deleted.")
    part.replace(dest)
    return FetchResult(dest, "downloaded", dest.stat().st_size)


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in path.parts:
        return "path traversal ('..')"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return None


def check_archive(zip_path: str | Path) -> list[zipfile.ZipInfo]:
    """The members of a zip worth reading; raise :class:`FetchError` on any unsafe member.

    Unsafe: absolute paths, ``..`` components, symbolic links. ``__MACOSX/`` metadata is skipped.
    """
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{zip_path}: not a valid zip archive ({exc})") from exc
    kept = []
    for info in members:
        problem = _member_problem(info)
        if problem:
            raise FetchError(f"{zip_path}: refusing member {info.filename!r}: {problem}")
        if not info.filename.startswith(SKIPPED_PREFIXES):
            kept.append(info)
    return kept


def safe_extract(zip_path: str | Path, dest: str | Path) -> list[Path]:
    """Extract a checked archive into ``dest`` (replaced whole, via a temporary folder)."""
    dest = Path(dest)
    members = check_archive(zip_path)
    tmp = dest.with_name(f".{dest.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    written = []
    with zipfile.ZipFile(zip_path) as archive:
        for info in members:
            if info.is_dir():
                continue
            target = tmp.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, CHUNK)
            written.append(dest / target.relative_to(tmp))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)
    return written


def safe_extract_tar(tar_path: str | Path, dest: str | Path) -> int:
    """Extract a (compressed) tar into ``dest`` (replaced whole, via a temporary folder); returns the file count.

    Every member is checked first: only regular files and folders, no absolute path, no ``..``; anything else
    is a :class:`FetchError` naming the archive and the member (and tarfile's own ``data`` filter runs too).
    """
    dest = Path(dest)
    try:
        with tarfile.open(tar_path, "r:*") as archive:
            members = archive.getmembers()
            for member in members:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                    raise FetchError(f"{tar_path}: refusing member {member.name!r}: unsafe path or not a plain file")
            tmp = dest.with_name(f".{dest.name}.tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            archive.extractall(tmp, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise FetchError(f"{tar_path}: not a valid tar archive ({exc})") from exc
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)
    return sum(member.isfile() for member in members)
