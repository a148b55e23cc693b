"""`@api_endpoint`: what every API view shares. Token auth instead of a session, so no CSRF and no login redirect;
every failure is a JSON error, never an HTML page."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from webapp.api.errors import ApiError
from webapp.api.services import api_token_authenticate, api_token_project

METHOD_NOT_ALLOWED = "Use {methods} on this endpoint."
REQUEST_TOO_LARGE = "The request is larger than this server accepts (KENSA_MAX_IMAGE_BYTES per image)."
TOO_MANY_FILES = "Too many files in one request."


def error_response(error: ApiError) -> JsonResponse:
    response = JsonResponse({"error": {"code": error.code, "message": error.message}}, status=error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="kensa"'
    return response


def api_endpoint(*, methods: tuple[str, ...], scope: str | None) -> Callable:
    """Authenticates the bearer token and hands the view `token` and `project` (the token's own; another
    project's id is a 404). `scope=None` accepts a token of any scope."""

    def wrap(view: Callable) -> Callable:
        @functools.wraps(view)
        def handle(request: HttpRequest, *args, project_id=None, **kwargs) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise ApiError(405, "method_not_allowed", METHOD_NOT_ALLOWED.format(methods=", ".join(methods)))
                token = api_token_authenticate(authorization=request.headers.get("Authorization", ""))
                project = api_token_project(token=token, project_id=project_id, scope=scope)
                return view(request, *args, token=token, project=project, **kwargs)
            except ApiError as error:
                return error_response(error)
            except RequestDataTooBig:
                return error_response(ApiError(413, "too_large", REQUEST_TOO_LARGE))
            except TooManyFilesSent:
                return error_response(ApiError(413, "too_many_files", TOO_MANY_FILES))

        handle.api_methods = methods  # read by the test that checks the OpenAPI schema covers every route
        return login_not_required(csrf_exempt(handle))

    return wrap
