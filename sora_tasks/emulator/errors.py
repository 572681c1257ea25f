"""The emulator's error answers, in OpenAI's shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def invalid(param: str, value: object, allowed: tuple[str, ...]) -> ApiError:
    supported = ", ".join(f"'{item}'" for item in allowed)
    return ApiError(
        400, f"Invalid value: '{value}'. Supported values are: {supported}.", param=param, code="invalid_value"
    )


def missing(param: str) -> ApiError:
    return ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def server_error() -> ApiError:
    """The ambiguous failure: the work is done (a job exists and is billed), the answer is lost."""
    return ApiError(500, "The server had an error processing your request.", type="server_error")
