#!/usr/bin/env python3
"""PyTorch eager baselines for tokensieve's benchmark (run with /usr/bin/python3).

Reads a JSON list of trial specs on stdin and prints one JSON object per line:
{"name", "variant", "median_ms", "min_ms", "reps"} or {"name", "variant", "skipped": why}.

Attention variants:
  torch-ref  what the reference code pays: HF eager attention materialises
             softmax(q kᵀ · scale [+ causal mask]) for every row, then the
             method slices it (CLS row: attn[:, :, 0, 1:].mean(1); last row:
             attn[:, :, -1, :].mean(1); all rows: attn.mean(1).mean(1)).
  torch-min  the cheapest eager equivalent: only the needed query row
             (CLS / last) through matmul + softmax + mean; for all rows it is
             torch-ref.
  torch-int8 (INT8 trials) SageAttention's per-block INT8 QKᵀ restated in
             eager torch: k minus its token mean, one scale per 32 q rows
             and per 64 k rows (amax / 127), codes rounded and clamped, the
             codes multiplied (f32 on the CPU: torch 1.13 has no INT8 matmul
             there), rescaled, softmax, the same reduction; for the CLS /
             last row only that row's q block is quantized.
             INT8 trials also carry torch-ref / torch-min of the same shape:
             what a runtime has when it does not quantize.
k-medoids: CenterCLIP's batch_fast_kmedoids restated (the segments as its
batch). Merge: ToMe's bipartite_soft_matching + merge_wavg (tome/merge.py, restated
line by line, CLS protected, metric = x); VisionZip's contextual-token code.
Top-k: torch.topk(scores, k) then sorting the indices (FasterVLM, VTC-CLS).
Quantize: amax, divide, round, clamp, cast (and pack two INT4 values per byte),
on f32 input (warm caches; torch.round rounds half to even, same cost).
f16/bf16 trials run in f32 on the CPU (CPU matmul in half precision is not
what the reference code uses on CPU) and in their dtype on CUDA.
Every family takes spec "device" ("cpu" or "cuda"): on CUDA the inputs live
on the GPU, every timed call ends with torch.cuda.synchronize(), and f32
matmuls keep torch's default (TF32 off), as the reference code runs them.
Block-sparse attention (spec "device": "cpu" or "cuda"):
  torch-dense  what eager code pays without a sparse kernel: per head,
               softmax(q kᵀ · scale) v materialised (CPU: f32; CUDA: bf16);
  torch-sdpa   F.scaled_dot_product_attention, dense (torch >= 2.0; on CUDA
               the flash kernel), the dense baseline of the sparse trials;
  torch-flex   FlexAttention with the same random 64×64 block mask
               (torch >= 2.5 on CUDA, when available).
  The INT8 trials carry the dense variants of their shape (torch has no
  INT8 attention to compare with).
A figure that does not depend on the trial's remaining options (the f32
attention figures of an INT8 trial, the dense block-sparse variants of every
density) is measured once per run and shape, and reported for each trial.
"""
import json
import sys
import time


