"""The HTTP service (FastAPI): recommendations from the published model's serving snapshot.

    make serve            # or: python -m recsys_dagster.serving  (PORT, default 8000; 127.0.0.1)

Endpoints (OpenAPI at ``/docs`` and ``/openapi.json``):

* ``GET /v1/users/{user_id}/recommendations?k=10`` — a known user's list (stored by the
  pipeline; longer than stored: scored now). Unknown user: 404 with a hint.
* ``POST /v1/recommendations`` — a new user from ``{"items": [...], "text": "...", "k": 10}``
  (either or both), scored in real time; nothing is written.
* ``GET /v1/items/{item_id}/similar?k=10`` — neighbours in the fused (GNN + text) space.
* ``GET /health`` (process up), ``GET /ready`` (a snapshot is loaded).

Every answer names the model version and snapshot that served it. Bad input gets a 4xx
JSON error ``{"error": {"code", "message"}}``, never a 500.
"""

from __future__ import annotations

import asyncio
import re

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys_dagster.serving.state import MAX_K, BadRequest, Reloader, UnknownId

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_BYTES = 10 * 1024
MAX_ITEMS = 1000
MAX_ID_LEN = 256
SCORING_THREADS = 4
_BAD_ID = re.compile(r"[\x00-\x1f\x7f]")


def error(status: int, code: str, message: str, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message, **extra}})


def check_id(kind: str, value: str) -> str:
    if not value or len(value) > MAX_ID_LEN or _BAD_ID.search(value):
        raise BadId(f"invalid {kind} id: 1..{MAX_ID_LEN} characters without control characters")
    return value


class BadId(ValueError):
    pass


class NewUser(BaseModel):
    """A session's items (ids; numbers are read as ids) and/or a free text about the user."""

    model_config = ConfigDict(extra="forbid")
    items: list[str | int] = Field(default_factory=list, max_length=MAX_ITEMS,
                                   description=f"item ids the user interacted with (at most {MAX_ITEMS})")
    text: str | None = Field(default=None, description="what the user likes, in words (at most 10 kB)")
    k: int = Field(default=10, ge=1, le=MAX_K, description=f"list length, 1..{MAX_K}")

    @field_validator("items")
    @classmethod
    def _ids(cls, v):
        return [check_id("item", str(i)) for i in v]

    @field_validator("text")
    @classmethod
    def _text(cls, v):
        if v is not None and len(v.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
            raise ValueError(f"text longer than {MAX_TEXT_BYTES} bytes")
        return v.strip() or None if v is not None else None


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before it is parsed."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._too_large(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope, receive, send):
        response = error(413, "body_too_large", f"request body over {self.limit} bytes")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(reloader: Reloader, scoring_threads: int = SCORING_THREADS) -> FastAPI:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        # Requests that score run in a small thread pool: dozens of threads would only fight
        # over the GIL and the cores; the others wait in the queue instead (measured).
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = scoring_threads
        yield

    app = FastAPI(title="recsys_dagster recommendations", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, description="Recommendations from the published model version (see README, Serving).")
    app.add_middleware(BodyLimit)
    docs_without_cdn(app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
                    for e in exc.errors()]
        first = problems[0] if problems else {"where": "body", "problem": "invalid"}
        return error(422, "invalid_request", f"{first['where']}: {first['problem']}", problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):  # e.g. bytes that are not UTF-8
            return error(400, "invalid_body", "the request body is not JSON in UTF-8")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(UnknownId)
    async def _unknown(request: Request, exc: UnknownId):
        return error(404, "unknown_id", str(exc.args[0]))

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest):
        return error(422, "cannot_answer", str(exc))

    @app.exception_handler(BadId)
    async def _bad_id(request: Request, exc: BadId):
        return error(400, "invalid_id", str(exc))

    def state():
        current = reloader.state
        if current is None:
            raise _NotReady(reloader.error or "no serving snapshot loaded yet")
        return current

    @app.exception_handler(_NotReady)
    async def _not_ready(request: Request, exc: _NotReady):
        return error(503, "not_ready", str(exc))

    @app.get("/health", summary="The process is up")
    def health():
        return {"status": "ok"}

    @app.get("/ready", summary="A model snapshot is loaded (503 until then)")
    def ready():
        current = reloader.state
        if current is None:
            return error(503, "not_ready", reloader.error or "no serving snapshot loaded yet")
        return {"status": "ready", **current.info, "reloads": reloader.reloads, "last_reload_error": reloader.error}

    # Answers are returned as ready JSON (no per-request re-encoding of nested dicts); the
    # stored lists are answered on the event loop, anything that scores in the thread pool.
    @app.get("/v1/users/{user_id}/recommendations", summary="A known user's recommendations")
    async def user_recommendations(user_id: str, k: int = Query(10, ge=1, le=MAX_K)):
        current, user_id = state(), check_id("user", user_id)
        stored = current.stored_id(user_id)  # the token when the pipeline pseudonymizes
        if current.is_stored(stored, k, user_id):
            return Response(current.user_recommendations_json(stored, k, user_id), media_type="application/json")
        return JSONResponse(await run_in_threadpool(current.user_recommendations, stored, k, user_id))

    @app.post("/v1/recommendations", summary="Recommendations for a new user from items and/or text")
    async def new_user(body: NewUser):
        if not body.items and not body.text:
            raise BadRequest("send `items` (item ids) and/or `text`")
        current, items = state(), [str(i) for i in body.items]
        current.check_new_user(items, body.text)
        # the text waits for the encoder's next batch without holding a scoring thread
        profile = await asyncio.wrap_future(current.encoder.submit(body.text)) if body.text else None
        return JSONResponse(await run_in_threadpool(current.new_user, items, body.text, body.k, profile))

    @app.get("/v1/items/{item_id}/similar", summary="Similar items in the fused GNN + text space")
    async def similar(item_id: str, k: int = Query(10, ge=1, le=MAX_K)):
        current, item_id = state(), check_id("item", item_id)
        if current.similar_is_cheap:  # a small catalogue: less work than a thread hop
            return JSONResponse(current.similar(item_id, k))
        return JSONResponse(await run_in_threadpool(current.similar, item_id, k))

    return app


class _NotReady(Exception):
    pass


def docs_without_cdn(app: FastAPI) -> None:
    """``/docs`` with the Swagger UI files served by the service itself (the
    ``swagger-ui-bundle`` package) instead of FastAPI's default CDN, so the page works on a
    machine without internet access."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-static")
    # the bundled Swagger UI (4.x) reads OpenAPI 3.0 documents; this schema uses nothing 3.1-only
    app.openapi_version = "3.0.3"

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                                   swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-static/swagger-ui.css", swagger_favicon_url="")


__all__ = ["create_app"]
