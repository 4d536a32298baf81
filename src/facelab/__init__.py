"""facelab: replace one consenting person's face in a video with another's.

The package is split by pipeline stage (see docs/ARCHITECTURE.md); lower stages never
import higher ones and the CLI only wires them together.
"""

__version__ = "0.1.0"
