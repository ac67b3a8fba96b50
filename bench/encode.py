"""Encoder throughput over a long document in 1024-token windows, by batch size and precision.

Encodes random token ids of the requested length, cut into 1024-token windows
as the engine cuts documents (``<s>``, 1022 content tokens, ``</s>``), with
``synopsis.engine.encoding.encode_windows`` on a random-weight BART-base-sized
model. Prints tokens per second for each batch size, beside the encoder's
floating-point operations per token for this config and the machine's measured
float32 matrix-multiply rate, so the share of peak the encoder reaches is
visible. Then encodes the same windows under bfloat16 autocast and reports its
speed-up over float32 and how far its output drifts from float32's.

All cases run in one process, one after another, because the model and the
windows are shared. Each case encodes the whole document once, after one
warm-up window, so every time is a single measurement.

    python bench/encode.py            # 64K tokens, batch sizes 1, 2, 4, 8; writes docs/
    python bench/encode.py --quick    # 8K tokens, batch sizes 1 and 2; prints the table
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DOCS,
    FIGURES,
    describe_machine,
    machine,
    markdown_table,
    pyplot,
    save_results,
    write_section,
)

SECTION = "encode"
WINDOW_TOKENS = 1024
TOKENS = 65536
BATCH_SIZES = (1, 2, 4, 8)
MATMUL_SIZE = 2048

# BART-base sizes. Only the encoder runs here.
D_MODEL = 768
LAYERS = 6
HEADS = 12
FFN = 3072
VOCAB = 50265


def encoder_flops_per_token(d_model: int, layers: int, ffn: int, window: int) -> int:
    """Return the encoder's multiply-add FLOPs per token (2 per multiply-add), embeddings and norms left out.

    Per layer and token: the four attention projections (4 d^2), the two
    feed-forward matrices (2 d ffn) and the attention scores and weighted sum
    over the window (2 window d), each a multiply-add.
    """
    multiply_adds = 4 * d_model * d_model + 2 * d_model * ffn + 2 * window * d_model
    return 2 * multiply_adds * layers


def matmul_flops_per_second(size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """Return the best float32 rate of ``torch.mm`` on two size x size matrices, in FLOP/s."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def build_model():
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=VOCAB,
        d_model=D_MODEL,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN,
        max_position_embeddings=WINDOW_TOKENS,
    )
    torch.manual_seed(0)
    return BartForConditionalGeneration(config).eval()


def build_windows(tokens: int):
    """Return ``Windows`` over ``tokens`` random content ids, cut as the engine cuts a document."""
    import torch

    from synopsis.engine.windows import Window, Windows

    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(4, VOCAB, (tokens,), generator=generator).tolist()
    content = WINDOW_TOKENS - 2
    rows, windows = [], []
    for index, start in enumerate(range(0, tokens, content)):
        end = min(start + content, tokens)
        rows.append([0] + ids[start:end] + [2])  # <s> ... </s>
        windows.append(Window(index, start, end, start, end, None))
    input_ids = torch.full((len(rows), WINDOW_TOKENS), 1, dtype=torch.long)  # 1 is <pad>
    attention_mask = torch.zeros_like(input_ids)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = torch.tensor(row)
        attention_mask[index, : len(row)] = 1
    return Windows(input_ids, attention_mask, windows, total_tokens=tokens)


def time_encoding(model, windows, batch_windows: int, autocast: bool):
    """Encode ``windows`` once; return (seconds, fused hidden states as float32)."""
    import contextlib

    import torch

    from synopsis.engine.encoding import encode_windows

    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        started = time.perf_counter()
        memory = encode_windows(model, windows, batch_windows=batch_windows)
        seconds = time.perf_counter() - started
    return seconds, memory.hidden_states.float()


def run(tokens: int, batch_sizes: tuple[int, ...]) -> dict:
    import torch

    from synopsis.engine.windows import Windows

    model = build_model()
    windows = build_windows(tokens)
    warm_up = Windows(windows.input_ids[:1], windows.attention_mask[:1], windows.windows[:1], 1022)
    time_encoding(model, warm_up, 1, autocast=False)
    time_encoding(model, warm_up, 1, autocast=True)

    results = []
    reference = None
    for batch in batch_sizes:
        print(f"float32, batch {batch}", file=sys.stderr, flush=True)
        seconds, states = time_encoding(model, windows, batch, autocast=False)
        if reference is None:
            reference = states
        results.append({"precision": "float32", "batch": batch, "seconds": seconds, "tokens_per_second": tokens / seconds})

    print("bfloat16 autocast, batch 1", file=sys.stderr, flush=True)
    seconds, states = time_encoding(model, windows, 1, autocast=True)
    difference = states - reference
    drift = {
        "max_abs": float(difference.abs().max()),
        "relative": float(difference.norm() / reference.norm()),
        "min_cosine": float(torch.nn.functional.cosine_similarity(states[0], reference[0], dim=-1).min()),
    }
    results.append({"precision": "bfloat16 autocast", "batch": 1, "seconds": seconds, "tokens_per_second": tokens / seconds})
    return {
        "tokens": tokens,
        "windows": len(windows),
        "results": results,
        "drift": drift,
        "flops_per_token": encoder_flops_per_token(D_MODEL, LAYERS, FFN, WINDOW_TOKENS),
        "matmul_flops_per_second": matmul_flops_per_second(),
    }