def timeit(fn, budget_s=0.3, max_reps=30, min_reps=3):
    fn()  # warm up
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (len(times) < max_reps and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3, times[0] * 1e3, len(times)


def emit(obj):
    print(json.dumps(obj), flush=True)


# (shape key, variant) -> the measurement, for figures shared by trials.
_measured = {}


def measure_once(key, name, variant, run):
    """Emits `run()`'s result dict under `name`; runs it once per key."""
    if key not in _measured:
        _measured[key] = run()
    emit({"name": name, "variant": variant, **_measured[key]})


def device_of(spec, torch):
    """(device, synchronize) for a spec: CUDA work is timed to completion."""
    dev = spec.get("device", "cpu")
    if dev == "cuda":
        return dev, torch.cuda.synchronize
    return dev, (lambda: None)


def synced(fn, sync):
    def run():
        out = fn()
        sync()
        return out
    return run


def attention(spec, torch):
    B, H, N, D = spec["B"], spec["H"], spec["N"], spec["D"]
    rows, causal = spec["rows"], spec["causal"]
    dev, sync = device_of(spec, torch)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[spec.get("dtype", "f32")] if dev == "cuda" else torch.float32
    gen = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, H, N, D, generator=gen, device=dev, dtype=dtype)
    k = torch.randn(B, H, N, D, generator=gen, device=dev, dtype=dtype)
    scale = D ** -0.5
    mask = torch.full((N, N), float("-inf"), device=dev, dtype=dtype).triu(1) if causal else None

    def ref():
        s = q @ k.transpose(-1, -2) * scale
        if mask is not None:
            s = s + mask
        attn = torch.softmax(s, dim=-1)
        if rows == "cls":
            return attn[:, :, 0, 1:].mean(1)
        if rows == "one":
            return attn[:, :, -1, :].mean(1)
        return attn.mean(1).mean(1)

    def minimal():
        i = 0 if rows == "cls" else N - 1
        s = q[:, :, i : i + 1] @ k.transpose(-1, -2) * scale  # the last row sees every key
        attn = torch.softmax(s, dim=-1)[:, :, 0]
        return attn[:, :, 1:].mean(1) if rows == "cls" else attn.mean(1)

    def quantized(x, rows_per_block):
        """x [B, H, n, D] as codes (same shape) and one scale per block of rows."""
        n = x.shape[2]
        nb = (n + rows_per_block - 1) // rows_per_block
        xp = torch.nn.functional.pad(x, (0, 0, 0, nb * rows_per_block - n))
        blocks = xp.view(B, H, nb, rows_per_block, D)
        s = blocks.abs().amax(dim=(3, 4), keepdim=True).clamp_min(1e-20) / 127
        codes = (blocks / s).round().clamp(-127, 127)
        return codes.view(B, H, nb * rows_per_block, D)[:, :, :n], s.view(B, H, nb)

    def int8():
        km = k - k.mean(dim=2, keepdim=True)  # smoothK
        kc, ks = quantized(km, 64)
        k_scale = ks.repeat_interleave(64, dim=2)[:, :, None, :N]
        if rows == "all":
            qc, qs = quantized(q, 32)
            s = (qc @ kc.transpose(-1, -2)) * (qs.repeat_interleave(32, dim=2)[:, :, :N, None] * scale) * k_scale
            if mask is not None:
                s = s + mask
            return torch.softmax(s, dim=-1).mean(1).mean(1)
        i = 0 if rows == "cls" else N - 1
        b0 = i // 32 * 32
        qc, qs = quantized(q[:, :, b0 : min(N, b0 + 32)], 32)
        s = (qc[:, :, i - b0 : i - b0 + 1] @ kc.transpose(-1, -2)) * (qs[:, :, :1, None] * scale) * k_scale
        attn = torch.softmax(s, dim=-1)[:, :, 0]
        return attn[:, :, 1:].mean(1) if rows == "cls" else attn.mean(1)

    materialised = B * H * N * N * 4
    shape_key = ("attention", B, H, N, D, rows, causal, spec.get("dtype", "f32"), dev)
    variants = [("torch-ref", ref), ("torch-min", minimal if rows != "all" else None)]
    if spec.get("int8"):
        variants.append(("torch-int8", int8))
    for variant, fn in variants:
        if fn is None:
            continue
        fn = synced(fn, sync)
        # torch-ref, and torch-int8 over all rows, materialise every score.
        full = variant == "torch-ref" or (variant == "torch-int8" and rows == "all")
        if full and materialised > 6e9:
            emit({"name": spec["name"], "variant": variant, "skipped": f"would materialise {materialised / 1e9:.1f} GB"})
            continue
        big = full and materialised > 5e8

        def run(fn=fn, big=big):
            median, best, reps = timeit(fn, budget_s=0.3 if not big else 0.0, max_reps=30, min_reps=3 if not big else 2)
            return {"median_ms": median, "min_ms": best, "reps": reps}

        if variant == "torch-int8":
            emit({"name": spec["name"], "variant": variant, **run()})
        else:
            measure_once((shape_key, variant), spec["name"], variant, run)


