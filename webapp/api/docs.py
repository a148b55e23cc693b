"""The API docs page, rendered on the server from the OpenAPI dict: one section per operation with a curl line."""

from __future__ import annotations

from pathlib import Path

from django.http import HttpRequest
from django.urls import reverse

from webapp.api.openapi import openapi_schema
from webapp.projects.models import Project

CLIENT_EXAMPLE = Path(__file__).with_name("client_example.py")


def _curl(method: str, url: str, operation: dict) -> str:
    parts = ["curl"]
    if method != "get":
        parts.append(f"-X {method.upper()}")
    if operation.get("security") != []:
        parts.append('-H "Authorization: Bearer $KENSA_TOKEN"')
    content = operation.get("requestBody", {}).get("content", {})
    if "multipart/form-data" in content:
        fields = content["multipart/form-data"]["schema"]["required"]
        if fields == ["images"]:
            parts.append("-F images=@part1.png -F images=@part2.png")
        else:
            parts.append(f"-F {fields[0]}=@part.png")
    if url.endswith(".png"):
        parts.append("-o out.png")
    elif url.endswith(".zip"):
        parts.append("-OJ")  # saved under the server's file name (Content-Disposition)
    parts.append(f'"{url}"')
    return " ".join(parts)


def _curl_raw(url: str, operation: dict) -> str:
    if "image/*" not in operation.get("requestBody", {}).get("content", {}):
        return ""
    return (
        'curl -X POST -H "Authorization: Bearer $KENSA_TOKEN" -H "Content-Type: image/png" '
        f'--data-binary @part.png "{url}?name=part.png&include=maps"'
    )


def api_operations(*, schema: dict, project: Project) -> list[dict]:
    """Each operation of the schema with its concrete URL for this project and a curl command."""
    server = schema["servers"][0]["url"]
    operations = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            url = server + path.replace("{project_id}", str(project.public_id))
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "operation": operation,
                    "scope": operation.get("x-scope", "none: no token needed"),
                    "content_types": list(operation.get("requestBody", {}).get("content", {})),
                    "responses": [(code, r["description"]) for code, r in operation["responses"].items()],
                    "curl": _curl(method, url, operation),
                    "curl_raw": _curl_raw(url, operation),
                }
            )
    return operations


def docs_context(*, request: HttpRequest, project: Project) -> dict:
    api_url = request.build_absolute_uri("/api/v1")
    schema = openapi_schema(server_url=api_url)
    return {
        "project": project,
        "schema": schema,
        "api_url": api_url,
        "openapi_url": request.build_absolute_uri(reverse("api_openapi")),
        "operations": api_operations(schema=schema, project=project),
        "client_example": CLIENT_EXAMPLE.read_text(),
    }
