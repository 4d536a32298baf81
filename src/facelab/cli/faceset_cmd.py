"""`facelab sort` and the curation commands of `facelab faceset` (recover-names, add-debug,
remove-debug, trash, restore, undo, stats, combine): parse, call faceset/, print."""

from pathlib import Path

import typer

from facelab.cli.common import command, paragraphs, state, summary
from facelab.cli.ui import out
from facelab.errors import FacelabError
from facelab.faceset import methods
from facelab.faceset.combine import combine as combine_sets
from facelab.faceset.debug import add_debug as add_debug_files
from facelab.faceset.debug import remove_debug as remove_debug_files
from facelab.faceset.folder import Faceset, resolve
from facelab.faceset.ops import recover_names as recover
from facelab.faceset.ops import restore_files, trash_files
from facelab.faceset.ops import resume as resume_op
from facelab.faceset.ops import undo as undo_ops
from facelab.faceset.sort import sort_faceset
from facelab.faceset.stats import faceset_stats

SIDE_HELP = "src or dst (data_<side>/aligned); or give --dir."


def _method_doc(m: methods.Method) -> str:
    """A sort method's first paragraph (its first line alone may stop mid-sentence)."""
    return summary(paragraphs(m.order.__doc__ or "")) or m.doc


METHOD_HELP = "; ".join(f"{m.name}: {_method_doc(m).rstrip('.')}"
                        for m in methods.METHODS.values())


def _side() -> str | None:
    return typer.Argument(None, help=SIDE_HELP, show_default=False)


def _dir() -> Path | None:
    return typer.Option(None, "--dir", help="Any other faceset folder instead of src/dst.",
                        show_default=False)


def _fs(side: str | None, folder: Path | None) -> Faceset:
    return resolve(state().ws, side, folder)


def register(app: typer.Typer) -> None:
    command(app, "sort")(sort)


def add_commands(faceset: typer.Typer) -> None:
    """Add the curation commands to the `faceset` group."""
    for name, fn in (("recover-names", recover_names), ("add-debug", add_debug),
                     ("remove-debug", remove_debug), ("trash", trash), ("restore", restore),
                     ("undo", undo), ("resume", resume), ("stats", stats),
                     ("combine", combine)):
        command(faceset, name)(fn)


def sort(
    side: str | None = _side(),
    by: str | None = typer.Option(None, "--by", show_default=False, help=METHOD_HELP),
    target: int | None = typer.Option(None, "--target", help="final: how many faces to keep "
                                      "(default 2000).", show_default=False),
    folder: Path | None = _dir(),
    resume: bool = typer.Option(False, "--resume", help="First finish an operation a crash "
                                "interrupted (instead of undoing it)."),
) -> None:
    """Reorder a faceset so that a viewer shows like faces together: files are renamed
    00000.jpg, 00001.jpg, … in the method's order (original names stay in the metadata:
    `faceset recover-names`); one-face and final move faces to the trash. Undo with
    `faceset undo`. Without --by, lists the methods."""
    st = state()
    if by is None:
        out.print("Sort methods (give one with --by):", highlight=False)
        for m in methods.METHODS.values():
            out.print(f"  {m.name:<12} {_method_doc(m)}", highlight=False, soft_wrap=True)
        raise FacelabError("No sort method given: choose one above with --by, e.g. "
                           "`facelab sort src --by blur`.")
    rep = sort_faceset(_fs(side, folder), by, target, resume, st.reporter)
    if rep.resumed is not None:
        out.print(f"Finished the interrupted `{rep.resumed.command}` first.")
    trashed = f", {rep.trashed} moved to the trash" if rep.trashed else ""
    out.print(f"Sorted {rep.faces} faces by {by}: {rep.kept} kept{trashed}, "
              f"{rep.moved} files moved" + (f" (operation {rep.op.id})." if rep.op else "."))


def recover_names(side: str | None = _side(), folder: Path | None = _dir(),
                  resume: bool = typer.Option(False, "--resume", help="First finish an "
                                              "interrupted operation.")) -> None:
    """Rename every face back to the name it had at extraction."""
    op = recover(_fs(side, folder), resume, state().reporter)
    out.print("Every face already has its original name." if op is None else
              f"Renamed {len(op.phases[-1].steps)} faces to their original names.")


def add_debug(side: str | None = _side(), folder: Path | None = _dir()) -> None:
    """Write <name>_debug.jpg beside each face with its 68 landmarks drawn (spot brows too
    low or a jaw line off the face); `remove-debug` deletes them."""
    n = add_debug_files(_fs(side, folder), state().reporter)
    out.print(f"Wrote {n} debug overlays.")


