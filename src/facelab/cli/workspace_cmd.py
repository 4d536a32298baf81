"""`facelab workspace init|clear|info`."""

import typer
from rich.table import Table

from facelab.cli.common import command, group, state
from facelab.cli.ui import out
from facelab.inventory import inventory
from facelab.video.probe import VideoInfo

app = group(help="Create, inspect and clear a workspace (nothing is ever deleted).")


@command(app, "init")
def init() -> None:
    """Create the workspace folders: data_src/, data_dst/ (each with aligned/), model/."""
    ws = state().ws
    created = ws.init()
    out.print(f"Workspace {ws.root}: {len(created)} folders created."
              f" Put the videos in as {ws.root}/data_src.mp4 and {ws.root}/data_dst.mp4.")


@command(app, "clear")
def clear(yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
          ) -> None:
    """Empty the workspace as DeepFaceLab's 'clear workspace' does, except that nothing is
    deleted: everything moves to WORKSPACE/.trash/<timestamp>/."""
    ws = state().ws
    ws.require()
    if not yes:
        typer.confirm(f"Move everything in {ws.root} to {ws.root}/.trash/?", abort=True)
    trash = ws.clear()
    if trash is None:
        out.print(f"Workspace {ws.root} was already empty.")
    else:
        out.print(f"Workspace {ws.root} cleared; the old contents are in {trash}.")


@command(app, "info")
def info() -> None:
    """What each folder holds: videos, frame counts, faces, models."""
    inv = inventory(state().ws)
    # the folder on a line of its own, whole (a table title would wrap it), named once
    out.print(f"Workspace {inv.root.resolve()}", soft_wrap=True)
    table = Table(show_header=True)
    table.add_column("item")
    table.add_column("holds", justify="right")
    for v in inv.videos:
        if isinstance(v, VideoInfo):
            audio = ", ".join(f"#{a.track} {a.codec}" for a in v.audio) or "no audio"
            dur = f"{v.duration_s:.2f}s" if v.duration_s else "?"
            table.add_row(v.name, f"{v.width}×{v.height}, {v.fps} fps, ~{v.frame_count} "
                          f"frames, {dur}, {v.codec}, audio: {audio}")
        else:
            table.add_row(v.split(":")[0], "[red]unreadable[/]")
    for side, frames in inv.kept.items():
        table.add_row(f"data_{side}/", f"{frames} frames kept in the video (indexed)")
    kept_dirs = {f"data_{side}" for side in inv.kept}
    for f in inv.folders:
        if f.path in kept_dirs and not f.files:
            continue  # its frames are the video's, said on the row above
        table.add_row(f.path + "/", f"{f.files} images")
    for r in inv.results:
        table.add_row(r, "result video")
    table.add_row("model/", ", ".join(inv.models) or "no models")
    if inv.trash_entries:
        table.add_row(".trash/", f"{inv.trash_entries} cleared batches")
    out.print(table)
