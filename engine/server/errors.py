"""Every error leaves in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from pagoda.engine.sampling_params import ParamError

log = logging.getLogger(__name__)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers


def as_api_error(e: Exception) -> APIError:
    """The engine's ParamError (or another ValueError) is the request's fault (400); anything
    else is ours (500)."""
    if isinstance(e, APIError):
        return e
    if getattr(e, "fatal", False):  # the engine died (EngineDeadError): the server is going down
        return APIError(503, f"The engine died: {e}", code="engine_unhealthy")
    if isinstance(e, ParamError):
        return APIError(400, str(e), param=e.param)
    if isinstance(e, ValueError):
        return APIError(400, str(e))
    return APIError(500, f"Internal server error: {type(e).__name__}: {e}")


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(status, message, param, code), status_code=status, headers=headers
    )


def validation_error(e: ValidationError) -> APIError:
    """The first problem pydantic found, as a 400 naming the field."""
    err = e.errors()[0]
    if err["type"] == "json_invalid":
        return APIError(400, f"Malformed JSON body: {err.get('ctx', {}).get('error', err['msg'])}")
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "extra_forbidden":
        field = ".".join(loc)
        return APIError(400, f"{field}: unsupported field, not implemented by Pagoda", param=field)
    # In a union, pydantic adds the member's type to the path ("prompt.list[int].0"): name the field.
    cut = next((i for i, p in enumerate(loc) if UNION_TAG.match(p)), len(loc))
    param = ".".join(loc[:cut]) or None
    if cut < len(loc):
        return APIError(
            400, f"{param}: none of its accepted types matches (first: {err['msg']})", param=param
        )
    return APIError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param)


UNION_TAG = re.compile(r"^(str|int|float|bool|none|[A-Z]\w*|\w+\[.*\]|[\w-]+-[\w-]+\[.*)$")

M = TypeVar("M", bound=BaseModel)
# Bodies from this size on are parsed on a worker thread (some ms per MB), not on the event loop.
PARSE_INLINE_BYTES = 64 << 10


async def parse_body(request: Request, model: type[M]) -> M:
    """Read a JSON body ourselves, so that a wrong content type or bad JSON is a 400, not a 422."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise APIError(
            400,
            f"Content-Type must be application/json, got {ctype or 'none'!r}",
            code="unsupported_content_type",
        )
    body = await request.body()
    try:
        if len(body) < PARSE_INLINE_BYTES:
            return model.model_validate_json(body)
        return await asyncio.to_thread(model.model_validate_json, body)
    except ValidationError as e:
        raise validation_error(e) from None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, e: APIError) -> JSONResponse:
        return error_response(e.status, e.message, e.param, e.code, e.headers)

    @app.exception_handler(ValueError)  # ParamError and its kin: the request's fault, a 400
    async def _value(_: Request, e: ValueError) -> JSONResponse:
        err = as_api_error(e)
        return error_response(err.status, err.message, err.param, err.code)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, e: HTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), headers=e.headers)

    @app.exception_handler(ClientDisconnect)  # gone while its body was read: nobody to answer
    async def _gone(_: Request, e: ClientDisconnect) -> Response:
        return Response(status_code=499)  # nginx's "client closed request", as routes.generation

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception) -> JSONResponse:
        err = as_api_error(e)
        if err.status == 500:
            log.exception("unhandled error")
        return error_response(err.status, err.message, err.param, err.code)
