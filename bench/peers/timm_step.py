#!/usr/bin/env python3
"""The PyTorch + timm peer of `peft bench --train-step`: the same training step (train-mode forward of a timm model
with 100 classes, cross-entropy, backward, AdamW) per method, precision and batch on a GPU, done the way the methods'
official code does it, and, given our rows (--ours), one table of our images/s over theirs, then the issue's goals per
batch, met or not (ssf and gps at 1.5x and full at 1.0x the peer's fp16 AMP step, gps's peak memory below the peer's).

  python3 timm_step.py [--model vit_base_patch16_224] [--batch 32 128] [--methods full linear bias ssf gps]
                       [--precision fp32 tf32 bf16 fp16] [--repeats 5] [--warmup 3] [--json peer.json]
                       [--ours ours.json [ours-graph.json]] [--ours-other ours-other-attention.json]
  python3 timm_step.py --peer-rows peer.json --ours ours.json [ours-graph.json] [--ours-other ...]
                       the table again from an earlier run's rows (--json) and ours, with no GPU or PyTorch

How each method trains here (as in the SSF and GPS repositories, on timm):
  full    every parameter; linear  the head; bias  every bias and the head;
  ssf     a separate scale-shift module (per-channel scale 1 and shift 0 at the start) after every Linear and
          LayerNorm of the blocks, the patch embedding and the final norm, plus the head;
  gps     dense gradients of every Linear weight in the blocks multiplied by a fixed mask (one input per output row,
          as our benchmark's selection), the biases untouched, the head dense; dense AdamW over all of them.
  (SCT has no official timm module to mirror; it is timed on our side only.)
Precision: fp32 (TF32 off), tf32 (TF32 matmuls), bf16 (autocast bfloat16), fp16 (autocast float16 + GradScaler).
Attention: timm's fused path (scaled_dot_product_attention), forced on.
A batch too large for the GPU gives a row that says "out of memory" (JSON: "out_of_memory": true and the error) and
the next rows still run, as in `peft bench --train-step`; the tables say which side ran out. A row of ours that failed
(JSON: "failed": true: a loss that diverged, a CUDA call that failed, a kernel that lost the GPU context) reads
"failed" in the tables, and its goal "not met".
Exit codes: 0 done; 1 --peer-rows unreadable; 2 bad arguments; 3 no usable GPU (the reason is printed); 4 PyTorch or
timm missing (the reason is printed).
"""
import argparse
import json
import os
import sys
import time

METHODS = ["full", "linear", "bias", "ssf", "gps"]
PRECISIONS = ["fp32", "tf32", "bf16", "fp16"]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit_base_patch16_224")
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16", "fp16"], choices=PRECISIONS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, cuBLAS heuristics, the "
                    "GPU's clocks; with one, the same row varied by up to a third between runs)")
    ap.add_argument("--json", help="write the rows as JSON lines here")
    ap.add_argument("--ours", nargs="+", help="JSON lines from `peft bench --train-step --json` (with and without "
                    "--cuda-graph): print the ratio table")
    ap.add_argument("--ours-other", help="JSON lines of the same steps on the other attention path (`--attention "
                    "fused` or `unfused`): a column of their ratio and peak memory in the table")
    ap.add_argument("--peer-rows", help="JSON lines this script wrote earlier (--json): print the table of --ours over "
                    "them and run nothing (the GPU kit makes its table again once all of its own runs are done)")
    args = ap.parse_args(argv)
    if args.peer_rows and not args.ours:
        ap.error("--peer-rows: needs --ours, the rows to compare with them")
    return args


def print_table(args, rows):
    """The ratio table of our rows (--ours, --ours-other) over the peer's rows, with its heading and note."""
    print("\nThe engine over the PyTorch + timm peer on the same GPU (images/s; > 1: the engine is faster):\n")
    print(ratio_table(args.ours, rows, args.ours_other))
    print("\nAgainst the issue's goals (our bf16 step, without a CUDA graph, over the peer's fp16 AMP step; gps's peak "
          "device memory, ours in bf16 against the peer's in fp16 AMP):\n")
    print(goals_table(args.ours, rows))
    if args.model.startswith("vit"):
        print("\nThe same step, not the same arithmetic: where no hook reads every token (full, linear, bias, ssf, gps), "
              "the engine runs its last block's projection, MLP and final norm on the class row alone (the loss reads "
              "nothing else; ViT-B/16: 5.7% of the forward's FLOPs, and the matching backward); timm runs them on every "
              "token.")


