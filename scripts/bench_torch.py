#!/usr/bin/env python3
"""PyTorch peers for `moe bench`: the Hugging Face-style eager MoE block and, on a GPU, torch._grouped_mm.

Called by `moe bench` with the block's shape and routing settings (the presets live in Rust; nothing here
repeats them) and the token counts; writes JSON with one record per (implementation, tokens):

    {"torch_version": ..., "device": ..., "records": [{"tokens", "implementation", "median_us",
     "min_us", "max_us", "samples"}], "skipped": ["why an implementation did not run", ...]}

Exits with status 3 and a one-line message on stderr when PyTorch cannot be imported, so the caller can
report the peer as skipped. Weights are random bf16 of the real shapes; every implementation runs the
whole block (router, routing, experts, shared experts, combine) on the same input.
"""
import argparse
import json
import sys
import time

NO_TORCH_EXIT = 3


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--inter", type=int, required=True)
    p.add_argument("--experts", type=int, required=True)
    p.add_argument("--topk", type=int, required=True)
    p.add_argument("--scoring", choices=["softmax", "sigmoid"], default="softmax")
    p.add_argument("--bias", action="store_true", help="score correction bias (DeepSeek-V3)")
    p.add_argument("--n-group", type=int, default=0)
    p.add_argument("--topk-group", type=int, default=0)
    p.add_argument("--group-score", choices=["max", "sum_top2"], default="sum_top2")
    p.add_argument("--renorm", action="store_true")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--shared-inter", type=int, action="append", default=[])
    p.add_argument("--shared-gate", action="store_true", help="sigmoid-gate every shared expert")
    p.add_argument("--tokens", required=True, help="comma-separated token counts")
    p.add_argument("--min-seconds", type=float, default=0.5)
    p.add_argument("--min-samples", type=int, default=3)
    p.add_argument("--max-samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    return p.parse_args()


def main():
    args = parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # ImportError, or a broken install failing to load its libraries
        print(f"PyTorch is not available ({type(e).__name__}: {e}); "
              "install it with scripts/install-bench-deps.sh", file=sys.stderr)
        sys.exit(NO_TORCH_EXIT)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("PyTorch sees no CUDA device", file=sys.stderr)
        sys.exit(NO_TORCH_EXIT)

    dev = torch.device(args.device)
    dt = torch.bfloat16
    torch.manual_seed(args.seed)
    H, I, E, K = args.hidden, args.inter, args.experts, args.topk

    def rand(*shape, fan_in):
        return ((torch.rand(*shape, device=dev, dtype=torch.float32) * 2 - 1) * (3.0 / fan_in) ** 0.5).to(dt)

    router = rand(E, H, fan_in=H)
    bias = (torch.rand(E, device=dev) * 0.1 - 0.05) if args.bias else None
    # Fused gate-up [E, 2I, H] (gate rows first) and down [E, H, I]; the eager block uses per-expert
    # views of them, as Hugging Face's per-expert nn.Linear modules would hold.
    w_gate_up = rand(E, 2 * I, H, fan_in=H)
    w_down = rand(E, H, I, fan_in=I)
    shared = [(rand(2 * si, H, fan_in=H), rand(H, si, fan_in=si), rand(1, H, fan_in=H) if args.shared_gate else None)
              for si in args.shared_inter]

    def route(x):
        logits = F.linear(x.float(), router.float())
        scores = logits.sigmoid() if args.scoring == "sigmoid" else logits.softmax(dim=-1)
        choice = scores + bias if bias is not None else scores
        if args.n_group and args.topk_group < args.n_group:
            grouped = choice.view(x.shape[0], args.n_group, -1)
            if args.group_score == "sum_top2" and grouped.shape[-1] >= 2:
                gscore = grouped.topk(2, dim=-1).values.sum(dim=-1)
            else:
                gscore = grouped.max(dim=-1).values
            keep = gscore.topk(args.topk_group, dim=-1).indices
            mask = torch.zeros_like(gscore).scatter_(1, keep, 1.0)
            mask = mask.unsqueeze(-1).expand_as(grouped).reshape(x.shape[0], E)
            choice = choice.masked_fill(mask == 0, float("-inf"))
        ids = choice.topk(K, dim=-1).indices
        w = scores.gather(1, ids)
        if args.renorm:
            w = w / w.sum(dim=-1, keepdim=True)
        return ids, w * args.scale

    def shared_out(x):
        out = None
        for gate_up, down, gate in shared:
            g, u = F.linear(x, gate_up).chunk(2, dim=-1)
            y = F.linear(F.silu(g) * u, down)
            if gate is not None:
                y = torch.sigmoid(F.linear(x, gate)) * y
            out = y if out is None else out + y
        return out

    def hf_eager(x):
        ids, w = route(x)
        out = torch.zeros_like(x)
        expert_mask = F.one_hot(ids, num_classes=E).permute(2, 1, 0)
        for e in torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero().flatten().tolist():
            slot, tok = torch.where(expert_mask[e])
            cur = x[tok]
            g, u = F.linear(cur, w_gate_up[e]).chunk(2, dim=-1)
            y = F.linear(F.silu(g) * u, w_down[e]) * w[tok, slot, None].to(x.dtype)
            out.index_add_(0, tok, y.to(x.dtype))
        s = shared_out(x)
        return out if s is None else out + s

    def grouped_mm(x):
        ids, w = route(x)
        flat = ids.flatten()
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=E)
        offs = counts.cumsum(0).to(torch.int32)
        xs = x[order // K]
        gu = torch._grouped_mm(xs, w_gate_up.transpose(-2, -1), offs=offs)
        g, u = gu.chunk(2, dim=-1)
        y = torch._grouped_mm((F.silu(g) * u).contiguous(), w_down.transpose(-2, -1), offs=offs)
        y = y * w.flatten()[order, None].to(y.dtype)
        out = torch.zeros_like(x).index_add_(0, order // K, y)
        s = shared_out(x)
        return out if s is None else out + s

    impls = [("torch hf-eager", hf_eager)]
    skipped = []
    if args.device == "cuda":
        if hasattr(torch, "_grouped_mm"):
            impls.append(("torch grouped_mm", grouped_mm))
        else:
            skipped.append(f"torch grouped_mm: torch {torch.__version__} has no torch._grouped_mm")

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def time_one(fn, x):
        fn(x)  # warm-up
        sync()
        samples = []
        start = time.perf_counter()
        while len(samples) < args.max_samples and (
                len(samples) < args.min_samples or time.perf_counter() - start < args.min_seconds):
            if args.device == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn(x)
                b.record()
                b.synchronize()
                samples.append(a.elapsed_time(b) * 1e3)
            else:
                t0 = time.perf_counter()
                fn(x)
                samples.append((time.perf_counter() - t0) * 1e6)
        samples.sort()
        n = len(samples)
        median = samples[n // 2] if n % 2 else 0.5 * (samples[n // 2 - 1] + samples[n // 2])
        return {"median_us": median, "min_us": samples[0], "max_us": samples[-1], "samples": n}

    records = []
    with torch.inference_mode():
        for t in [int(v) for v in args.tokens.split(",") if v]:
            x = torch.randn(t, H, device=dev, dtype=torch.float32).to(dt)
            for name, fn in impls:
                try:
                    rec = time_one(fn, x)
                except Exception as e:  # a peer that cannot run this shape is reported, not fatal
                    skipped.append(f"{name} at {t} tokens: {type(e).__name__}: {e}".splitlines()[0])
                    continue
                records.append({"tokens": t, "implementation": name, **rec})

    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    with open(args.out, "w") as f:
        json.dump({"torch_version": torch.__version__, "device": device, "records": records,
                   "skipped": skipped}, f, indent=1)


if __name__ == "__main__":
    main()
