"""The browser dashboard of `basic web-app`: a FastAPI app whose process also runs the workers.

    from persistentq.web import create_app
    app = create_app(load_config("config.yaml"))   # an ASGI app for uvicorn
"""

from .app import create_app

__all__ = ["create_app"]