def add_ssf(model, torch):
    """Wraps every Linear and LayerNorm of the blocks, the patch embedding's projection and the final norm in
    (module, scale-shift), as the SSF code inserts ssf_scale/ssf_shift after them; returns the SSF parameters."""
    nn = torch.nn

    class ScaleShift(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(dim))
            self.shift = nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            if x.dim() == 4:  # a conv's NCHW output: per channel
                return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)
            return x * self.scale + self.shift

    params = []

    def wrap(parent, name, module, dim):
        ssf = ScaleShift(dim).to(next(module.parameters()).device)
        setattr(parent, name, nn.Sequential(module, ssf))
        params.extend([ssf.scale, ssf.shift])

    for block in model.blocks:
        for parent in (block, block.attn, block.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    wrap(parent, name, child, child.out_features)
                elif isinstance(child, nn.LayerNorm):
                    wrap(parent, name, child, child.normalized_shape[0])
    proj = model.patch_embed.proj
    wrap(model.patch_embed, "proj", proj, proj.out_channels)
    if isinstance(model.norm, nn.LayerNorm):
        wrap(model, "norm", model.norm, model.norm.normalized_shape[0])
    return params


def build(method, args, torch, timm, device):
    model = timm.create_model(args.model, pretrained=False, num_classes=100).to(device)
    for p in model.parameters():
        p.requires_grad_(method == "full")
    head = list(model.get_classifier().parameters())
    masks = {}
    if method == "linear":
        trained = head
    elif method == "bias":
        trained = [p for n, p in model.named_parameters() if n.endswith("bias")] + head
    elif method == "ssf":
        trained = add_ssf(model, torch) + head
    elif method == "gps":
        trained = list(head)
        gen = torch.Generator().manual_seed(0)
        for module in model.blocks.modules():
            if isinstance(module, torch.nn.Linear):
                out_f, in_f = module.weight.shape
                mask = torch.zeros(out_f, in_f)
                mask[torch.arange(out_f), torch.randint(0, in_f, (out_f,), generator=gen)] = 1
                masks[module.weight] = mask.to(device)
                trained.append(module.weight)
    else:
        trained = list(model.parameters())
    for p in trained:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trained, lr=1e-4)
    return model, optimizer, masks


def time_one(method, precision, batch, args, torch, timm, device):
    """One row; a batch too large for the GPU gives a row that says so (as `peft bench --train-step` writes it)."""
    try:
        return measure(method, precision, batch, args, torch, timm, device)
    except torch.cuda.OutOfMemoryError as e:
        error = str(e).split("\n")[0]
    # The failed step's frames, and with them its model and activations, are gone here: the cache can go back.
    torch.cuda.empty_cache()
    return {"engine": "pytorch-timm", "model": args.model, "method": method, "precision": precision, "batch": batch,
            "out_of_memory": True, "error": error}


