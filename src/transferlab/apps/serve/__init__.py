"""The shelter's catalog web app (`transferlab serve`): identify a pet's breed from a photo, keep
the catalog, export it as a training CSV.

    from transferlab.apps.serve import Settings, create_app, run_server
    run_server(Settings(model="runs/breeds-export", db="catalog.sqlite"))
"""

from .settings import ServeError, Settings

__all__ = ["ServeError", "Settings", "create_app", "run_server"]


def __getattr__(name: str):
    """create_app / run_server load FastAPI on first use, so importing Settings stays cheap."""
    if name in ("create_app", "run_server"):
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
