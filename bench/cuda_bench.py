#!/usr/bin/env python3
"""End-to-end CUDA benchmark on real model shapes with random weights (no download).

For each shape: batch-1 greedy decode tokens/s after a 512- and a 4096-token prompt, prefill
tokens/s of a 2048-token prompt, and the fraction of the measured device-copy bandwidth that
decode reaches (weight bytes each token reads / time per token / copy bandwidth).

    bench/cuda_bench.py --ds build-gpu/ds --work /tmp/models [--shapes r1-distill-qwen-1.5b ...]

Needs PyTorch for the copy-bandwidth measurement (present on the lent GPU machines).
"""
import argparse
import json
import os
import re
import subprocess
import sys

SHAPES = ["r1-distill-qwen-1.5b", "r1-distill-qwen-7b", "deepseek-v2-lite"]


def decode_bytes_per_token(cfg, matrix_bytes=2):
    """Bytes of weights one decoded token reads: every matrix once (the embedding table only a
    row, so not counted), and of an MoE layer only the shared and the top-k routed experts."""
    h, L, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    elems = vocab * h  # lm_head
    if cfg["model_type"] in ("qwen2", "llama"):
        nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        hd = cfg.get("head_dim") or h // nh
        per_layer = h * nh * hd + 2 * h * nkv * hd + nh * hd * h + 3 * h * cfg["intermediate_size"]
        elems += L * per_layer
    else:  # deepseek_v3 / v2 shapes
        nh = cfg["num_attention_heads"]
        nope, rope, vdim = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        kv_lora, q_lora = cfg["kv_lora_rank"], cfg.get("q_lora_rank")
        q = h * nh * (nope + rope) if not q_lora else h * q_lora + q_lora * nh * (nope + rope)
        attn = q + h * (kv_lora + rope) + kv_lora * nh * (nope + vdim) + nh * vdim * h
        dense = cfg.get("first_k_dense_replace", 0)
        moe_inter, n_shared, top_k = cfg["moe_intermediate_size"], cfg.get("n_shared_experts", 0), cfg["num_experts_per_tok"]
        moe = 3 * h * moe_inter * (n_shared + top_k) + h * cfg["n_routed_experts"]  # + the router
        elems += L * attn + dense * 3 * h * cfg["intermediate_size"] + (L - dense) * moe
    return elems * matrix_bytes


def copy_bandwidth_gbs():
    """A large device-to-device copy, bytes read plus written, median of 20."""
    import torch

    n = 2 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    a.random_(0, 255)
    times = []
    for i in range(23):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return 2 * n / times[len(times) // 2] / 1e9


def ds_bench(ds, model, prompts, gen, reps, compute):
    """{prompt length: (prefill tok/s, decode tok/s after it)}, one model load."""
    cmd = [ds, "bench", "-m", model, "--backend", "cuda", "--compute", compute, "-q",
           "-p", ",".join(map(str, prompts)), "-g", str(gen), "-r", str(reps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    prefill = [float(x) for x in re.findall(r"prefill\s+\d+ tokens\s+([\d.]+) tok/s", out)]
    decode = [float(x) for x in re.findall(r"decode\s+\d+ tokens\s+([\d.]+) tok/s", out)]
    return dict(zip(prompts, zip(prefill, decode)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ds", required=True, help="the ds program")
    ap.add_argument("--work", required=True, help="folder for the random-weight models")
    ap.add_argument("--tokenizer", help="tokenizer folder to copy into the models")
    ap.add_argument("--shapes", nargs="*", default=SHAPES)
    ap.add_argument("--compute", default="bf16")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    bw = copy_bandwidth_gbs()
    print(f"device copy bandwidth: {bw:.0f} GB/s (read + write)", flush=True)
    rows = []
    for shape in args.shapes:
        model = os.path.join(args.work, shape)
        if not os.path.exists(os.path.join(model, "config.json")):
            cmd = [args.ds, "make-model", "--preset", shape, model]
            if args.tokenizer:
                cmd[3:3] = ["--tokenizer", args.tokenizer]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cfg = json.load(open(os.path.join(model, "config.json")))
        per_token = decode_bytes_per_token(cfg)
        r = ds_bench(args.ds, model, [512, 2048, 4096], 128, args.reps, args.compute)
        dec512, pre2k, dec4k = r[512][1], r[2048][0], r[4096][1]
        frac = dec512 * per_token / 1e9 / bw
        rows.append((shape, per_token, dec512, dec4k, pre2k, frac))
        print(f"{shape}: decode@512 {dec512:.1f} tok/s, decode@4096 {dec4k:.1f} tok/s, prefill 2048 {pre2k:.0f} tok/s, "
              f"{per_token / 1e9:.2f} GB/token -> {100 * frac:.0f}% of copy bandwidth", flush=True)

    print(f"\n| shape | GB read / token | decode @512 tok/s | decode @4096 tok/s | prefill 2048 tok/s | % of copy BW ({bw:.0f} GB/s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape, per_token, d512, d4k, p2k, frac in rows:
        print(f"| {shape} | {per_token / 1e9:.2f} | {d512:.1f} | {d4k:.1f} | {p2k:.0f} | {100 * frac:.0f}% |")


if __name__ == "__main__":
    sys.exit(main())
