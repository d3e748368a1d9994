"""data.fetch: downloads verified by checksum, resumable, safe extraction."""

import hashlib
import http.server
import socket
import stat
import threading
import zipfile
from typing import ClassVar

import pytest

from capsearch.data.fetch import FetchError, check_archive, download, md5_of, safe_extract

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /good and /drop (which dies halfway on the first try), Range supported."""

    requests: ClassVar[list[tuple[str, str | None]]] = []
    dropped = False

    def log_message(self, *args):
        pass

    def do_GET(self):
        Handler.requests.append((self.path, self.headers.get("Range")))
        if self.path == "/missing":
            self.send_error(404, "Not Found")
            return
        if self.path == "/broken":
            self.send_error(500, "Internal Server Error")
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/drop" and not Handler.dropped:
            Handler.dropped = True
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_good_download(server, tmp_path):
    result = download(f"{server}/good", tmp_path / "a.zip", PAYLOAD_MD5)
    assert result.action == "downloaded" and (tmp_path / "a.zip").read_bytes() == PAYLOAD
    assert not (tmp_path / "a.zip.part").exists()


def test_present_file_is_verified_not_downloaded(server, tmp_path):
    (tmp_path / "a.zip").write_bytes(PAYLOAD)
    Handler.requests.clear()
    assert download(f"{server}/good", tmp_path / "a.zip", PAYLOAD_MD5).action == "present"
    assert Handler.requests == []
    (tmp_path / "b.zip").write_bytes(b"something else")
    with pytest.raises(FetchError, match=r"b.zip exists but its md5 is .*Delete it"):
        download(f"{server}/good", tmp_path / "b.zip", PAYLOAD_MD5)
    assert (tmp_path / "b.zip").read_bytes() == b"something else"  # never deleted


def test_wrong_checksum_removes_file(server, tmp_path):
    with pytest.raises(FetchError, match=r"downloaded file has md5 .* expected 0+; it was deleted"):
        download(f"{server}/good", tmp_path / "a.zip", "0" * 32)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "a.zip.part").exists()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    Handler.requests.clear()
    Handler.dropped = False
    result = download(f"{server}/drop", tmp_path / "a.zip", PAYLOAD_MD5)
    assert result.action == "downloaded" and md5_of(tmp_path / "a.zip") == PAYLOAD_MD5
    assert Handler.requests[0] == ("/drop", None)
    assert Handler.requests[1][1] == f"bytes={len(PAYLOAD) // 2}-"


@pytest.mark.parametrize(("path", "code"), [("/missing", 404), ("/broken", 500)])
def test_http_errors_say_what_to_do(server, tmp_path, path, code):
    with pytest.raises(FetchError, match=rf"HTTP {code}.*place it at .*a.zip \(md5 {PAYLOAD_MD5}\)"):
        download(f"{server}{path}", tmp_path / "a.zip", PAYLOAD_MD5)


def test_no_network_says_how_to_place_zips(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    with pytest.raises(FetchError, match=r"cannot connect .*download .* by hand and place it at"):
        download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", PAYLOAD_MD5)


def test_file_url(tmp_path):
    source = tmp_path / "mirror.zip"
    source.write_bytes(PAYLOAD)
    assert download(source.as_uri(), tmp_path / "out" / "a.zip", PAYLOAD_MD5).action == "downloaded"
    with pytest.raises(FetchError, match="no such file"):
        download((tmp_path / "nope.zip").as_uri(), tmp_path / "b.zip", PAYLOAD_MD5)


def _zip(path, entries, symlink=None):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries:
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    ("entries", "symlink", "problem"),
    [
        ([("../evil.txt", "x")], None, "path traversal"),
        ([("ok/../../evil.txt", "x")], None, "path traversal"),
        ([("/abs/evil.txt", "x")], None, "absolute path"),
        ([("ok.txt", "x")], "link.txt", "symbolic link"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path, entries, symlink, problem):
    archive = _zip(tmp_path / "bad.zip", entries, symlink)
    with pytest.raises(FetchError, match=problem):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_safe_extract_skips_macosx_and_replaces_target(tmp_path):
    archive = _zip(tmp_path / "t.zip", [("Flickr8k.token.txt", "a"), ("__MACOSX/._Flickr8k.token.txt", "junk")])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("old")
    written = safe_extract(archive, tmp_path / "out")
    assert [p.name for p in written] == ["Flickr8k.token.txt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Flickr8k.token.txt"]
    assert [i.filename for i in check_archive(archive)] == ["Flickr8k.token.txt"]
    (tmp_path / "notzip.zip").write_bytes(b"nope")
    with pytest.raises(FetchError, match="not a valid zip"):
        check_archive(tmp_path / "notzip.zip")
