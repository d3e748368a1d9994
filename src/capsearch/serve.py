"""``capsearch serve``: one process that loads CLIP and the search index once, and answers a JSON API and a web page.

Routes (all GET):

    /                        the search page
    /api/health              {"status": "ok", "images", "index", "ann", "clip"}
    /api/search?q=&k=&method=&exact=&alpha=
                             the top k images: {"hits": [{"rank", "score", "image_id", "caption", ...}], ...}
    /api/images/{image_id}   the image file (``?thumb=1``: a JPEG at most 256 pixels wide)
    /api/info/{image_id}     its generated caption and, in a pipeline run, its reference captions

Every 4xx answer is ``{"error": "..."}``: an empty, missing or too long query, k not a whole number (ASCII digits)
within 1..MAX_K, an unknown method, bytes that are not UTF-8, an image id that is not in the gallery, a method
other than GET. Images are looked up by id in the gallery, never by path, so no request reads a file outside it;
image URLs are percent-encoded (a file may be called ``red circle #1?.png``). It binds to 127.0.0.1 by default;
every hit carries the image's full path, so another address is warned about. A connection that sends nothing is
closed after :data:`IDLE_SECONDS`.

A running server announces itself in ``server.json`` beside the index (URL, pid, index) for ``capsearch search``;
a second server for the same index is refused while the first answers, and a server removes the announcement on
SIGINT or SIGTERM only if it is its own.
"""

from __future__ import annotations

import io
import ipaddress
import json
import mimetypes
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from capsearch.index import SearchIndex
from capsearch.io import write_json
from capsearch.search import METHODS, is_blank, ranked_exactly, search, weak_below

MAX_K = 100
MAX_QUERY_CHARS = 500
THUMB_WIDTH = 256
IDLE_SECONDS = 10  # a connection with no request in flight for this long is closed
K_DIGITS = re.compile(r"[0-9]{1,3}")
PAGE = Path(__file__).with_name("web") / "index.html"


class BadRequest(Exception):
    """A request the client can fix: answered with 400 and the message."""


class NotInGallery(Exception):
    """An image id the gallery does not hold: answered with 404."""


@dataclass
class Service:
    """What the server holds: the index, the query encoder, the reference captions by image id."""

    index: SearchIndex
    embed: Callable[[list[str]], np.ndarray]  # queries -> normalised CLIP text embeddings
    index_name: str  # where the index came from (a project or a folder), reported by /api/health
    references: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rows = {image_id: row for row, image_id in enumerate(self.index.ids)}


def query_params(request: Request) -> dict[str, str]:
    """The query string, decoded strictly as UTF-8 (Starlette would replace bad bytes silently)."""
    params: dict[str, str] = {}
    for pair in request.scope.get("query_string", b"").split(b"&"):
        if not pair:
            continue
        key, _, value = pair.partition(b"=")
        try:
            params[unquote_to_bytes(key.replace(b"+", b" ")).decode("utf-8")] = unquote_to_bytes(
                value.replace(b"+", b" ")
            ).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the query string is not valid UTF-8") from None
    return params


def parse_search(params: dict[str, str]) -> tuple[str, int, str, bool, float | None]:
    """(query, k, method, exact, alpha) of a search request, or :class:`BadRequest` naming what is wrong."""
    query = params.get("q", "").strip()
    if is_blank(query):  # spaces alone, or a zero-width space, a BOM, NUL
        raise BadRequest("empty query: type some words to search for")
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest(f"query too long: {len(query)} characters, at most {MAX_QUERY_CHARS}")
    raw_k = params.get("k", "10").strip()
    if not K_DIGITS.fullmatch(raw_k) or not 1 <= int(raw_k) <= MAX_K:  # ASCII digits only: int() takes '٥'
        raise BadRequest(f"k must be a whole number from 1 to {MAX_K}, got {raw_k[:20]!r}")
    method = params.get("method", "image")
    if method not in METHODS:
        raise BadRequest(f"unknown method {method[:20]!r}: choose one of {', '.join(METHODS)}")
    exact = params.get("exact", "0").lower()
    if exact not in ("0", "1", "true", "false"):
        raise BadRequest(f"exact must be 0 or 1, got {exact[:20]!r}")
    alpha = None
    if params.get("alpha"):
        try:
            alpha = float(params["alpha"])
        except ValueError:
            alpha = -1.0
        if not 0.0 <= alpha <= 1.0:
            raise BadRequest(f"alpha must be a number within 0..1, got {params['alpha'][:20]!r}")
    return query, int(raw_k), method, exact in ("1", "true"), alpha


def image_url(image_id: str, thumb: bool = False) -> str:
    """The URL path of an image, percent-encoded (``/`` kept: ids may be relative paths)."""
    return f"/api/images/{quote(image_id, safe='/')}" + ("?thumb=1" if thumb else "")


