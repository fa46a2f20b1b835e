"""Shared pieces of the low-level test modules: a tiny policy size and two small references."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from control.lowlevel import PolicyConfig
from envs.reference import ReferenceLibrary
from motiontok import MotionTokenizer, robot
from motiontok.motion import MotionClip
from tests.conftest import synthetic_qpos

ROOT = Path(__file__).resolve().parent.parent
SMALL = PolicyConfig(embed_dim=8, conv_channels=8, token_features=16, net_arch=[32])


def stand_reference() -> ReferenceLibrary:
    """The ``home`` keyframe held for 96 frames at 30 fps."""
    home = robot.load_model().key("home").qpos.copy()
    return ReferenceLibrary.build([MotionClip("stand", np.tile(home, (96, 1)), 30.0)], MotionTokenizer.load())


def walk_reference() -> ReferenceLibrary:
    """A synthetic 100-frame clip named like a walk file."""
    clip = MotionClip("walk9_subject0", synthetic_qpos(100, seed=3), 30.0)
    return ReferenceLibrary.build([clip], MotionTokenizer.load())
