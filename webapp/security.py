"""Content-Security-Policy for the app's HTML pages.

Every page's scripts and styles come from Kensa's own static files (htmx, editor.js, ...; no inline <script>, no
style or on* attributes, no eval), so the policy allows nothing else: an injected script or style in a page would
not run. htmx 2's own indicator <style> is turned off in base.html (htmx-config meta) and its rules live in
kensa.css. Stored files keep their stricter sandboxing policy (webapp.serving), which this middleware leaves alone."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",  # the editor's canvas exports; Django admin's icons
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    """Adds CONTENT_SECURITY_POLICY to HTML responses that do not carry a policy of their own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        is_html = response.get("Content-Type", "").startswith("text/html")
        if is_html and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response
