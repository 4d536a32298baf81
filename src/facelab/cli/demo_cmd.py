"""`facelab demo`: the whole workflow, as far as it is built, on the bundled GRID clips."""

import typer


def register(app: typer.Typer) -> None:
    pass
