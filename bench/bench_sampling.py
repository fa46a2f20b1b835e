"""Benchmark ARPosterior sampling with and without the KV cache, and batch-1 greedy encoding latency (torch, and
the compiled decoder that ``MotionTokenizer.encode`` uses on CPU for a few windows, ``nets/greedy_cpu.py``).

Prints one JSON object to stdout (progress goes to stderr). Paper LAFAN config (G.1): F=127, L=32, T=64,
V=1024, H=128, 4 heads, 2 layers; untrained weights (timings do not depend on the values), and the public
``MotionTokenizer.encode`` of one window with the shipped checkpoint (``--checkpoint``).

    .venv/bin/python bench/bench_sampling.py [--device cpu|cuda] [--repeats 5]

The main figures use torch's thread settings unchanged. On CPU everything is repeated with one
intra-op thread ("one_thread"): (B, 1, 128) tensors gain nothing from threads. On an oversubscribed
machine (``loadavg`` > cores) idle OpenMP workers spin-waiting for work steal the cores from the main
thread and batch-1 decoding slows ~100x; ``OMP_WAIT_POLICY=PASSIVE`` (set before starting Python) or
one thread avoids it. ``omp_wait_policy`` and ``loadavg`` record the conditions.
Each case stops early once it has used its time budget (at least one timed run); ``*_runs`` lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

from motiontok.nets import ARPosterior, TrajectoryEncoder, TrajectoryNetConfig
from motiontok.nets.greedy_cpu import GreedyDecoderCPU
from motiontok.tokenizer import DEFAULT_CHECKPOINT, GREEDY_CPU_MAX_BATCH, MotionTokenizer


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed_ms(
    fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1, budget_s: float = 12.0
) -> list[float]:
    """Wall-clock ms of up to ``repeats`` calls of ``fn`` after up to ``warmup`` calls.

    Warm-up stops after a quarter of ``budget_s``; timed calls stop once the case (warm-up included)
    has used ``budget_s``, with at least one timed call.
    """

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    for _ in range(warmup):
        if time.perf_counter() - start > budget_s / 4:
            break
        fn()
    sync()
    times: list[float] = []
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def bench_sampling(posterior: ARPosterior, memory: torch.Tensor, device: torch.device, repeats: int, seed: int) -> dict:
    """Median ms of posterior.sample with and without the KV cache, and the speedup."""
    gen = torch.Generator(device=device).manual_seed(seed)
    row: dict = {}
    for use_cache in (True, False):
        slow = not use_cache and memory.shape[0] > 16  # full-prefix recomputation at large batch
        n = min(repeats, 2) if slow else repeats

        def sample(use_cache: bool = use_cache) -> torch.Tensor:
            return posterior.sample(memory, generator=gen, use_cache=use_cache)

        name = "cache" if use_cache else "no_cache"
        log(f"  b{memory.shape[0]} {name}: up to {n} repeats")
        times = timed_ms(sample, device, n, warmup=1 if use_cache else 0)
        row[name] = round(statistics.median(times), 2)
        row[f"{name}_runs"] = [round(t, 1) for t in times]
    row["speedup"] = round(row["no_cache"] / row["cache"], 2)
    return row


def bench_encode(
    encoder: TrajectoryEncoder, posterior: ARPosterior, cfg: TrajectoryNetConfig, device, repeats: int
) -> dict:
    """Latency of greedy encoding (TrajectoryEncoder + greedy decoding): batch 1, torch path and, on CPU, the
    compiled decoder that MotionTokenizer.encode uses for up to GREEDY_CPU_MAX_BATCH windows; then both paths at
    small batches (the crossover that sets that constant)."""
    x = torch.randn(1, cfg.length, cfg.feature_dim, device=device)
    log(f"  encode one window (b1, greedy): up to {repeats} repeats")
    times = timed_ms(lambda: posterior.sample(encoder(x), greedy=True), device, repeats, 5)
    enc_times = timed_ms(lambda: encoder(x), device, repeats, 5, budget_s=3.0)
    row = {
        "encode_window_b1_torch_ms": round(statistics.median(times), 2),
        "encode_window_b1_torch_ms_min": round(min(times), 2),
        "encoder_only_b1_ms": round(statistics.median(enc_times), 3),
    }
    if device.type != "cpu":
        return row
    fast = GreedyDecoderCPU(posterior)
    fast(encoder(x))  # compiles the loop, or loads it from numba's cache
    times = timed_ms(lambda: fast(encoder(x)), device, repeats, 5)
    row |= {
        "encode_window_b1_compiled_ms": round(statistics.median(times), 2),
        "encode_window_b1_compiled_ms_min": round(min(times), 2),
        "compiled_speedup_b1": round(row["encode_window_b1_torch_ms"] / statistics.median(times), 2),
        "greedy_cpu_max_batch": GREEDY_CPU_MAX_BATCH,
        "greedy_decode_ms_by_batch": {},
    }
    for batch in (2, 4, 8, 16, 32):
        memory = encoder(torch.randn(batch, cfg.length, cfg.feature_dim))
        t_torch = timed_ms(lambda m=memory: posterior.sample(m, greedy=True), device, 5, 1, budget_s=4.0)
        t_compiled = timed_ms(lambda m=memory: fast(m), device, 5, 1, budget_s=4.0)
        row["greedy_decode_ms_by_batch"][f"b{batch}"] = {
            "torch": round(statistics.median(t_torch), 2),
            "compiled": round(statistics.median(t_compiled), 2),
        }
    return row


def bench_tokenizer_encode(path: str, device: torch.device, repeats: int) -> dict:
    """The public API end to end: ``MotionTokenizer.encode`` of one raw window (input checks, normalisation,
    encoder, greedy decoding) with a trained checkpoint's weights."""
    tok = MotionTokenizer.load(path, device=device)
    x = torch.randn(1, tok.window, 127, device=device) * tok.normalizer.std.float() + tok.normalizer.mean.float()
    log(f"  tok.encode one window ({path}): up to {repeats} repeats")
    times = timed_ms(lambda: tok.encode(x), device, repeats, 5)
    return {
        "tokenizer_encode_b1_ms": round(statistics.median(times), 2),
        "tokenizer_encode_b1_ms_min": round(min(times), 2),
        "tokenizer_encode_b1_ms_p90": round(sorted(times)[int(0.9 * (len(times) - 1))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case (no-cache b256: <= 2)")
    parser.add_argument("--encode-repeats", type=int, default=50, help="timed repeats of the b1 encode")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint", default=str(DEFAULT_CHECKPOINT), help="trained tokenizer for the tok.encode timing ('' skips)"
    )
    parser.add_argument("--no-one-thread", action="store_true", help="skip the one-thread CPU repeat")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    cfg = TrajectoryNetConfig()
    encoder = TrajectoryEncoder(cfg).to(device).eval()
    posterior = ARPosterior(cfg).to(device).eval()
    result: dict = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "config": {
            k: getattr(cfg, k) for k in ("feature_dim", "length", "block_size", "vocab_size", "embed_dim", "num_heads")
        }
        | {"num_layers": cfg.num_layers},
    }
    t_start = time.perf_counter()

    def run_all() -> dict:
        log(f"threads={torch.get_num_threads()}")
        out: dict = {"sample_ms": {}}
        for batch in args.batches:
            memory = encoder(torch.randn(batch, cfg.length, cfg.feature_dim, device=device))  # (B, T, H)
            out["sample_ms"][f"b{batch}"] = bench_sampling(posterior, memory, device, args.repeats, args.seed)
            log(f"  b{batch}: {out['sample_ms'][f'b{batch}']}")
        out |= bench_encode(encoder, posterior, cfg, device, args.encode_repeats)
        if args.checkpoint:
            out |= bench_tokenizer_encode(args.checkpoint, device, 4 * args.encode_repeats)
        return out

    with torch.no_grad():
        result |= run_all()  # torch's thread settings unchanged
        threads = torch.get_num_threads()
        if device.type == "cpu" and threads > 1 and not args.no_one_thread:
            torch.set_num_threads(1)
            try:
                result["one_thread"] = run_all()
            finally:
                torch.set_num_threads(threads)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["bench_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
