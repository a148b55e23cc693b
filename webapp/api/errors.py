"""The one error the API answers with: an HTTP status, a stable machine-readable code, and a message for people."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