def create_app(service: Service) -> Starlette:
    """The Starlette application over ``service``."""
    index = service.index

    def row_of(request: Request) -> int:
        image_id = request.path_params["image_id"]
        if image_id not in service.rows:
            raise NotInGallery(f"no image {image_id[:200]!r} in this gallery")
        return service.rows[image_id]

    def page(request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def health(request: Request) -> Response:  # on the event loop: answers while searches queue
        return JSONResponse(
            {
                "status": "ok",
                "images": len(index.ids),
                "index": service.index_name,
                "ann": index.ann["image"].kind if index.ann else "none (exact search)",
                "clip": asdict(index.clip),
                "max_k": MAX_K,
                "pid": os.getpid(),
                "weak_below": weak_below(index),
            }
        )

    def search_endpoint(request: Request) -> Response:
        query, k, method, exact, alpha = parse_search(query_params(request))
        with service.lock:  # one query at a time through the model: no thread oversubscription
            started = time.perf_counter()
            vector = service.embed([query])
            encoded = time.perf_counter()
            (hits,) = search(index, vector, k, method, alpha, exact=exact)
            finished = time.perf_counter()
        return JSONResponse(
            {
                "query": query,
                "method": method,
                "k": k,
                "exact": ranked_exactly(index, exact),
                "images": len(index.ids),
                "took_ms": {"encode": 1000 * (encoded - started), "search": 1000 * (finished - encoded)},
                "weak": all(hit.weak for hit in hits),  # no image matches the query well
                "hits": [
                    {
                        **asdict(hit),
                        "file_name": Path(hit.image_id).name,
                        "image_url": image_url(hit.image_id),
                        "thumb_url": image_url(hit.image_id, thumb=True),
                    }
                    for hit in hits
                ],
            }
        )

    @lru_cache(maxsize=4096)
    def thumbnail(row: int) -> bytes:
        image = index.source.open_rgb(index.ids[row])
        image.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 4))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue()

    def image_endpoint(request: Request) -> Response:
        row = row_of(request)
        if request.query_params.get("thumb") == "1":
            return Response(thumbnail(row), media_type="image/jpeg")
        image_id = index.ids[row]
        media_type = mimetypes.guess_type(image_id)[0] or "application/octet-stream"
        return Response(index.source.read_bytes(image_id), media_type=media_type)

    def info_endpoint(request: Request) -> Response:
        row = row_of(request)
        image_id = index.ids[row]
        return JSONResponse(
            {
                "image_id": image_id,
                "caption": index.generated[row],
                "references": service.references.get(image_id, []),
                "file_name": Path(image_id).name,
                "image_url": image_url(image_id),
            }
        )

    async def bad_request(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def not_found(request: Request, exc: Exception) -> Response:
        message = str(exc) if isinstance(exc, NotInGallery) else "no such page"
        return JSONResponse({"error": message}, status_code=404)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return await not_found(request, exc)
        message = "only GET is answered here" if exc.status_code == 405 else str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/health", health),
            Route("/api/search", search_endpoint),
            Route("/api/images/{image_id:path}", image_endpoint),
            Route("/api/info/{image_id:path}", info_endpoint),
        ],
        exception_handlers={
            BadRequest: bad_request,
            NotInGallery: not_found,
            HTTPException: http_error,
            500: server_error,
        },
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def exposure_warning(host: str) -> str | None:
    """A warning when ``host`` is reachable from other machines (every hit carries a full file path)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (
        f"warning: listening on {host}, reachable from other machines: anyone who can reach it can search this "
        "gallery, see every image and the full path of each file on this machine (bind 127.0.0.1 to keep it local)"
    )


def running_server(announce: Path, timeout: float = 3.0) -> tuple[str | None, str]:
    """The URL of the live server ``announce`` names, and why not where none answers.

    Trusted only when the process it names is alive on this machine and the server at its URL answers its health
    check as that process, for the same index (another program may hold the port now).
    """
    import urllib.request

    if not announce.exists():
        return None, "no server announced"
    try:
        record = json.loads(announce.read_text(encoding="utf-8"))
        url, pid, index_name = str(record["url"]), int(record["pid"]), str(record["index"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{announce} is unreadable"
    if not _alive(pid):
        return None, f"the server announced in {announce} (pid {pid}) is no longer running"
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout) as response:
            health = json.loads(response.read())
    except TimeoutError:
        return None, f"the server at {url} did not answer its health check within {timeout:g} s"
    except (OSError, ValueError) as exc:
        return None, f"the server at {url} does not answer ({exc})"
    if health.get("pid") != pid or health.get("index") != index_name:
        return None, f"what answers at {url} is not the server announced in {announce}"
    return url, ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _idle_closing_protocol() -> type:
    """uvicorn's h11 protocol, closing a connection that has no request in flight for ``timeout_keep_alive``
    seconds from its first byte on (uvicorn itself times out only between requests)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class IdleClosing(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is None and not self.transport.is_closing():  # still no complete request
                self._arm()

        def _arm(self) -> None:
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    return IdleClosing


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)  # as SIGINT does: the announcement is removed on the way out


def uvicorn_server(service: Service, idle_seconds: float = IDLE_SECONDS, log_level: str = "warning") -> Any:
    """The uvicorn server answering ``service``; a connection idle for ``idle_seconds`` is closed."""
    import uvicorn

    config = uvicorn.Config(
        create_app(service),
        log_level=log_level,
        access_log=False,
        http=_idle_closing_protocol(),
        timeout_keep_alive=idle_seconds,
    )
    return uvicorn.Server(config)


def serve(service: Service, sock: socket.socket, announce: Path | None, log_level: str = "warning") -> None:
    """Serve ``service`` on ``sock`` until SIGINT or SIGTERM; ``announce`` holds the URL meanwhile."""
    host, port = sock.getsockname()[:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    server = uvicorn_server(service, log_level=log_level)
    record = {"url": url, "pid": os.getpid(), "index": service.index_name}
    if announce is not None:
        write_json(announce, record)
    print(f"capsearch serve: {len(service.index.ids)} images from {service.index_name} at {url}", flush=True)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # uvicorn re-raises it after its clean shutdown
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        if announce is not None:
            _withdraw(announce, record)
        sys.stdout.flush()


def _withdraw(announce: Path, record: dict[str, Any]) -> None:
    """Remove the announcement if it is still this server's."""
    try:
        if json.loads(announce.read_text(encoding="utf-8")) == record:
            announce.unlink()
    except (OSError, ValueError):
        pass
