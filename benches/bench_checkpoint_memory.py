"""Peak memory and end-to-end speed of `hanpack.quantize_checkpoint` on a synthetic
multi-GB sharded bf16 checkpoint (LLaMA-7B-like shapes; random weights, which is all
a memory figure needs).

    python benches/bench_checkpoint_memory.py [--layers 8] [--method hqq] [--dir /tmp]

The checkpoint is written by a child process in chunks, so the parent never holds it;
the quantizer runs in another child whose peak resident set (``ru_maxrss``) is the
figure, compared with the bound ``2 x largest tensor + 500 MB``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN, INTER, VOCAB = 4096, 11008, 32000

_WRITE = r"""
import json, sys
import numpy as np
root, layers = sys.argv[1], int(sys.argv[2])
H, I, V = %d, %d, %d
rng = np.random.default_rng(0)
def layer(i):
    p = f"model.layers.{i}."
    return [(p + "self_attn.q_proj.weight", (H, H)), (p + "self_attn.k_proj.weight", (H, H)),
            (p + "self_attn.v_proj.weight", (H, H)), (p + "self_attn.o_proj.weight", (H, H)),
            (p + "mlp.gate_proj.weight", (I, H)), (p + "mlp.up_proj.weight", (I, H)),
            (p + "mlp.down_proj.weight", (H, I)), (p + "input_layernorm.weight", (H,)),
            (p + "post_attention_layernorm.weight", (H,))]
shards = [[("model.embed_tokens.weight", (V, H))]] + [layer(i) for i in range(layers)] + [[("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]]
# Two layers per shard, like a 7B checkpoint's ~10 GB shards scaled down.
groups = [shards[0] + shards[1]] + [sum(shards[i:i + 2], []) for i in range(2, len(shards), 2)]
weight_map = {}
for k, tensors in enumerate(groups):
    fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
        weight_map[name] = fname
    h = json.dumps(header).encode()
    h += b" " * (-len(h) %% 8)
    with open(f"{root}/{fname}", "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for name, shape in tensors:
            rows = shape[0] if len(shape) == 2 else 1
            cols = shape[-1]
            for r0 in range(0, rows, 1024):  # 1024 rows at a time: the writer stays small
                x = (rng.standard_normal((min(1024, rows - r0), cols), dtype=np.float32) * 0.02)
                f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
json.dump({"metadata": {}, "weight_map": weight_map}, open(f"{root}/model.safetensors.index.json", "w"))
json.dump({"model_type": "llama", "hidden_size": H}, open(f"{root}/config.json", "w"))
""" % (HIDDEN, INTER, VOCAB)

_QUANTIZE = r"""
import json, resource, sys, time
import hanpack
t = time.perf_counter()
r = hanpack.quantize_checkpoint(sys.argv[1], sys.argv[2], bits=4, group_size=128, method=sys.argv[3], progress=False)
dt = time.perf_counter() - t
n = sum(1 for t in r.quantized)
w = sum(t.shape[0] * t.shape[1] for t in r.quantized)
print(json.dumps({"seconds": dt, "quantized": n, "weights": w, "src_bytes": r.src_bytes, "dst_bytes": r.dst_bytes,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--method", default="hqq")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hanpack-mem-", dir=args.dir))
    try:
        src, dst = root / "src", root / "dst"
        src.mkdir()
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", _WRITE, str(src), str(args.layers)], check=True)
        size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        print(f"synthetic checkpoint: {args.layers} layers, {len(list(src.glob('*.safetensors')))} shards, {size / 1e9:.2f} GB bf16 (written in {time.perf_counter() - t:.0f} s)")
        largest = VOCAB * HIDDEN * 2
        out = subprocess.run([sys.executable, "-c", _QUANTIZE, str(src), str(dst), args.method], check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        bound = 2 * largest / 2**20 + 500
        print(f"quantize_checkpoint int4-g128 {args.method}: {r['quantized']} tensors, {r['weights'] / 1e9:.2f} B weights in {r['seconds']:.1f} s "
              f"({r['weights'] / r['seconds'] / 1e6:.0f} M weights/s end to end, {r['src_bytes'] / r['seconds'] / 1e6:.0f} MB/s read), "
              f"{r['src_bytes'] / 1e9:.2f} GB -> {r['dst_bytes'] / 1e9:.2f} GB")
        print(f"peak RSS {r['maxrss_mb']:.0f} MB; largest tensor {largest / 2**20:.0f} MB; bound 2 x largest + 500 MB = {bound:.0f} MB: "
              f"{'within' if r['maxrss_mb'] <= bound else 'OVER'} ({r['maxrss_mb'] / bound:.2f} of it)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
