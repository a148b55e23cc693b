"""Kensa's Celery workers. `celery -A workers worker -Q default,train` starts one."""

from workers.celery import app

__all__ = ["app"]
