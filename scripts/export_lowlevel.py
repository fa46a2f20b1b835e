"""Ship a trained low-level policy: copy a run's checkpoint (without its trainer state) and write a README with its
training record.

    python scripts/export_lowlevel.py --run runs/lowlevel --out assets/checkpoints/lowlevel_h1 \\
        --eval-json eval_lowlevel.json [--notes notes.md] [--tokenizer DIR]

The checkpoint is the run's final/ or, for a run stopped before run.total_steps (the usual case of runs trained in
chunks), its checkpoints/latest/; trainer_state.pt (optimizer, RNG and environment state) is left out. The README
states the tokenizer, the training command and config, the environment steps, the training time and machine of each
chunk, and the figures of scripts/eval_lowlevel.py --json. The copy must load with the tokenizer
(control.lowlevel.load_actor) before anything is replaced. Exit status: 0 ok, 2 bad run, checkpoint or eval JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from control.lowlevel import load_actor
from envs.reference import tokenizer_fingerprint
from motiontok import MotionTokenizer
from motiontok.checkpoint import TRAINER_STATE
from motiontok.errors import CheckpointError
from motiontok.records import export_parser, metrics_table, readme_text, ship, table

KEYS = ("success_rate", "mean_episode_s", "mpjpe_mm", "mpjpe_decoded_mm", "episodes")
EVAL_COMMAND = (
    "python scripts/eval_lowlevel.py --checkpoint assets/checkpoints/lowlevel_h1 --data $MOTIONTOK_DATA --json"
)


def source_checkpoint(run: Path) -> Path:
    """``run/final`` if the run reached its total steps, else ``run/checkpoints/latest``."""
    if not run.is_dir():
        raise CheckpointError(f"{run}: no such run directory")
    for src in (run / "final", run / "checkpoints" / "latest"):
        if src.is_dir():
            return src
    raise CheckpointError(f"{run}: no final/ or checkpoints/latest/ checkpoint")


def read_eval(path: Path) -> dict[str, Any]:
    """The JSON object of scripts/eval_lowlevel.py --json; a clear error for anything else."""
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not JSON ({err})") from None
    if not isinstance(metrics, dict) or "success_rate" not in metrics or not isinstance(metrics.get("per_theme"), dict):
        raise CheckpointError(f"{path}: not the output of scripts/eval_lowlevel.py --json (no success_rate/per_theme)")
    return metrics


def _machine(machine: Any) -> str:
    """A history entry's machine (or an older record's description string) in words."""
    if not isinstance(machine, dict):
        return str(machine or "?")
    return (
        f"{machine.get('description', '?')}, {machine.get('cpu_count', '?')} CPUs, "
        f"{machine.get('torch_threads', '?')} torch / {machine.get('physics_threads', '?')} physics thread(s)"
    )


def _wall_time(config: dict[str, Any]) -> str:
    history = config.get("history", [])
    if not history:
        return "not recorded (the run predates chunk histories)"
    seconds = sum(h.get("wall_s", 0.0) for h in history)
    first = history[0].get("steps_from", 0)
    since = f", of the steps from {first} on (earlier time not recorded)" if first else ""
    return f"{seconds:.0f} s ({seconds / 3600:.2f} h) over {len(history)} chunk(s){since}"


def config_lines(config: dict[str, Any]) -> list[str]:
    """The "How it was made" bullet list of a low-level checkpoint config (scripts/train_lowlevel.py's record)."""
    env, policy, ppo, run = (config.get(k, {}) for k in ("env", "policy", "ppo", "run"))
    clips = config.get("clips", [])
    history = config.get("history", [])
    machine = history[-1]["machine"] if history else config.get("machine")
    ppo_keys = ("n_steps", "batch_size", "n_epochs", "learning_rate", "adaptive_kl", "gamma", "gae_lambda")
    ppo_keys += ("clip_range", "ent_coef", "vf_coef", "max_grad_norm", "target_kl")
    return [
        f"- command: `python {config.get('command', '?')}` (from the repository root; the same command again "
        "resumes the run)",
        f"- environment steps: {config.get('num_timesteps')} ({run.get('num_envs', '?')} environments, seed "
        f"{run.get('seed', '?')})",
        f"- training time: {_wall_time(config)}",
        f"- machine{' (last chunk)' if history else ''}: {_machine(machine)}",
        f"- env: action mode `{env.get('action_mode', '?')}`, action scale {env.get('action_scale', '?')}, episodes "
        f"of {env.get('episode_seconds', '?')} s, next tokens {env.get('next_tokens', '?')}",
        f"- policy: embed {policy.get('embed_dim')}, conv channels {policy.get('conv_channels')}, token features "
        f"{policy.get('token_features')}, net_arch {policy.get('net_arch')}, log_std_init "
        f"{policy.get('log_std_init')}, normalize_obs {policy.get('normalize_obs', False)}, "
        f"use_sde {policy.get('use_sde', False)}",
        "- PPO: " + ", ".join(f"{k} {ppo[k]}" for k in ppo_keys if k in ppo),
        f"- clips trained on ({len(clips)}): {', '.join(clips) or '?'}",
        "- resolved config: `config.json` (`env`, `policy`, `ppo`, `run`), also the hydra record of the run",
    ]


def history_table(history: list[dict[str, Any]]) -> str:
    """One row per training invocation (chunk) of the run."""
    keys = ("started", "steps_from", "steps_to", "wall_s")
    rows = (
        [i + 1, *(h.get(k) for k in keys), _machine(h.get("machine")), f"`python {h.get('command', '?')}`"]
        for i, h in enumerate(history)
    )
    return table(["chunk", "started (UTC)", "from step", "to step", "wall s", "machine", "command"], rows)


def render_readme(config: dict[str, Any], eval_metrics: dict[str, Any], notes: str = "") -> str:
    per_theme = eval_metrics["per_theme"]
    lines = [
        "# Shipped low-level policy",
        "",
        "Token-conditioned PPO tracking policy for the Unitree H1 (MuJoCo, 100 Hz): from proprioception and the "
        "tokens of the reference motion's current window, made by the H1 tokenizer with fingerprint "
        f"`{config.get('tokenizer_id')}`, it outputs the joint actions that follow the reference. Produced by this "
        "project's `scripts/train_lowlevel.py` on the clips listed below (its default config holds out the paper's "
        "four validation files). Load it with `control.lowlevel.load_actor(path, tokenizer_id)`, which refuses "
        "another tokenizer's tokens.",
        "",
        "## How it was made",
        "",
        *config_lines(config),
    ]
    if config.get("history"):
        lines += ["", "Training chunks (each run of the command):", "", history_table(config["history"])]
    lines += [
        "",
        "## Evaluation",
        "",
        f"`{EVAL_COMMAND}` (the paper's four validation files unless `--clips` is given; deterministic actions; "
        "success = no fall; MPJPE of the key points relative to the pelvis, against the reference and against the "
        f"tokens' decoded motion). Clips: {', '.join(eval_metrics.get('clips', [])) or '?'}; evaluated checkpoint "
        f"at {eval_metrics.get('num_timesteps', '?')} environment steps.",
        "",
        metrics_table(eval_metrics, KEYS),
        "",
        "Per theme:",
        "",
        table(["theme", *KEYS], ([t, *(m.get(k, float("nan")) for k in KEYS)] for t, m in per_theme.items())),
        "",
        "## Use",
        "",
        f"Evaluate: `{EVAL_COMMAND}`. In code: `policy, config = load_actor('assets/checkpoints/lowlevel_h1', "
        "tokenizer_id)`, then `policy.mean_action(obs)` for the deterministic actions of "
        "`envs.vec_env.H1TrackingVecEnv` observations.",
    ]
    return readme_text(lines, notes)


def main(argv: list[str] | None = None) -> int:
    parser = export_parser(__doc__, "output of scripts/eval_lowlevel.py --json")
    parser.add_argument("--tokenizer", help="the tokenizer it must load with (default: the shipped one)")
    args = parser.parse_args(argv)
    try:
        src = source_checkpoint(Path(args.run))
        tokenizer_id = tokenizer_fingerprint(MotionTokenizer.load(args.tokenizer))
        _, config = load_actor(src, tokenizer_id)  # refuses a policy of another tokenizer
        eval_metrics = read_eval(Path(args.eval_json))
        if eval_metrics.get("num_timesteps") not in (None, config.get("num_timesteps")):
            print(
                f"warning: {args.eval_json} evaluated a checkpoint at {eval_metrics['num_timesteps']} steps, "
                f"{src} is at {config.get('num_timesteps')}",
                file=sys.stderr,
            )
        notes = Path(args.notes).read_text() if args.notes else ""
        readme = render_readme(config, eval_metrics, notes)
        ship(src, Path(args.out), readme, lambda p: load_actor(p, tokenizer_id), ignore=(TRAINER_STATE,))
    except (CheckpointError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {src} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