def format_table(run_result: dict) -> str:
    flops = run_result["flops_per_token"]
    float32_batch_1 = run_result["results"][0]["tokens_per_second"]
    rows = []
    for row in run_result["results"]:
        achieved = row["tokens_per_second"] * flops
        rows.append(
            [
                row["precision"],
                str(row["batch"]),
                f"{row['seconds']:.1f}",
                f"{row['tokens_per_second']:,.0f}",
                f"{row['tokens_per_second'] / float32_batch_1:.2f}x",
                f"{achieved / 1e9:.0f}",
                f"{achieved / run_result['matmul_flops_per_second']:.0%}",
            ]
        )
    header = ["precision", "batch windows", "seconds", "tokens/s", "vs float32 batch 1", "GFLOP/s", "of float32 mm rate"]
    return markdown_table(header, "lrrrrrr", rows)


def summary_lines(run_result: dict) -> list[str]:
    drift = run_result["drift"]
    return [
        f"- Encoder FLOPs per token (BART-base, {WINDOW_TOKENS}-token window, multiply-adds counted as 2): "
        f"{run_result['flops_per_token'] / 1e6:.0f} MFLOP.",
        f"- Measured float32 `torch.mm` rate ({MATMUL_SIZE} x {MATMUL_SIZE}, best of 5): "
        f"{run_result['matmul_flops_per_second'] / 1e9:.0f} GFLOP/s.",
        f"- bfloat16 autocast against float32, batch 1: relative error of the fused states "
        f"{drift['relative']:.4f} (Frobenius norm), max absolute difference {drift['max_abs']:.3f}, "
        f"lowest per-position cosine similarity {drift['min_cosine']:.4f}.",
    ]


def plot(run_result: dict, path: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    labels = [f"{row['precision'].split()[0]}\nbatch {row['batch']}" for row in run_result["results"]]
    axis.bar(labels, [row["tokens_per_second"] for row in run_result["results"]])
    axis.set_ylabel("tokens per second")
    axis.grid(True, axis="y", alpha=0.3)
    figure.suptitle(f"Encoding {run_result['tokens']:,} tokens in {WINDOW_TOKENS}-token windows, BART-base, CPU")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def write_docs(run_result: dict, info: dict) -> None:
    plot_path = FIGURES / f"{SECTION}.png"
    plot(run_result, plot_path)
    save_results(SECTION, [run_result], info)
    body = "\n".join(
        [
            "## Encoding: batch size and bfloat16 autocast",
            "",
            describe_machine(info),
            "",
            f"`encode_windows` on {run_result['tokens']:,} random token ids in {run_result['windows']} windows of "
            f"{WINDOW_TOKENS} tokens, BART-base-sized encoder with random weights, one process, each case "
            "encoding the whole document once after a one-window warm-up. The share of the matrix-multiply "
            "rate counts only the FLOPs listed below, so it is a rough efficiency figure, and for bfloat16 it "
            "can pass 100% because the reference is the float32 rate. The cases ran one after another on a "
            "shared machine, so part of the differences between batch sizes may come from changing load: "
            "rerun on an idle machine before relying on them.",
            "",
            format_table(run_result),
            "",
            *summary_lines(run_result),
            "",
            f"![Encoder tokens per second]({plot_path.relative_to(DOCS).as_posix()})",
        ]
    )
    write_section(SECTION, body)


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(value) for value in text.split(","))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="encode 8K tokens with batch sizes 1 and 2 and print")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating docs/")
    parser.add_argument("--tokens", type=int, default=TOKENS, help=f"document tokens to encode (default: {TOKENS})")
    parser.add_argument("--batches", type=_numbers, default=BATCH_SIZES, help="windows per batch, comma-separated")
    parser.add_argument(
        "--rewrite-docs", action="store_true", help="render docs/ again from the saved results, running nothing"
    )
    args = parser.parse_args()

    if args.rewrite_docs:
        import json

        saved = json.loads((FIGURES / f"{SECTION}.json").read_text(encoding="utf-8"))
        write_docs(saved["results"][0], saved["machine"])
        return 0

    tokens, batches = (8192, (1, 2)) if args.quick else (args.tokens, args.batches)
    run_result = run(tokens, batches)
    info = {**machine(), "command": ("python bench/encode.py " + " ".join(sys.argv[1:])).strip()}
    print(format_table(run_result))
    print("\n".join(summary_lines(run_result)))
    if not args.quick and not args.no_write:
        write_docs(run_result, info)
        print(f"wrote {DOCS / 'benchmarks.md'} and {FIGURES}/{SECTION}.*", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
