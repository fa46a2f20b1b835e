"""Offscreen videos of H1 qpos trajectories, side by side (e.g. reference left, IK playback right).

MuJoCo picks its OpenGL backend when ``mujoco`` is first imported, from the ``MUJOCO_GL`` environment
variable. Headless callers should run ``os.environ.setdefault("MUJOCO_GL", "egl")`` before importing
``mujoco`` or anything in ``motiontok`` (this module does it too, which only helps if it is the first
import). Software EGL renders roughly 2 frames/s at 640x480, so the defaults are small: 320x240 per panel
at 15 fps (frames are subsampled from the clip rate), and ``max_seconds`` caps the length.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Callable, Sequence
from pathlib import Path

import mujoco
import numpy as np

from motiontok import robot


def _camera(lookat: np.ndarray, distance: float, azimuth: float, elevation: float) -> mujoco.MjvCamera:
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:] = lookat
    cam.distance = distance
    cam.azimuth = azimuth
    cam.elevation = elevation
    return cam


def _make_renderer(model: mujoco.MjModel, width: int, height: int, shadows: bool) -> mujoco.Renderer:
    renderer = mujoco.Renderer(model, height=height, width=width)
    if not shadows:  # shadows and floor reflections cost ~85% of a software-rendered frame
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    return renderer


def render_video(
    trajectories: Sequence[np.ndarray],
    path: str | Path,
    fps: float,
    *,
    video_fps: float = 15.0,
    width: int = 320,
    height: int = 240,
    max_seconds: float | None = None,
    distance: float = 3.0,
    azimuth: float = 135.0,
    elevation: float = -15.0,
    shadows: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write an mp4 (libx264) with one panel per qpos trajectory (T_i, 26), side by side (e.g. the reference
    left, its playback right; or a single robot).

    ``fps`` is the trajectories' frame rate; every ``round(fps / video_fps)``-th frame is drawn (at least 1),
    up to ``max_seconds`` of motion and the shortest trajectory. Each panel's camera looks at its own robot's
    pelvis (height fixed at 0.9 m so the floor stays still). ``shadows=False`` also turns off floor
    reflections: about 7x faster with software EGL (~0.12 s per 320x240 panel on a shared 2-core machine
    instead of ~0.9 s). Returns the number of video frames written."""
    import imageio.v2 as imageio  # lazy: only needed here

    trajectories = [np.asarray(q, np.float64) for q in trajectories]
    if not trajectories:
        raise ValueError("render_video needs at least one trajectory")
    for q in trajectories:
        if q.ndim != 2 or q.shape[1] != robot.NQ:
            raise ValueError(f"qpos must have shape (T, {robot.NQ}), got {q.shape}")
    n = min(len(q) for q in trajectories)
    if max_seconds is not None:
        n = min(n, int(max_seconds * fps) + 1)
    stride = max(1, round(fps / video_fps))
    model = robot.load_model(scene=True)
    data = mujoco.MjData(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with (
        _make_renderer(model, width, height, shadows) as renderer,
        imageio.get_writer(
            str(path), fps=fps / stride, codec="libx264", quality=7, macro_block_size=8, pixelformat="yuv420p"
        ) as writer,
    ):
        for t in range(0, n, stride):
            panels = []
            for q in trajectories:
                data.qpos[:] = q[t]
                mujoco.mj_forward(model, data)
                lookat = np.array([q[t, 0], q[t, 1], 0.9])
                renderer.update_scene(data, camera=_camera(lookat, distance, azimuth, elevation))
                panels.append(renderer.render())  # (height, width, 3) uint8
            writer.append_data(np.concatenate(panels, axis=1))
            count += 1
            if progress is not None:
                progress(1)
    return count


def render_frame(
    qpos: np.ndarray, width: int = 320, height: int = 240, shadows: bool = False, **camera: float
) -> np.ndarray:
    """One (height, width, 3) uint8 image of a single qpos (26,), same camera as :func:`render_video`
    (keywords ``distance``, ``azimuth``, ``elevation``)."""
    model = robot.load_model(scene=True)
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_forward(model, data)
    cam = _camera(
        np.array([qpos[0], qpos[1], 0.9]),
        camera.get("distance", 3.0),
        camera.get("azimuth", 135.0),
        camera.get("elevation", -15.0),
    )
    with _make_renderer(model, width, height, shadows) as renderer:
        renderer.update_scene(data, camera=cam)
        return renderer.render()
