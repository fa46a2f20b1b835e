"""One DAPS training step vs one teacher-forced forward/backward of the same batch, and where the time goes.

    python bench/bench_daps_step.py [--batch 16] [--samples 8] [--repeats 5] [--device cpu]
    python bench/bench_daps_step.py --batch 256 --cuda-graph --tf32     # GPU: graph-replayed sampling, TF32

Prints one JSON object. Phases of a DAPS step (paper Algorithm 1): encoder context, autoregressive sampling of
K codes per input (no gradient, KV cache), teacher-forced log q of the samples, decoder + Gaussian log-likelihood,
backward, optimizer step. The reference "teacher-forced" step runs the same networks on the same B*K code
sequences (drawn at random) with no sampling: the ratio is the price of policy search.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from motiontok.estimators import DapsConfig, DapsEstimator
from motiontok.models import DiscreteVAE
from motiontok.nets import TrajectoryNetConfig, gaussian_log_prob


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="windows per step (B)")
    parser.add_argument("--samples", type=int, default=8, help="codes sampled per window (K)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--cuda-graph", action="store_true", help="sample the K codes as one CUDA graph (GPU)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (GPU)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = TrajectoryNetConfig()
    model = DiscreteVAE(cfg).to(device)
    est = DapsEstimator(DapsConfig(num_samples=args.samples, cuda_graph=args.cuda_graph)).to(device)
    params = list(model.parameters()) + list(est.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    B, K = args.batch, args.samples
    x = torch.randn(B, cfg.length, cfg.feature_dim, device=device)

    def phases() -> dict[str, float]:
        t = {}
        _sync(device)
        t0 = time.perf_counter()
        memory = model.memory(x)  # (B, T, H)
        _sync(device)
        t["encoder"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        tokens = est.sample_codes(model, memory.detach())  # (B*K, T), as the DAPS step draws them
        _sync(device)
        t["sample"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        log_q = model.posterior.log_prob(memory, tokens)  # (B*K,)
        _sync(device)
        t["log_q"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mean, var = model.decoder(tokens)
        log_p = gaussian_log_prob(x.repeat_interleave(K, 0), mean, var)  # (B*K,)
        _sync(device)
        t["decoder"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        (log_q.sum() + log_p.sum()).backward()
        _sync(device)
        t["backward"] = time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        return t

    def daps_step() -> float:
        _sync(device)
        t0 = time.perf_counter()
        out = est(model, x, 0)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0

    def teacher_forced_step() -> float:
        tokens = torch.randint(cfg.vocab_size, (B * K, cfg.block_size), device=device)
        _sync(device)
        t0 = time.perf_counter()
        memory = model.memory(x)  # (B, T, H) shared by the K rows of each input
        log_q = model.posterior.log_prob(memory, tokens)
        mean, var = model.decoder(tokens)
        loss = -(log_q.sum() + gaussian_log_prob(x.repeat_interleave(K, 0), mean, var).sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0

    for _ in range(2):  # warm-up
        daps_step()
        teacher_forced_step()
    daps = statistics.median(daps_step() for _ in range(args.repeats))
    tf = statistics.median(teacher_forced_step() for _ in range(args.repeats))
    ph = [phases() for _ in range(args.repeats)]
    breakdown = {k: round(1000 * statistics.median(p[k] for p in ph), 2) for k in ph[0]}
    print(
        json.dumps(
            {
                "device": str(device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "batch": B,
                "samples": K,
                "cuda_graph": args.cuda_graph,
                "tf32": args.tf32,
                "daps_step_ms": round(1000 * daps, 2),
                "teacher_forced_step_ms": round(1000 * tf, 2),
                "ratio": round(daps / tf, 3),
                "phase_ms": breakdown,
                "phase_share": {k: round(v / sum(breakdown.values()), 3) for k, v in breakdown.items()},
            }
        )
    )
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
