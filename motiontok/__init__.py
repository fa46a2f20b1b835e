"""motiontok: discrete motion tokenization (DAPS) for the Unitree H1.

``from motiontok import MotionTokenizer`` is the entry point for other RL stacks; it needs torch, numpy and
mujoco, never hydra, ``control`` or ``envs``.
"""

from motiontok.errors import CheckpointError, MotionDataError
from motiontok.motion import MotionClip, load_motions
from motiontok.tokenizer import MotionTokenizer

__all__ = ["CheckpointError", "MotionClip", "MotionDataError", "MotionTokenizer", "load_motions"]
__version__ = "0.1.0"
