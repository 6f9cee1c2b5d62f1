"""Run the app under uvicorn: JSON logs, graceful shutdown (SIGTERM/SIGINT: stop accepting, finish in-flight
requests, then drain the batchers), no uvicorn access log (ours carries request ids)."""

from __future__ import annotations

import signal

import uvicorn

from serve.observability import setup_logging
from serve.settings import Settings


def make_server(settings: Settings, configure_logging: bool = True) -> uvicorn.Server:
    """A uvicorn server for the app (``server.run()`` blocks; ``server.should_exit = True`` stops it gracefully).
    ``configure_logging``: JSON lines on stderr (off when embedding the server, e.g. in tests)."""
    from serve.app import create_app

    if configure_logging:
        setup_logging(settings.log_level)
        import mne

        # the inputs' own problems reach clients through the data stage's warnings, not MNE's log; a quiet MNE
        # also spares every request the logger-cache resets of verbose="error" (serve.inputs.mne_input)
        mne.set_log_level("ERROR")
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, access_log=False, log_config=None,
        timeout_graceful_shutdown=int(settings.graceful_timeout_s) or None, lifespan="on",
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
    )
    return uvicorn.Server(config)


def run_server(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; after the graceful shutdown the process exits 0 (uvicorn re-raises the signal
    to the handler that was installed before it, here a no-op, instead of dying by the signal)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    make_server(settings).run()
