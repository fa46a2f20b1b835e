"""Unitree H1 constants and model loading: the one place that knows the robot.

The shipped MJCF (``assets/unitree_h1``, MuJoCo Menagerie, BSD-3) is loaded through ``mujoco.MjSpec`` and
two things are added at load time, so the XML stays byte-identical to upstream:

* **Key-point sites.** The 13 points whose positions enter the feature vector and drive IK. Each is a
  (body, local offset) pair below; the offsets put heel/toe on the sole, the hand at the end of the forearm
  capsule and the head at the helmet.
* **Hip-pitch range.** Menagerie limits hip pitch to +-1.57 rad, but about 9% of LAFAN1-H1 frames go down to
  -3.1 rad. The real H1's hip pitch range is about -3.14..2.53 rad, so that range is used (``JOINT_RANGE_OVERRIDES``).
"""

from __future__ import annotations

import functools

import mujoco
import numpy as np

from motiontok.paths import asset_dir

ASSET_DIR = asset_dir() / "unitree_h1"
"""Directory of the shipped H1 model (``h1.xml``, ``scene.xml``, meshes, LICENSE)."""

JOINT_NAMES: tuple[str, ...] = (
    "left_hip_yaw",
    "left_hip_roll",
    "left_hip_pitch",
    "left_knee",
    "left_ankle",
    "right_hip_yaw",
    "right_hip_roll",
    "right_hip_pitch",
    "right_knee",
    "right_ankle",
    "torso",
    "left_shoulder_pitch",
    "left_shoulder_roll",
    "left_shoulder_yaw",
    "left_elbow",
    "right_shoulder_pitch",
    "right_shoulder_roll",
    "right_shoulder_yaw",
    "right_elbow",
)
"""The 19 hinge joints in qpos order (also the column order of the LAFAN1-H1 CSV files)."""

NUM_JOINTS = len(JOINT_NAMES)
NQ = 7 + NUM_JOINTS  # free joint (x, y, z, qw, qx, qy, qz) + 19 hinges = 26
NV = 6 + NUM_JOINTS  # 25
NU = NUM_JOINTS  # one torque motor per hinge = 19
ROOT_BODY = "pelvis"
TORSO_BODY = "torso_link"
CONTROL_HZ = 100.0
"""Rate of the low-level policy (paper appendix I)."""
DATA_FPS = 30.0
"""Frame rate of the LAFAN1-H1 CSV files."""

KEY_POINTS: tuple[tuple[str, str, tuple[float, float, float]], ...] = (
    # (site name, parent body, offset in the body frame, metres)
    ("left_knee", "left_knee_link", (0.0, 0.0, 0.0)),
    ("left_heel", "left_ankle_link", (-0.035, 0.0, -0.07)),
    ("left_toe", "left_ankle_link", (0.14, 0.0, -0.07)),
    ("right_knee", "right_knee_link", (0.0, 0.0, 0.0)),
    ("right_heel", "right_ankle_link", (-0.035, 0.0, -0.07)),
    ("right_toe", "right_ankle_link", (0.14, 0.0, -0.07)),
    ("head", "torso_link", (0.045, 0.0, 0.68)),
    ("left_shoulder", "left_shoulder_pitch_link", (0.0, 0.0, 0.0)),
    ("left_elbow", "left_elbow_link", (0.0, 0.0, 0.0)),
    ("left_hand", "left_elbow_link", (0.28, 0.0, -0.015)),
    ("right_shoulder", "right_shoulder_pitch_link", (0.0, 0.0, 0.0)),
    ("right_elbow", "right_elbow_link", (0.0, 0.0, 0.0)),
    ("right_hand", "right_elbow_link", (0.28, 0.0, -0.015)),
)
"""Key points tracked by features, IK and the MPJPE metric. Knee+heel+toe fix a leg's 5 joints, shoulder
(rigid on the torso) fixes torso yaw, elbow+hand fix an arm's 4 joints; the head is the top of the body."""

KEY_POINT_NAMES: tuple[str, ...] = tuple(name for name, _, _ in KEY_POINTS)
NUM_KEY_POINTS = len(KEY_POINTS)
FOOT_POINTS: tuple[str, ...] = ("left_heel", "left_toe", "right_heel", "right_toe")
"""Key points on the soles, used for contact and foot-skate measures."""
FOOT_POINT_INDEX: tuple[int, ...] = tuple(KEY_POINT_NAMES.index(n) for n in FOOT_POINTS)

JOINT_RANGE_OVERRIDES: dict[str, tuple[float, float]] = {
    "left_hip_pitch": (-3.14, 2.53),
    "right_hip_pitch": (-3.14, 2.53),
}
"""Joint ranges (rad) that replace Menagerie's; see the module docstring."""


def load_spec(scene: bool = True) -> mujoco.MjSpec:
    """The H1 ``MjSpec`` with key-point sites added and joint ranges overridden.

    ``scene=True`` loads ``scene.xml`` (robot, floor, light); ``False`` loads the bare robot.
    """
    path = ASSET_DIR / ("scene.xml" if scene else "h1.xml")
    if not path.is_file():
        raise FileNotFoundError(f"H1 model not found at {path}; is the package installed from a full checkout?")
    spec = mujoco.MjSpec.from_file(str(path))
    for name, body, offset in KEY_POINTS:
        spec.body(body).add_site(name=name, pos=list(offset), size=[0.02, 0.02, 0.02], rgba=[1, 0.3, 0.1, 1])
    for joint, rng in JOINT_RANGE_OVERRIDES.items():
        spec.joint(joint).range = list(rng)
    return spec


@functools.lru_cache(maxsize=4)
def load_model(scene: bool = True) -> mujoco.MjModel:
    """Compiled H1 ``MjModel`` (cached; treat it as read-only and make an ``MjData`` per user)."""
    model = load_spec(scene).compile()
    assert model.nq == NQ and model.nv == NV and model.nu == NU, "unexpected H1 model dimensions"
    names = tuple(model.joint(i).name for i in range(1, model.njnt))
    assert names == JOINT_NAMES, f"joint order changed: {names}"
    return model


def key_point_site_ids(model: mujoco.MjModel) -> np.ndarray:
    """Site ids of :data:`KEY_POINTS` in ``model``, in that order."""
    return np.array([mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, n) for n in KEY_POINT_NAMES])


def joint_limits(model: mujoco.MjModel | None = None) -> np.ndarray:
    """(19, 2) hinge ranges in rad, after overrides."""
    model = model or load_model()
    return model.jnt_range[1:].copy()
