"""Layering: merge and eval run without the training loop (its loader and preview)."""

from __future__ import annotations

import subprocess
import sys

import pytest

TRAINING = ("facelab.train.trainer", "facelab.train.data", "facelab.train.preview",
            "facelab.train.loop", "facelab.meshswap.train")


@pytest.mark.parametrize("module", ["facelab.merge.merger", "facelab.merge.sae_predictor",
                                    "facelab.merge.meshswap_predictor", "facelab.eval.run"])
def test_merge_and_eval_do_not_import_the_training_loop(module: str) -> None:
    code = (f"import sys, {module}\n"
            f"print(' '.join(m for m in {TRAINING!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "", f"{module} imports {out.strip()}"
