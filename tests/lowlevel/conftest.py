"""Fixtures of the low-level tests: a tiny policy size and two small references (a standing and a walking one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from control.lowlevel import PolicyConfig
from envs.reference import ReferenceLibrary
from motiontok import MotionTokenizer, robot
from motiontok.motion import MotionClip
from tests.conftest import synthetic_qpos

ROOT = Path(__file__).resolve().parents[2]
SMALL = PolicyConfig(embed_dim=8, conv_channels=8, token_features=16, net_arch=[32])


@pytest.fixture(scope="module")
def stand() -> ReferenceLibrary:
    """The ``home`` keyframe held for 96 frames at 30 fps."""
    home = robot.load_model().key("home").qpos.copy()
    return ReferenceLibrary.build([MotionClip("stand", np.tile(home, (96, 1)), 30.0)], MotionTokenizer.load())


@pytest.fixture(scope="module")
def walk() -> ReferenceLibrary:
    """A synthetic 100-frame clip named like a walk file."""
    clip = MotionClip("walk9_subject0", synthetic_qpos(100, seed=3), 30.0)
    return ReferenceLibrary.build([clip], MotionTokenizer.load())
