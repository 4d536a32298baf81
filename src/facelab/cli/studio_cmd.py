"""`facelab studio`: the workflow in a local browser page (see docs/STUDIO.md)."""

from __future__ import annotations

import typer

from facelab.cli.common import command, state
from facelab.lazy import lazy_module

server = lazy_module("facelab.studio.server")  # Starlette and uvicorn load when it starts


def register(app: typer.Typer) -> None:
    command(app, "studio")(studio_cmd)


def studio_cmd(
    port: int = typer.Option(0, "--port", min=0, max=65535, help="Port to listen on "
                             "(0: a free one, printed)."),
    open_: bool = typer.Option(False, "--open", help="Open the studio in the default "
                               "browser."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; another "
                             "than this machine's own needs --allow-remote."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Let --host be an "
                                      "address other machines reach (plain HTTP: use only "
                                      "on a network you trust)."),
) -> None:
    """Serve the studio, the whole workflow in a browser page on this machine, and print
    its URL with a one-time token.

    Review, sort and clean the facesets; run any stage with its options and watch its
    progress; cancel it. Ctrl-C stops the studio (a running stage is stopped as Ctrl-C stops
    it in a terminal: it saves, and its next run goes on from there)."""
    st = state()
    server.serve(st.ws, host=host, port=port, open_browser=open_, allow_remote=allow_remote)


if __name__ == "__main__":  # `python -m facelab.cli.studio_cmd`, before `facelab studio` exists
    standalone = typer.Typer(add_completion=False)

    @standalone.callback()
    def _root() -> None:
        """facelab's studio alone (`studio -w WS`)."""

    register(standalone)
    standalone()
