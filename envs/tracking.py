"""The H1 tracking simulation: N environments stepped together, at 100 Hz over MuJoCo physics at 0.002 s.

One implementation serves both faces: :class:`envs.vec_env.H1TrackingVecEnv` (stable-baselines3) exposes it
with N environments, :class:`envs.gym_env.H1TrackingEnv` (gymnasium) with one. Physics runs in a thread pool,
each thread stepping its slice of the ``MjData`` (``mj_step`` releases the GIL); observations, rewards and
terminations are computed for all N at once in numpy.

Actions are 19 numbers in [-1, 1] (clipped). ``action_mode``:

* ``pd_offset`` (default): PD targets = the joint angles decoded from the current tokens + ``action_scale`` * a
  (one scale, or one per joint group: ``{hip, knee, ankle, torso, arm}``, e.g. more for the weak ankles),
  through MuJoCo position actuators; the policy learns a physical correction of what the tokens say;
* ``pd``: PD targets = the standing pose + ``action_scale`` * a;
* ``torque``: the paper's 19 motor torques, a * the motor's torque limit.

PD gains per joint group follow LocoMuJoCo's H1 (kp 200/300/40/300/100, kd 5/6/2/6/2 for hip/knee/ankle/
torso/arm); the torque limits of the motors bound the PD forces.

``assist`` (a training curriculum, 0 everywhere else): a virtual PD force and torque on the pelvis towards the
reference's next state, :data:`SUPPORT_GAINS` x ``assist``, applied at every physics substep, so that an early
policy lives long enough to learn tracking while the support fades (virtual assistance as in Yu, Turk and Liu,
"Learning Symmetric and Low-Energy Locomotion", 2018).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import mujoco
import numpy as np

from envs.observations import ObsLayout, observe
from envs.reference import ReferenceLibrary, local_key_points
from envs.rewards import RewardConfig, TerminationConfig, reward_terms, termination_reasons, tracking_errors
from motiontok import robot

ACTION_MODES = ("pd_offset", "pd", "torque")
ACTION_CLIP = 1.0
"""Every action component is clipped to [-ACTION_CLIP, ACTION_CLIP] (then times its ``action_scale``)."""
GAINS: dict[str, tuple[float, float]] = {
    "hip": (200.0, 5.0),
    "knee": (300.0, 6.0),
    "ankle": (40.0, 2.0),
    "torso": (300.0, 6.0),
    "arm": (100.0, 2.0),
}
"""(kp, kd) per joint group (LocoMuJoCo's H1 PD mode)."""
INSTABILITY_WARNINGS = [
    int(mujoco.mjtWarning.mjWARN_BADQPOS),
    int(mujoco.mjtWarning.mjWARN_BADQVEL),
    int(mujoco.mjtWarning.mjWARN_BADQACC),
]
"""MuJoCo warnings raised (with an automatic reset of the data) when the simulation blows up."""
SUPPORT_GAINS = (2000.0, 200.0, 1000.0, 100.0)
"""kp (N/m), kd (N s/m), kp (N m/rad), kd (N m s/rad) of the virtual pelvis support at ``assist`` = 1: a 5 cm
error meets 100 N (a fifth of the H1's weight), a 0.1 rad one 100 N m."""
MAX_JOINT_SPEED = 1e3
"""A joint or root speed (rad/s, m/s) above this means the simulation went unstable."""


ROOT_BODY = 1
"""The pelvis (the free joint's body) in the H1 scene."""


def joint_group(name: str) -> str:
    for group in ("hip", "knee", "ankle", "torso"):
        if group in name:
            return group
    return "arm"


def action_scales(model: mujoco.MjModel, scale: float | dict[str, float]) -> np.ndarray:
    """(nu,) rad of PD-target offset per unit action of each actuator: one scale, or one per joint group."""
    if not isinstance(scale, dict):
        return np.full(model.nu, float(scale))
    return np.array([float(scale[joint_group(model.actuator(i).name)]) for i in range(model.nu)])


@dataclass
class TrackingConfig:
    """Everything that defines the tracking task (saved with a policy)."""

    action_mode: str = "pd_offset"
    action_scale: float | dict[str, float] = 0.25  # rad of PD-target offset per unit action; or per joint group
    control_hz: float = robot.CONTROL_HZ
    timestep: float = 0.002
    episode_seconds: float = 10.0
    next_tokens: bool = False  # also observe the next window's tokens
    num_threads: int = 0  # physics threads (0 = number of CPUs, at most N)
    reward: RewardConfig = field(default_factory=RewardConfig)
    termination: TerminationConfig = field(default_factory=TerminationConfig)

    @property
    def substeps(self) -> int:
        return round(1.0 / (self.control_hz * self.timestep))

    def check(self) -> None:
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        if abs(self.substeps * self.timestep * self.control_hz - 1.0) > 1e-9:
            raise ValueError(f"control period 1/{self.control_hz} is not a multiple of timestep {self.timestep}")
        if isinstance(self.action_scale, dict) and set(self.action_scale) != set(GAINS):
            raise ValueError(
                f"action_scale per joint group needs exactly {sorted(GAINS)}, got {sorted(self.action_scale)}"
            )
        known = set(RewardConfig().weights)
        unknown = set(self.reward.weights) - known
        missing_sigma = {k for k in self.reward.weights if k != "action_rate"} - set(self.reward.sigmas)
        if unknown or missing_sigma:
            raise ValueError(f"reward terms: unknown {sorted(unknown)}, without sigma {sorted(missing_sigma)}")


def build_model(cfg: TrackingConfig) -> mujoco.MjModel:
    """The H1 scene at ``cfg.timestep``; in the PD modes the motors become position actuators with the
    group gains, their torque limits kept as force limits."""
    spec = robot.load_spec(scene=True)
    spec.option.timestep = cfg.timestep
    if cfg.action_mode != "torque":
        for act in spec.actuators:
            kp, kd = GAINS[joint_group(act.name)]
            limit = float(act.ctrlrange[1])
            act.set_to_position(kp=kp, kv=kd)
            act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
            act.forcerange = [-limit, limit]
            act.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE
    return spec.compile()


class TrackingSim:
    """N H1 environments tracking clips of a :class:`ReferenceLibrary` (see the module docstring)."""

    def __init__(self, ref: ReferenceLibrary, num_envs: int, cfg: TrackingConfig | None = None, seed: int = 0):
        self.cfg = cfg or TrackingConfig()
        self.cfg.check()
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        if abs(ref.fps - self.cfg.control_hz) > 1e-9:
            raise ValueError(f"reference at {ref.fps} Hz, control at {self.cfg.control_hz} Hz")
        self.ref, self.num_envs = ref, num_envs
        self.model = build_model(self.cfg)
        self.datas = [mujoco.MjData(self.model) for _ in range(num_envs)]
        self.sites = robot.key_point_site_ids(self.model)
        self.layout = ObsLayout.make(self.cfg.next_tokens)
        self.rng = np.random.default_rng(seed)
        self.home = self.model.key("home").qpos[7:].copy()  # (19,)
        self.torque_limit = np.array([robot.load_model().actuator_ctrlrange[i, 1] for i in range(robot.NU)])
        self.action_scale = action_scales(self.model, self.cfg.action_scale)  # (19,)
        self.max_steps = round(self.cfg.episode_seconds * self.cfg.control_hz)
        self._index_reference()
        threads = self.cfg.num_threads or os.cpu_count() or 1
        self.num_threads = max(1, min(threads, num_envs))
        bounds = np.linspace(0, num_envs, self.num_threads + 1).astype(int)
        self.chunks = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
        self.pool = ThreadPoolExecutor(self.num_threads) if self.num_threads > 1 else None
        n = num_envs
        self.idx = np.zeros(n, np.int64)  # (N,) current reference step
        self.ep_steps = np.zeros(n, np.int64)
        self.prev_action = np.zeros((n, robot.NU))
        self.ctrl = np.zeros((n, robot.NU))
        self.qpos = np.zeros((n, robot.NQ))
        self.qvel = np.zeros((n, robot.NV))
        self.key_pos = np.zeros((n, robot.NUM_KEY_POINTS, 3))
        self.key_prev = np.zeros_like(self.key_pos)
        self.unstable = np.zeros(n, bool)
        self._robot_state: dict[str, np.ndarray] | None = None  # cache of robot_state(), cleared on any change
        self.physics_seconds = 0.0  # wall time spent stepping MuJoCo (threads included), for benchmarks
        self.assist = 0.0  # scale of the virtual pelvis support (a training curriculum; 0 = none, always in use)
        self.support_target = (self.qpos, self.qvel)  # reference state the support pulls towards (N, 26), (N, 25)

    def _index_reference(self) -> None:
        ref = self.ref
        self.clip_last, self.clip_first = ref.clip_last, ref.clip_first  # (S,) each
        self.valid_starts = np.flatnonzero(np.arange(ref.num_steps) < self.clip_last)  # not a clip's last step

    def follow(self, ref: ReferenceLibrary) -> None:
        """Go on from the current physics state with a new reference: every environment moves to the first step
        of ``ref``'s first clip, nothing else changes (``run_policy.py`` re-plans each window this way)."""
        if abs(ref.fps - self.cfg.control_hz) > 1e-9:
            raise ValueError(f"reference at {ref.fps} Hz, control at {self.cfg.control_hz} Hz")
        self.ref = ref
        self._index_reference()
        self.idx[:] = 0
        self._robot_state = None

    # ------------------------------------------------------------------ physics
    def _read(self, i: int) -> None:
        d = self.datas[i]
        self.qpos[i] = d.qpos
        self.qvel[i] = d.qvel
        self.key_pos[i] = d.site_xpos[self.sites]

    def _support(self, i: int, d: mujoco.MjData) -> None:
        """Virtual PD force and torque on the pelvis towards the reference (world frame), scaled by ``assist``."""
        kp, kd, kp_rot, kd_rot = SUPPORT_GAINS
        qpos, qvel = self.support_target[0][i], self.support_target[1][i]
        rot = np.zeros(3)
        mujoco.mju_subQuat(rot, qpos[3:7], d.qpos[3:7])  # pelvis frame: rotation from the robot to the reference
        torque = d.xmat[ROOT_BODY].reshape(3, 3) @ (kp_rot * rot + kd_rot * (qvel[3:6] - d.qvel[3:6]))
        force = kp * (qpos[:3] - d.qpos[:3]) + kd * (qvel[:3] - d.qvel[:3])
        d.xfrc_applied[ROOT_BODY] = self.assist * np.concatenate((force, torque))

    def _physics(self, lo: int, hi: int) -> None:
        m, substeps = self.model, self.cfg.substeps
        for i in range(lo, hi):
            d = self.datas[i]
            d.ctrl[:] = self.ctrl[i]
            warned = d.warning.number[INSTABILITY_WARNINGS].sum()
            assisted = self.assist > 0.0
            for _ in range(substeps):
                if assisted:
                    self._support(i, d)
                mujoco.mj_step(m, d)
            if assisted:
                d.xfrc_applied[ROOT_BODY] = 0.0  # no support outlives its control step
            mujoco.mj_kinematics(m, d)  # mj_step leaves site positions of the state before its integration
            self._read(i)
            fast = np.abs(d.qvel).max() > MAX_JOINT_SPEED
            self.unstable[i] = d.warning.number[INSTABILITY_WARNINGS].sum() > warned or fast
            self.unstable[i] |= not np.isfinite(self.qpos[i]).all()

    def _run(self, fn) -> None:
        if self.pool is None:
            fn(0, self.num_envs)
        else:
            list(self.pool.map(lambda c: fn(*c), self.chunks))

    # ------------------------------------------------------------------ episodes
    def reset(self, ids: np.ndarray | None = None, starts: np.ndarray | None = None) -> None:
        """Reset environments ``ids`` (default all) to reference steps ``starts`` (default: random steps that
        are not the last of their clip, uniformly over all steps of all clips)."""
        ids = np.arange(self.num_envs) if ids is None else np.asarray(ids, np.int64)
        if starts is None:
            starts = self.rng.choice(self.valid_starts, size=len(ids))
        starts = np.asarray(starts, np.int64)
        if starts.shape != ids.shape or (len(starts) and (starts.min() < 0 or starts.max() >= self.ref.num_steps)):
            raise ValueError(f"starts must be {len(ids)} reference steps in [0, {self.ref.num_steps})")
        for i, s in zip(ids, starts, strict=True):
            d = self.datas[i]
            mujoco.mj_resetData(self.model, d)
            d.qpos[:] = self.ref.qpos[s]
            d.qvel[:] = self.ref.qvel[s]
            mujoco.mj_forward(self.model, d)
            self._read(i)
        self.idx[ids] = starts
        self.ep_steps[ids] = 0
        self.prev_action[ids] = 0.0
        self.key_prev[ids] = self.key_pos[ids]
        self.unstable[ids] = False
        self._robot_state = None

    def _targets(self, action: np.ndarray) -> np.ndarray:
        """(N, 19) actuator controls for actions in [-1, 1]."""
        if self.cfg.action_mode == "torque":
            return action * self.torque_limit
        base = self.ref.decoded_joints[self.idx] if self.cfg.action_mode == "pd_offset" else self.home
        return base + self.action_scale * action

    def step(self, action: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Advance all N by one control step. Returns reward (N,), reward terms {name: (N,)}, terminated (N,) and
        truncated (N,). Finished environments are not reset here (the caller decides)."""
        action = self.advance(action)
        err = tracking_errors(self.robot_state(), self.ref_state())
        terms = reward_terms(err, np.sum((action - self.prev_action) ** 2, -1), self.cfg.reward)
        self.prev_action[:] = action
        self.last_reasons = {**termination_reasons(err, self.cfg.termination), "unstable": self.unstable.copy()}
        terminated = np.logical_or.reduce(list(self.last_reasons.values()))
        truncated = ~terminated & ((self.ep_steps >= self.max_steps) | (self.idx >= self.clip_last[self.idx]))
        reward = np.where(self.unstable, 0.0, sum(terms.values()))
        terms = {k: np.where(self.unstable, 0.0, v) for k, v in terms.items()}
        self.last_errors = err
        return reward, terms, terminated, truncated

    def act(self, action: np.ndarray) -> None:
        """One control step without rewards or termination rules (inference: ``run_policy.py`` has its own fall
        test); ``unstable`` still flags a blown-up simulation."""
        self.prev_action[:] = self.advance(action)

    def advance(self, action: np.ndarray) -> np.ndarray:
        """Check and clip actions (N, 19), run the physics of one control step, move the reference on; returns the
        clipped actions (``prev_action`` is the caller's to update)."""
        action = np.asarray(action, np.float64)
        if action.shape != (self.num_envs, robot.NU):
            raise ValueError(f"actions must have shape ({self.num_envs}, {robot.NU}), got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError("actions contain NaN or inf")
        action = np.clip(action, -ACTION_CLIP, ACTION_CLIP)
        self.ctrl[:] = self._targets(action)
        self.key_prev[:] = self.key_pos
        if self.assist > 0.0:
            nxt = np.minimum(self.idx + 1, self.clip_last[self.idx])
            self.support_target = (self.ref.qpos[nxt], self.ref.qvel[nxt])
        t0 = time.perf_counter()
        self._run(self._physics)
        self.physics_seconds += time.perf_counter() - t0
        self.idx = np.minimum(self.idx + 1, self.clip_last[self.idx])  # a finished, not reset env stays at the end
        self.ep_steps += 1
        self._robot_state = None
        return action

    # ------------------------------------------------------------------ state
    def robot_state(self) -> dict[str, np.ndarray]:
        """The simulated robots: qpos, qvel, key_pos, key_local, key_vel (N, ...); computed once per step."""
        if self._robot_state is None:
            self._robot_state = self._compute_robot_state()
        return self._robot_state

    def _joint_state(self) -> dict[str, np.ndarray]:
        """qpos (N, 26) and qvel (N, 25), NaN-free after a blow-up (an unstable env reads its reference state)."""
        bad = self.unstable[:, None]
        return {"qpos": np.where(bad, self.ref.qpos[self.idx], self.qpos), "qvel": np.where(bad, 0.0, self.qvel)}

    def _compute_robot_state(self) -> dict[str, np.ndarray]:
        joints = self._joint_state()
        qpos = joints["qpos"]
        key = np.where(self.unstable[:, None, None], self.ref.key_pos[self.idx], self.key_pos)
        prev = np.where(self.unstable[:, None, None], key, self.key_prev)
        return {
            **joints,
            "key_pos": key,
            "key_local": local_key_points(qpos, key),
            "key_vel": (key - prev) * self.cfg.control_hz,
        }

    def ref_state(self) -> dict[str, np.ndarray]:
        """The reference at each environment's current step, same keys as :meth:`robot_state`."""
        i, r = self.idx, self.ref
        prev = np.maximum(i - 1, self.clip_first[i])
        return {
            "qpos": r.qpos[i],
            "qvel": r.qvel[i],
            "key_pos": r.key_pos[i],
            "key_local": r.key_local[i],
            "key_vel": (r.key_pos[i] - r.key_pos[prev]) * self.cfg.control_hz,
        }

    def observe(self, actor_only: bool = False) -> np.ndarray:
        """(N, layout.size) float32 observations (actor part and the critic's privileged part); ``actor_only``
        (inference) leaves the privileged part zero and skips what only it and the rewards need."""
        if not actor_only:
            return observe(self.layout, self.ref, self.idx, self.robot_state(), self.ref_state(), self.prev_action)
        return observe(self.layout, self.ref, self.idx, self._joint_state(), None, self.prev_action)

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue exactly: physics states, episode counters, RNG."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        size = mujoco.mj_stateSize(self.model, spec)
        phys = np.zeros((self.num_envs, size))
        for i, d in enumerate(self.datas):
            mujoco.mj_getState(self.model, d, phys[i], spec)
        return {
            "physics": phys,
            "idx": self.idx.copy(),
            "ep_steps": self.ep_steps.copy(),
            "prev_action": self.prev_action.copy(),
            "key_prev": self.key_prev.copy(),
            "rng": np.frombuffer(json.dumps(self.rng.bit_generator.state).encode(), np.uint8).copy(),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        if state["physics"].shape[0] != self.num_envs:
            raise ValueError(f"state of {state['physics'].shape[0]} environments, this sim has {self.num_envs}")
        for i, d in enumerate(self.datas):
            mujoco.mj_setState(self.model, d, state["physics"][i], spec)
            mujoco.mj_forward(self.model, d)
            self._read(i)
        for key in ("idx", "ep_steps", "prev_action", "key_prev"):
            getattr(self, key)[:] = state[key]
        self.rng.bit_generator.state = json.loads(bytes(state["rng"]).decode())
        self.unstable[:] = False
        self._robot_state = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
