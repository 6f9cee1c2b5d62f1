"""brainforge serving: FastAPI app with Open Inference Protocol v2 routes, uploads, batching, auth and metrics.

    python -m serve --registry REGISTRY [--api-keys keys.json --port 8000]
    python -m serve keys add --file keys.json --name lab-pipeline
"""

__version__ = "0.1.0"

_LAZY = {"create_app": "serve.app", "Settings": "serve.settings", "run_server": "serve.server"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'serve' has no attribute {name!r}")


__all__ = ["Settings", "__version__", "create_app", "run_server"]
