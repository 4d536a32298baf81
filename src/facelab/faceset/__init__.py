"""Faceset curation: sorting, best-N selection, trash and restore, debug overlays, names
recovered, statistics and combining — every rename and move journaled so undo restores the
exact previous state (`journal.py`)."""
