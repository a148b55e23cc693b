import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
application = get_wsgi_application()


def torch_threads_limit() -> None:
    """The web server runs requests side by side (gunicorn workers x threads), so each model call gets one torch
    thread: with PyTorch's default of one thread per core in every call, concurrent predictions spin against each
    other and against anything else on the cores (measured: 10x slower per image on a busy 2-core machine)."""
    from webapp.env import env_int

    threads = env_int("KENSA_WEB_TORCH_THREADS", 1)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


torch_threads_limit()
