"""`facelab extract` (frames → aligned faces) and `facelab faceset info|import-dfl|convert-png`."""

import json
from pathlib import Path
from typing import Any

import typer

from facelab.cli import faceset_cmd
from facelab.cli.common import command, group, state
from facelab.cli.options import build, flags, with_flags
from facelab.cli.ui import out
from facelab.errors import FacelabError, PartialResult
from facelab.faces.extract import (
    FaceExtractOptions,
    FaceExtractReport,
    extract_faces,
    redo_deleted_debug,
)
from facelab.faces.faceimage import read_meta
from facelab.faces.importer import ImportReport, convert_png, import_dfl
from facelab.workspace import Side

faceset = group("Inspect and bring in facesets (aligned faces with their metadata inside).")


def register(app: typer.Typer) -> None:
    command(app, "extract")(extract)
    faceset_cmd.add_commands(faceset)
    app.add_typer(faceset, name="faceset")


@with_flags(flags(FaceExtractOptions))
def extract(
    side: Side = typer.Argument(..., help="src (faces to learn) or dst (faces to replace)."),
    redo_deleted_debug_: bool = typer.Option(False, "--redo-deleted-debug", help="dst: "
                                             "re-extract the frames whose debug image you "
                                             "deleted, with a more sensitive pass."),
    **given: Any,
) -> None:
    """Find every face in the data_src/ or data_dst/ frames, mark 68 landmarks and the head
    pose, and write aligned faces to data_<side>/aligned/<frame>_<i>.jpg with all metadata
    inside. Reruns skip done frames.

    A frame that cannot be read is skipped and listed in data_<side>/aligned_unreadable.txt
    (exit 3: the other frames' faces are kept); a side without a face in any frame is an
    error that says so."""
    st = state()
    opts = build(FaceExtractOptions, given)
    if redo_deleted_debug_:
        if side != "dst":
            raise FacelabError("--redo-deleted-debug works on dst (its debug images).")
        rep = redo_deleted_debug(st.ws, opts, st.reporter)
        out.print(f"dst: redid {rep.processed_now} frames whose debug image was deleted "
                  f"({rep.faces_written} faces); {len(rep.without_face)} frames still have "
                  "no face.")
        _refuse_unreadable(rep)
        return
    rep = extract_faces(st.ws, side, opts, st.reporter)
    if rep.trashed_to:
        out.print(f"Old faces moved to {rep.trashed_to}.")
    out.print(f"{side}: {rep.frames} frames, {rep.processed_now} processed now, "
              f"{rep.faces_written} faces written to {st.ws.aligned_dir(side)}.")
    if side == "dst" and rep.without_face:
        out.print(f"{len(rep.without_face)} dst frames have no face; listed in "
                  f"{rep.missing_list}.")
    _refuse_unreadable(rep)


def _refuse_unreadable(rep: FaceExtractReport) -> None:
    """Frames skipped as unreadable: one line and exit 3, as for a cut video (the faces
    of the readable frames are kept)."""
    if rep.unreadable:
        raise PartialResult(rep.unreadable_summary())


@command(faceset, "info")
def info(files: list[Path] = typer.Argument(..., help="Aligned face files.")) -> None:
    """Print the metadata of aligned faces as JSON (arrays abbreviated unless --verbose)."""
    st = state()
    for f in files:
        meta = read_meta(f).to_json()
        if not st.verbose:
            for key in ("mesh", "mask"):
                if meta.get(key) is not None:
                    meta[key] = f"<{key}: use --verbose to print>"
        out.print_json(json.dumps({"file": f.name, **meta}))


@command(faceset, "import-dfl")
def import_dfl_cmd(
    folder: Path = typer.Argument(..., help="A folder of DeepFaceLab aligned faces."),
    to: Side = typer.Option("src", "--to", help="Import into data_src/aligned or "
                            "data_dst/aligned."),
) -> None:
    """Import a DeepFaceLab faceset (JPG, or 1.0 PNG). Its pickled metadata is read as data
    only: a file asking for anything else is refused and the import goes on."""
    st = state()
    st.ws.require()
    rep = import_dfl(folder, st.ws.aligned_dir(to), st.reporter)
    _print_import(rep, f"into {st.ws.aligned_dir(to)}")


@command(faceset, "convert-png")
def convert_png_cmd(folder: Path = typer.Argument(..., help="A folder of PNG faces.")) -> None:
    """Convert an old PNG faceset to JPG in place, keeping the metadata; the PNGs move to
    FOLDER/png_trash/."""
    rep = convert_png(folder, state().reporter)
    _print_import(rep, f"in {folder}")


def _print_import(rep: ImportReport, where: str) -> None:
    out.print(f"Imported {len(rep.imported)} faces {where}.")
    for name, why in rep.refused:
        out.print(f"  refused {name}: {why}")
    if rep.refused and not rep.imported:
        raise FacelabError(f"No face could be imported ({len(rep.refused)} refused).")