def measure(method, precision, batch, args, torch, timm, device):
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    model, optimizer, masks = build(method, args, torch, timm, device)
    model.train()
    size = model.default_cfg.get("input_size", (3, 224, 224))[-1]
    gen = torch.Generator(device=device).manual_seed(2)
    images = torch.randn(batch, 3, size, size, device=device, generator=gen)
    targets = torch.arange(batch, device=device) % 100
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(images), targets)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        for weight, mask in masks.items():  # GPS: the dense gradient times the mask
            weight.grad.mul_(mask)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    for _ in range(args.warmup):  # allocator, cuBLAS/cuDNN heuristics, the GPU's clocks
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    seconds = times[len(times) // 2]
    row = {"engine": "pytorch-timm", "model": args.model, "method": method, "precision": precision, "batch": batch,
           "ms_per_step": seconds * 1e3, "images_per_second": batch / seconds,
           "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20,
           "reserved_memory_mib": torch.cuda.max_memory_reserved() / 2**20}
    del model, optimizer, masks, images
    torch.cuda.empty_cache()
    return row


def read_ours(ours_paths, other_path=None):
    """Our rows by (method, precision, batch): plain, graphed (--cuda-graph) and on the other attention path."""
    ours, graphed, other = {}, {}, {}
    for path in ours_paths + ([other_path] if other_path else []):
        if not os.path.exists(path):  # a run of ours that failed before writing
            continue
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    table = other if path == other_path else graphed if r.get("cuda_graph") else ours
                    table[(r["method"], r["precision"], r["batch"])] = r
    return ours, graphed, other


# The goals for a ViT-B/16 step on a GPU: our images/s over the peer's fp16 AMP (as the SSF and GPS code train
# with --amp) per method, and gps's peak device memory below the peer's.
SPEED_GOALS = [("ssf", 1.5), ("gps", 1.5), ("full", 1.0)]


def lost(ours, peer):
    """A goal's cell where a side has no timed row: "–", whose step failed, or who ran out of device memory (a goal
    not met when only we did)."""
    if ours is None or peer is None:
        return "–"
    if ours.get("failed"):
        return "not met: ours failed"
    if ours.get("out_of_memory"):
        return "both out of memory" if peer.get("out_of_memory") else "not met: ours out of memory"
    return "peer out of memory"


def goals_table(ours_paths, peer_rows):
    """Per batch: each speed goal as our bf16 row (the default path, as `peft bench --train-step` ran it) over the
    peer's fp16 AMP row, met or not, and gps's peak memory against the peer's; "–" where either side has no row, and
    which side ran out of device memory where one did."""
    ours, _, _ = read_ours(ours_paths)
    peer = {(p["method"], p["precision"], p["batch"]): p for p in peer_rows}
    batches = sorted({p["batch"] for p in peer_rows})
    lines = ["| batch | " + " | ".join("{} ≥ {}×".format(m, g) for m, g in SPEED_GOALS) + " | gps peak below the peer's |",
             "|---|" + "---|" * (len(SPEED_GOALS) + 1)]
    for batch in batches:
        cells = []
        for method, goal in SPEED_GOALS:
            o, p = ours.get((method, "bf16", batch)), peer.get((method, "fp16", batch))
            if o is None or p is None or not (ran(o) and ran(p)):
                cells.append(lost(o, p))
                continue
            r = o["images_per_second"] / p["images_per_second"]
            cells.append("{:.2f} {}".format(r, "met" if r >= goal else "not met"))
        o, p = ours.get(("gps", "bf16", batch)), peer.get(("gps", "fp16", batch))
        cells.append(lost(o, p) if not (ran(o) and ran(p)) else "{:.0f} / {:.0f} MiB {}".format(
            o["peak_memory_mib"], p["peak_memory_mib"], "met" if o["peak_memory_mib"] < p["peak_memory_mib"] else "not met"))
        lines.append("| {} | {} |".format(batch, " | ".join(cells)))
    return "\n".join(lines)


def ran(row):
    """A row that timed its steps: present, not out of memory and not failed."""
    return row is not None and not row.get("out_of_memory") and not row.get("failed")


def speed(row):
    if row is None:
        return "–"
    return "out of memory" if row.get("out_of_memory") else "failed" if row.get("failed") else "{:.1f}".format(row["images_per_second"])


def peak(row, key="peak_memory_mib"):
    return "{:.0f}".format(row[key]) if ran(row) and row.get(key) is not None else "–"


def ratio_table(ours_paths, peer_rows, other_path=None):
    """Our rows (JSON lines of `peft bench --train-step`, with and without --cuda-graph, and those on the other
    attention path from other_path) against the peer's. Each row names the attention path its steps ran; a side that
    ran out of device memory or failed says so, and its ratios are "–". Peak memory is the tensors' on both sides (PyTorch's
    max_memory_allocated); device and reserved memory add what each side's allocator held (max_memory_reserved)."""
    ours, graphed, other = read_ours(ours_paths, other_path)

    def ratio(row, p):
        return "{:.2f}".format(row["images_per_second"] / p["images_per_second"]) if ran(row) and ran(p) else "–"

    def attention(row):
        return row.get("attention", "?") if ran(row) else "–"

    lines = ["| method | precision | batch | ours images/s | peer images/s | ours / peer | ours, CUDA graph / peer "
             "| ours attention | other attention / peer | ours peak MiB | other attention peak MiB | peer peak MiB "
             "| ours device MiB | peer reserved MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in peer_rows:
        key = (p["method"], p["precision"], p["batch"])
        o, g, a = ours.get(key), graphed.get(key), other.get(key)
        if o is None:
            continue
        lines.append("| {} | {} | {} | {} | {} | **{}** | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            p["method"], p["precision"], p["batch"], speed(o), speed(p), ratio(o, p), ratio(g, p), attention(o),
            "{} ({})".format(ratio(a, p), attention(a)) if ran(a) else "–", peak(o), peak(a), peak(p),
            peak(o, "device_memory_mib"), peak(p, "reserved_memory_mib")))
    return "\n".join(lines)


def main(argv):
    args = parse_args(argv)
    if args.peer_rows:
        try:
            with open(args.peer_rows) as f:
                rows = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError) as e:
            print(f"timm_step: --peer-rows {args.peer_rows}: {e}", file=sys.stderr)
            return 1
        print_table(args, rows)
        return 0
    os.environ.setdefault("TIMM_FUSED_ATTN", "1")  # timm's scaled_dot_product_attention path
    try:
        import torch
        import timm
    except ImportError as e:
        print(f"timm_step: skipped: {e} (the peer needs PyTorch and timm)")
        return 4
    if not torch.cuda.is_available():
        print("timm_step: no usable GPU: torch.cuda.is_available() is False")
        return 3
    device = torch.device("cuda")
    print(f"timm_step: PyTorch {torch.__version__}, timm {timm.__version__}, CUDA {torch.version.cuda}, "
          f"{torch.cuda.get_device_name(0)}; {args.model}, median of {args.repeats}")
    print("| method | precision | batch | ms per step | images/s | peak memory MiB |\n|---|---|---|---|---|---|")
    rows = []
    out = open(args.json, "w") if args.json else None
    try:
        for batch in args.batch:
            for precision in args.precision:
                for method in args.methods:
                    row = time_one(method, precision, batch, args, torch, timm, device)
                    rows.append(row)
                    if row.get("out_of_memory"):
                        print("| {method} | {precision} | {batch} | out of memory | | |\n  {error}".format(**row), flush=True)
                    else:
                        print("| {method} | {precision} | {batch} | {ms_per_step:.1f} | {images_per_second:.1f} | "
                              "{peak_memory_mib:.0f} |".format(**row), flush=True)
                    if out:
                        out.write(json.dumps(row) + "\n")
                        out.flush()
    finally:
        if out:
            out.close()
    if args.ours:
        print_table(args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
