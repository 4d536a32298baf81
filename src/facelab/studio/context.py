"""What every page of one studio shares: the workspace, the job runner, caches."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab.studio.jobs import JobRunner
from facelab.workspace import Workspace

CACHE_DIR = ".studio"  # inside the workspace: thumbnails and the like, safe to delete


@dataclass
class StudioContext:
    ws: Workspace
    jobs: JobRunner
    token: str = ""
    allow_remote: bool = False
    #: faceset edits the server makes itself (trash, undo) one at a time: a second request
    #: waits for the first instead of being refused by the stage's lock
    edit_lock: threading.Lock = field(default_factory=threading.Lock)
    caches: dict[str, Any] = field(default_factory=dict)

    @property
    def cache_dir(self) -> Path:
        return self.ws.root / CACHE_DIR