def remove_debug(side: str | None = _side(), folder: Path | None = _dir()) -> None:
    """Delete the _debug.jpg overlays add-debug wrote (checked by their marker), only those."""
    n = remove_debug_files(_fs(side, folder), state().reporter)
    out.print(f"Removed {n} debug overlays.")


def trash(files: list[Path] = typer.Argument(..., help="Faces of one faceset folder.")) -> None:
    """Move faces to the faceset's trash folder (aligned_trash/); `restore` or `undo` brings
    them back."""
    op = trash_files(files, state().reporter)
    out.print(f"Moved {op.files} files to the trash (operation {op.id}).")


def restore(
    args: list[str] = typer.Argument(None, help="Trashed files; with --all: src, dst or a "
                                     "faceset folder.", show_default=False),
    all_: bool = typer.Option(False, "--all", help="Restore everything in the trash."),
) -> None:
    """Move trashed faces back into their faceset (a name taken meanwhile gets _1)."""
    st = state()
    args = args or []
    if all_:
        if len(args) != 1:
            raise FacelabError("--all takes one faceset: src, dst or a folder.")
        fs = resolve(st.ws, args[0], None) if args[0] in ("src", "dst") \
            else resolve(st.ws, None, Path(args[0]))
        op = restore_files(None, fs, st.reporter)
    else:
        op = restore_files([Path(a) for a in args], None, st.reporter)
    out.print("The trash is empty." if op is None else
              f"Restored {op.files} files (operation {op.id}).")


def undo(side: str | None = _side(), folder: Path | None = _dir(),
         steps: int = typer.Option(1, "--steps", help="How many operations to undo.")) -> None:
    """Undo the last curation operations (sort, trash, restore, recover-names, combine),
    restoring exact names and bytes; also rolls back one a crash interrupted."""
    for op in undo_ops(_fs(side, folder), steps, state().reporter):
        out.print(f"Undid `{op.command}` (operation {op.id}, {op.time}).")


def resume(side: str | None = _side(), folder: Path | None = _dir()) -> None:
    """Finish a curation operation a crash interrupted, in the direction it was going (an
    interrupted undo goes on undoing)."""
    op = resume_op(_fs(side, folder), state().reporter)
    out.print("Nothing was interrupted." if op is None else
              f"Finished `{op.command}` (operation {op.id}, {op.time}).")


def stats(side: str | None = _side(), folder: Path | None = _dir()) -> None:
    """Count, sharpness and a yaw × pitch coverage plot (PNG beside the folder) marking the
    angles dst has and src lacks."""
    st = state()
    fs = _fs(side, folder)
    src = dst = None
    if folder is None:
        src, dst = _fs("src", None), _fs("dst", None)
    plot = fs.folder.parent / f"{fs.folder.name}_stats.png"
    rep = faceset_stats(fs, src, dst, plot, st.reporter)
    lo, mid, hi = rep.sharpness
    out.print(f"{fs.label}: {rep.count} faces; sharpness p10 {lo:.0f}, median {mid:.0f}, "
              f"p90 {hi:.0f}; yaw {rep.yaw[0]:+.0f}…{rep.yaw[1]:+.0f}°, pitch "
              f"{rep.pitch[0]:+.0f}…{rep.pitch[1]:+.0f}°; {rep.cells} pose cells of 5°.")
    if rep.lacking is not None:
        out.print(f"src lacks {rep.lacking} of the pose cells dst has.")
    out.print(f"Coverage plot: {rep.plot}")


def combine(
    dirs: list[Path] = typer.Argument(..., help="Faceset folders of one person."),
    to: str | None = typer.Option(None, "--to", help="src or dst.", show_default=False),
    folder: Path | None = typer.Option(None, "--to-dir", help="Any other target folder.",
                                       show_default=False),
) -> None:
    """Copy several facesets into one (bytes and metadata kept; a taken name gets _1)."""
    st = state()
    if to is not None and folder is not None:
        raise FacelabError("Give --to or --to-dir, not both.")
    fs = resolve(st.ws, to, None) if folder is None else \
        Faceset(folder, str(folder), f"--dir {folder}")
    op, skipped = combine_sets(dirs, fs, st.reporter)
    extra = f"; skipped {skipped} files without facelab metadata" if skipped else ""
    out.print(f"Copied {op.files} faces into {fs.label} (operation {op.id}){extra}.")