def topk(spec, torch):
    B, N, k = spec["B"], spec["N"], spec["k"]
    dev, sync = device_of(spec, torch)
    scores = torch.rand(B, N, generator=torch.Generator(device=dev).manual_seed(0), device=dev)

    def fn():
        return torch.topk(scores, k, dim=-1).indices.sort(dim=-1).values

    median, best, reps = timeit(synced(fn, sync))
    emit({"name": spec["name"], "variant": "torch", "median_ms": median, "min_ms": best, "reps": reps})


def quantize(spec, torch):
    R, C, bits, group = spec["R"], spec["C"], spec["bits"], spec["granularity"]
    dev, sync = device_of(spec, torch)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[spec.get("dtype", "f32")] if dev == "cuda" else torch.float32
    x = torch.randn(R, C, generator=torch.Generator(device=dev).manual_seed(0), device=dev, dtype=dtype)
    Q = 127 if bits == 8 else 7
    g = C if group == "token" else group

    def fn():
        blocks = x.view(R, C // g, g) if C % g == 0 else x.view(R, 1, C)
        scale = blocks.abs().amax(dim=-1, keepdim=True).clamp(min=1e-20) / Q
        q = (blocks / scale).round().clamp(-Q, Q).to(torch.int8).view(R, C)
        if bits == 4:
            q = (q[:, 0::2] & 0xF) | ((q[:, 1::2] & 0xF) << 4)
        return q, scale

    median, best, reps = timeit(synced(fn, sync))
    emit({"name": spec["name"], "variant": "torch", "median_ms": median, "min_ms": best, "reps": reps})


def tome_merge(spec, torch):
    """ToMe's own tome/merge.py (af95e4b): bipartite_soft_matching (CLS
    protected) + merge_wavg with sizes, metric = x, restated line by line."""
    B, N, C, r = spec["B"], spec["N"], spec["C"], spec["r"]
    dev, sync = device_of(spec, torch)
    x = torch.randn(B, N, C, generator=torch.Generator(device=dev).manual_seed(0), device=dev)
    size = torch.ones(B, N, 1, device=dev)
    if dev == "cpu" and B * N * N * C > 2e11:
        emit({"name": spec["name"], "variant": "torch", "skipped": "over the time budget"})
        return

    def bipartite_soft_matching(metric, r):
        protected = 1
        t = metric.shape[1]
        r = min(r, (t - protected) // 2)
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        scores = a @ b.transpose(-1, -2)
        scores[..., 0, :] = -float("inf")
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx = edge_idx[..., r:, :]
        src_idx = edge_idx[..., :r, :]
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
        unm_idx = unm_idx.sort(dim=1)[0]

        def merge(x, mode="mean"):
            src, dst = x[..., ::2, :], x[..., 1::2, :]
            n, t1, c = src.shape
            unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
            src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
            dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
            return torch.cat([unm, dst], dim=1)

        return merge

    def merge_wavg(merge, x, size):
        x = merge(x * size, mode="sum")
        size = merge(size, mode="sum")
        return x / size, size

    def fn():
        m = bipartite_soft_matching(x, r)
        return merge_wavg(m, x, size)

    big = dev == "cpu" and B * N * N * C >= 1e10
    median, best, reps = timeit(synced(fn, sync), budget_s=0.0 if big else 0.3, min_reps=1 if big else 3)
    emit({"name": spec["name"], "variant": "torch", "median_ms": median, "min_ms": best, "reps": reps})


def visionzip_contextual(spec, torch):
    """VisionZip's contextual-token code (clip_encoder.py), metric = 64-channel keys."""
    N, C, c = spec["N"], spec["C"], spec["r"]
    dev, sync = device_of(spec, torch)
    gen = torch.Generator(device=dev).manual_seed(0)
    hidden = torch.randn(1, N, C, generator=gen, device=dev)
    metric = torch.randn(1, N, 64, generator=gen, device=dev)
    keep = torch.zeros(1, N, dtype=torch.bool, device=dev)
    keep[0, (torch.arange(162, device=dev) * N) // 162] = True

    def fn():
        metric_filtered = metric[~keep].view(1, -1, 64)
        hidden_filtered = hidden[~keep].view(1, -1, C)
        metric_normalized = metric_filtered / metric_filtered.norm(dim=-1, keepdim=True)
        step = max(1, metric_normalized.shape[1] // c)
        target_indices = torch.arange(0, metric_normalized.shape[1], step, device=dev)[:c]
        target_tokens = metric_normalized[:, target_indices, :]
        tokens_to_merge = metric_normalized[:, ~torch.isin(torch.arange(metric_normalized.shape[1], device=dev), target_indices), :]
        similarity = torch.bmm(tokens_to_merge, target_tokens.transpose(1, 2))
        assign_one_hot = torch.zeros(1, tokens_to_merge.shape[1], c, dtype=hidden.dtype, device=dev)
        assign_one_hot.scatter_(2, similarity.argmax(dim=2).unsqueeze(-1), 1)
        counts = assign_one_hot.sum(dim=1).clamp(min=1).unsqueeze(-1)
        hidden_to_merge = hidden_filtered[:, ~torch.isin(torch.arange(hidden_filtered.shape[1], device=dev), target_indices), :]
        aggregated = torch.bmm(assign_one_hot.transpose(1, 2), hidden_to_merge) / counts
        return hidden_filtered[:, target_indices, :] + aggregated

    median, best, reps = timeit(synced(fn, sync))
    emit({"name": spec["name"], "variant": "torch", "median_ms": median, "min_ms": best, "reps": reps})


def divprune_authors(torch, visual_feature_vectors, threshold_terms):
    """vbdi/divprune llava_arch.py::DivPrune as written (pairwise_cosine_similarity,
    topk(2, largest=False)[1] seed, then index_select + min + argmax per step)."""
    norm_matrix = visual_feature_vectors / visual_feature_vectors.norm(dim=1, keepdim=True)
    cosine_matrix = 1.0 - torch.mm(norm_matrix, norm_matrix.t())
    dev = visual_feature_vectors.device
    s = torch.empty(threshold_terms, dtype=torch.long, device=dev)
    for i in range(threshold_terms):
        if i == 0:
            m2 = cosine_matrix
        else:
            m2 = torch.index_select(cosine_matrix, 0, torch.index_select(s, 0, torch.arange(0, i, device=dev)))
        if i == 0:
            scores = torch.topk(m2, 2, dim=0, largest=False).values[1, :]
        else:
            scores = torch.min(m2, dim=0).values
        s[i] = torch.argmax(scores)
    return s.sort().values


def mmtok_greedy(torch, combined, k):
    """MMTok's greedy maximum coverage (semantic_selector.py, eager path)."""
    n = combined.shape[1]
    best = torch.zeros(combined.shape[0], device=combined.device)
    mask = torch.zeros(n, device=combined.device)
    selected = []
    for _ in range(k):
        gains = torch.clamp(combined - best[:, None], min=0).sum(0) + mask
        j = int(torch.argmax(gains))
        selected.append(j)
        best = torch.maximum(best, combined[:, j])
        mask[j] = float("-inf")
    return sorted(selected)


def centerclip_kmedoids(torch, X, K, threshold=1e-6, iter_limit=100):
    """CenterCLIP's fast_kmeans.py::batch_fast_kmedoids as the script runs it
    (euclidean cdist, all_negative, self_nearest, KKZ init, the [B, K, n, n]
    repeat, threshold 1e-6, iter_limit 100, id_sort), on segments X [B, n, C]."""
    B, n, _ = X.shape
    rows = torch.arange(B, device=X.device)[:, None]
    D = torch.cdist(X, X)
    D = D - D.max() - 1  # all_negative: every entry below 0
    D = D - torch.eye(n, device=X.device)  # self_nearest: the diagonal 1 lower still
    medoids = X.norm(dim=-1).argmax(dim=-1, keepdim=True)  # KKZ: the largest norm first
    for _ in range(1, K):
        farthest = D[rows, medoids].min(dim=1).values.argmax(dim=-1, keepdim=True)
        medoids = torch.cat([medoids, farthest], dim=1)
    repeated = D.unsqueeze(1).repeat(1, K, 1, 1)  # [B, K, n, n]
    for _ in range(iter_limit):
        assign = D[rows, medoids].argmin(dim=1)  # [B, n]
        member = torch.nn.functional.one_hot(assign, K).permute(0, 2, 1).to(X.dtype)  # [B, K, n]
        new = (repeated * member[:, :, :, None] * member[:, :, None, :]).sum(-1).argmin(dim=-1)
        shift = (X[rows, new] - X[rows, medoids]).norm(dim=-1).sum(-1).mean()
        medoids = new
        if shift < threshold:
            break
    medoids = medoids.sort(dim=-1).values  # id_sort
    return medoids, D[rows, medoids].argmin(dim=1)


def mmtok_build(torch, text, vision, tau_tv=0.02, tau_vv=0.2, alpha=0.5):
    F = torch.nn.functional
    z = F.normalize(text, dim=-1, eps=1e-8)
    x = F.normalize(vision, dim=-1, eps=1e-8)
    P = torch.softmax(z @ x.t() / tau_tv, dim=1) / z.shape[0]
    Q = torch.softmax(x @ x.t() / tau_vv, dim=1) / x.shape[0]
    return torch.cat([P, alpha * Q], dim=0)


def diversity(spec, torch):
    kind, N, C, k, segs = spec["kind"], spec["N"], spec["C"], spec["k"], spec["segments"]
    dev, sync = device_of(spec, torch)
    gen = torch.Generator(device=dev).manual_seed(0)
    if kind == "kcenter":
        x = torch.randn(N, C, generator=gen, device=dev)
        S = N // segs

        def fn():
            return [divprune_authors(torch, x[g * S:(g + 1) * S], k) for g in range(segs)]
    elif kind == "coverage":
        m = spec["m"]
        cov = torch.softmax(torch.randn(m + N, N, generator=gen, device=dev) * 4, dim=1) / (m + N)

        def fn():
            return mmtok_greedy(torch, cov, k)
    elif kind == "mmtok":
        m = spec["m"]
        text = torch.randn(m, C, generator=gen, device=dev)
        vision = torch.randn(N, C, generator=gen, device=dev)

        def fn():
            return mmtok_greedy(torch, mmtok_build(torch, text, vision), k)
    elif kind == "kmedoids":
        x = torch.randn(segs, N // segs, C, generator=gen, device=dev)

        def fn():
            return centerclip_kmedoids(torch, x, k)
    else:
        emit({"name": spec["name"], "variant": "torch", "skipped": "no torch baseline"})
        return
    median, best, reps = timeit(synced(fn, sync))
    emit({"name": spec["name"], "variant": "torch", "median_ms": median, "min_ms": best, "reps": reps})


def random_block_lists(H, nQ, nK, density, seed):
    """bench/trials.ts randomBlockLists, restated: the same xorshift stream, so the same mask."""
    per = max(1, min(nK, round(density * nK)))
    x = seed & 0xFFFFFFFF or 1
    rows = []
    allk = list(range(nK))
    for _ in range(H * nQ):
        for i in range(per):
            x ^= (x << 13) & 0xFFFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0xFFFFFFFF
            j = i + int((x / 4294967296) * (nK - i))
            allk[i], allk[j] = allk[j], allk[i]
        rows.append(sorted(allk[:per]))
    return per, rows


def blocksparse(spec, torch):
    B, H, N, D, rho = spec["B"], spec["H"], spec["N"], spec["D"], spec["density"]
    dev = spec.get("device", "cpu")
    cuda = dev == "cuda"
    if cuda and not torch.cuda.is_available():
        emit({"name": spec["name"], "variant": "torch-sdpa", "skipped": "torch has no CUDA here"})
        return
    dtype = torch.bfloat16 if cuda else torch.float32
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D, generator=gen, device=dev, dtype=dtype) for _ in range(3))
    scale = D ** -0.5
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def dense():
        for h in range(H):
            s = (q[:, h] @ k[:, h].transpose(-1, -2)) * scale
            torch.softmax(s, dim=-1) @ v[:, h]
        sync()

    def mass():
        # blockAttentionMass: the softmax rows summed per 64 x 64 block
        # (zero padded to whole blocks), one head at a time.
        nB = (N + 63) // 64
        for h in range(H):
            p = torch.softmax((q[:, h] @ k[:, h].transpose(-1, -2)) * scale, dim=-1)
            p = torch.nn.functional.pad(p, (0, nB * 64 - N, 0, nB * 64 - N))
            p.view(B, nB, 64, nB, 64).sum((2, 4))
        sync()

    variants = []
    if spec.get("kind") == "mass":
        variants.append(("torch-ref", mass, B * N * N * 4 * (2 if cuda else 1)))
    elif rho >= 1 or not cuda:
        variants.append(("torch-dense", dense, B * N * N * 4 * (2 if cuda else 1)))
    F = torch.nn.functional
    if hasattr(F, "scaled_dot_product_attention") and spec.get("kind") != "mass":
        def sdpa():
            F.scaled_dot_product_attention(q, k, v)
            sync()
        variants.append(("torch-sdpa", sdpa, 0))
    if cuda and rho < 1:
        try:
            from torch.nn.attention.flex_attention import BlockMask, flex_attention
            nB = (N + 63) // 64
            per, rows = random_block_lists(H, nB, nB, rho, 7)
            num = torch.full((1, H, nB), per, dtype=torch.int32, device=dev)
            idx = torch.zeros((1, H, nB, nB), dtype=torch.int32, device=dev)
            idx[0, :, :, :per] = torch.tensor(rows, dtype=torch.int32, device=dev).view(H, nB, per)
            bm = BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=64, seq_lengths=(N, N))
            flex = torch.compile(flex_attention)

            def fx():
                flex(q, k, v, block_mask=bm)
                sync()
            variants.append(("torch-flex", fx, 0))
        except Exception as e:  # noqa: BLE001
            emit({"name": spec["name"], "variant": "torch-flex", "skipped": f"FlexAttention unavailable: {type(e).__name__}"})
    for variant, fn, materialised in variants:
        if materialised > 6e9:
            emit({"name": spec["name"], "variant": variant, "skipped": f"would materialise {materialised / 1e9:.1f} GB"})
            continue

        def run(fn=fn):
            try:
                median, best, reps = timeit(fn, budget_s=0.3, max_reps=20, min_reps=2)
                return {"median_ms": median, "min_ms": best, "reps": reps}
            except Exception as e:  # noqa: BLE001
                return {"skipped": f"{type(e).__name__}: {str(e)[:80]}"}

        # Dense variants ignore the mask and the precision: one figure per shape.
        key = ("blocksparse", spec.get("kind"), B, H, N, D, dev, variant, rho if variant == "torch-flex" else None)
        measure_once(key, spec["name"], variant, run)


def main():
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        emit({"error": f"torch not importable: {e}"})
        return 0
    specs = json.load(sys.stdin)
    # Debian's torch links the system libblas, whichever alternative is
    # installed: name the library actually mapped after a matmul.
    torch.ones(64, 64) @ torch.ones(64, 64)
    blas = "unknown"
    try:
        with open("/proc/self/maps") as maps:
            libs = sorted({line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line})
        blas = ", ".join(libs) or "none found"
    except OSError:
        pass
    head = {"torch": torch.__version__, "blas": blas}
    if any(spec.get("device") == "cuda" for spec in specs):
        if not torch.cuda.is_available():
            emit({"error": f"torch {torch.__version__} has no CUDA device here"})
            return 0
        head["device"] = torch.cuda.get_device_name(0)
    emit(head)
    for spec in specs:
        torch.set_num_threads(spec["threads"])
        if spec.get("device") == "cuda":
            torch.cuda.empty_cache()
        with torch.no_grad():
            if spec["family"] == "blocksparse":
                blocksparse(spec, torch)
            elif spec["family"] == "attention":
                attention(spec, torch)
            elif spec["family"] in ("diversity", "coverage"):
                diversity(spec, torch)
            elif spec["family"] == "quantize":
                if spec.get("cold"):
                    continue  # torch runs warm only
                quantize(spec, torch)
            elif spec["family"] == "merge":
                if spec["kind"] == "tome":
                    tome_merge(spec, torch)
                else:
                    visionzip_contextual(spec, torch)
            else:
                topk(spec, torch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
