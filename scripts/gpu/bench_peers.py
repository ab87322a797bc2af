#!/usr/bin/env python3
"""Peers of cpsim_kernel_bench on the same shapes and the same block layouts: PyTorch SDPA with the
flash and cuDNN backends (dense masks only: density 1, causal or not) and FlexAttention with a block
mask built from the layouts the kernel bench wrote (layouts/S_density_c|n.bin, uint8 n x n). TFLOP/s
count only unmasked cells (forward 4*cells*H*D, backward 2.5x forward), as the kernel bench does.
Needs only PyTorch. Writes peers.json and peers.md to --out."""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def time_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def cells_of(layout, causal, block):
    """Unmasked cells per head: every on block is full, except diagonal blocks of a causal mask."""
    on = int(layout.sum().item())
    if not causal:
        return on * block * block
    diag = int(torch.diagonal(layout).sum().item())
    return (on - diag) * block * block + diag * block * (block + 1) // 2


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layouts", required=True, help="layouts/ folder written by cpsim_kernel_bench")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seqs", default="4096,16384,32768")
    ap.add_argument("--densities", default="1,0.5,0.25,0.1,0.05")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--peers", default="sdpa_flash,sdpa_cudnn,flex")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    peers = args.peers.split(",")
    flex = None
    if "flex" in peers:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        # one mask_mod per (S, causal, density): let dynamo keep every compiled variant instead of
        # falling back to the (slow) eager path after its default recompile limit
        for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, 4096)
        flex = torch.compile(flex_attention)
    dev = torch.device("cuda")
    H, D, block = args.heads, args.dim, 128
    rows = []
    md = ["| peer | S | causal | density | pass | time ms | TFLOP/s |", "|---|---|---|---|---|---|---|"]

    def record(peer, S, causal, density, cells, fwd_ms, fb_ms, note=""):
        fwd_flop = 4.0 * cells * H * D
        for p, ms, flop in (("fwd", fwd_ms, fwd_flop), ("bwd", None if fb_ms is None else fb_ms - fwd_ms, 2.5 * fwd_flop)):
            if ms is None:
                continue
            tf = flop / (ms * 1e-3) * 1e-12 if ms > 0 else float("nan")
            rows.append({"peer": peer, "S": S, "causal": causal, "density": density, "pass": p, "cells_per_head": cells,
                         "time_s": ms * 1e-3, "tflops": tf, "note": note})
            md.append(f"| {peer} | {S} | {'yes' if causal else 'no'} | {density} | {p} | {ms:.3f} | {tf:.1f} |")
            print(md[-1], flush=True)

    for S in [int(s) for s in args.seqs.split(",")]:
        q, k, v = (torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        g = torch.randn(1, H, S, D, device=dev, dtype=torch.bfloat16)
        nb = (S + block - 1) // block
        for causal in (False, True):
            for ds in args.densities.split(","):
                density = float(ds)
                tag = f"{S}_{density:g}_{'c' if causal else 'n'}.bin"  # the kernel bench's names (C++ ostream format)
                path = os.path.join(args.layouts, tag)
                if not os.path.exists(path):
                    print(f"missing layout {path}: skipped", file=sys.stderr)
                    continue
                layout = torch.frombuffer(bytearray(open(path, "rb").read()), dtype=torch.uint8).reshape(nb, nb).to(dev)
                cells = cells_of(layout.cpu(), causal, block)

                def fwd_bwd(f):
                    def run():
                        o = f()
                        o.backward(g)
                    return run

                if density == 1.0:
                    for peer, be in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
                        if peer not in peers:
                            continue
                        try:
                            with sdpa_kernel([be]):
                                f = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                                with torch.no_grad():
                                    fwd = time_ms(f, args.warmup, args.reps)
                                fb = time_ms(fwd_bwd(f), args.warmup, args.reps)
                            record(peer, S, causal, density, cells, fwd, fb)
                        except Exception as e:  # a backend missing on this GPU/build is reported, not fatal
                            rows.append({"peer": peer, "S": S, "causal": causal, "density": density, "error": str(e)[:300]})
                            print(f"{peer} S={S} causal={causal}: {e}", file=sys.stderr)
                if flex is not None:
                    try:
                        lay = layout.bool()

                        def mask_mod(b, h, qi, ki):
                            vis = lay[qi // block, ki // block]
                            return (vis & (qi >= ki)) if causal else vis

                        t0 = time.time()
                        bm = create_block_mask(mask_mod, None, None, S, S, device=dev, BLOCK_SIZE=block)
                        build_s = time.time() - t0
                        f = lambda: flex(q, k, v, block_mask=bm)
                        with torch.no_grad():
                            fwd = time_ms(f, args.warmup, args.reps)
                        fb = time_ms(fwd_bwd(f), args.warmup, args.reps)
                        record("flex", S, causal, density, cells, fwd, fb, note=f"block mask built in {build_s:.2f} s")
                    except Exception as e:
                        rows.append({"peer": "flex", "S": S, "causal": causal, "density": density, "error": str(e)[:300]})
                        print(f"flex S={S} causal={causal} density={density}: {e}", file=sys.stderr)
        del q, k, v, g
        torch.cuda.empty_cache()
    meta = {"tool": "bench_peers.py", "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(), "command": " ".join(sys.argv), "heads": H, "head_dim": D,
            "dtype": "bf16", "block": block, "flop_convention": "fwd 4*cells*H*D over unmasked cells; bwd 2.5x fwd; "
            "bwd time = (fwd+bwd) - fwd", "rows": rows}
    with open(os.path.join(args.out, "peers.json"), "w") as f:
        json.dump(meta, f, indent=2)
    with open(os.path.join(args.out, "peers.md"), "w") as f:
        f.write(f"# peers on {meta['gpu']} (torch {meta['torch']})\n\n" + "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
