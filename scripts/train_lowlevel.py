"""Train the token-conditioned low-level policy (hydra config: configs/train_lowlevel.yaml).

    python scripts/train_lowlevel.py                          # CPU default
    python scripts/train_lowlevel.py themes=[walk,run]        # a subset of the clips
    python scripts/train_lowlevel.py --cfg job                # print the resolved config

Running the same command again resumes from out_dir/checkpoints/latest. The result is out_dir/final/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from control.lowlevel import PolicyConfig, PPOConfig, tracking_config
from control.lowlevel_train import RunConfig, machine_description, train_lowlevel
from envs.reference import ReferenceLibrary, load_reference
from envs.vec_env import H1TrackingVecEnv
from motiontok.errors import CheckpointError, MotionDataError
from motiontok.motion import load_motions


def training_reference(cfg: DictConfig) -> ReferenceLibrary:
    """The training clips: every clip of ``cfg.source`` (of ``cfg.themes``) except ``cfg.exclude``."""
    if not cfg.source:
        raise MotionDataError("no motion data: set MOTIONTOK_DATA or source=PATH (a folder of LAFAN1-H1 CSV files)")
    names = [c.name for c in load_motions(cfg.source) if c.name not in set(cfg.exclude or [])]
    return load_reference(cfg.source, cfg.tokenizer, clips=names, themes=list(cfg.themes) if cfg.themes else None)


@hydra.main(config_path="../configs", config_name="train_lowlevel", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        ref = training_reference(cfg)
        task = tracking_config(OmegaConf.to_container(cfg.env, resolve=True))
        run = RunConfig(**OmegaConf.to_container(cfg.run, resolve=True))
        env = H1TrackingVecEnv(ref, run.num_envs, task, seed=run.seed)
        policy = PolicyConfig(**OmegaConf.to_container(cfg.policy, resolve=True))
        ppo = PPOConfig(**OmegaConf.to_container(cfg.ppo, resolve=True))
        record = {
            "env": OmegaConf.to_container(cfg.env, resolve=True),
            "policy": OmegaConf.to_container(cfg.policy, resolve=True),
            "ppo": OmegaConf.to_container(cfg.ppo, resolve=True),
            "run": OmegaConf.to_container(cfg.run, resolve=True),
            "clips": list(ref.names),
            "command": " ".join(sys.argv),
            "machine": machine_description(),
        }
        summary = train_lowlevel(env, cfg.out_dir, run, policy, ppo, record)
    except (MotionDataError, CheckpointError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary))
    print(f"policy: {Path(cfg.out_dir) / 'final'}" if summary["finished"] else "stopped early; run again to resume")


if __name__ == "__main__":
    main()
