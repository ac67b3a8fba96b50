"""Encoder throughput over a long document in 1024-token windows, by precision, batch size and threads.

Encodes random token ids of the requested length, cut into 1024-token windows
as the engine cuts documents (``<s>``, 1022 content tokens, ``</s>``), with
``synopsis.engine.encoding.encode_windows`` on a random-weight BART-base-sized
model. For each of the engine's precisions (fp32, bf16, int8) it prints tokens
per second for each batch size with one thread per physical core, then for
batch 1 at each other thread count. Beside them stand the encoder's
floating-point operations per token and the machine's measured ``torch.mm``
rate, so the share of peak the encoder reaches is visible, and how far each
case's fused states drift from fp32's.

All cases run in one process, one after another, because the model and the
windows are shared. Each case encodes the whole document once, after one
warm-up window per precision, so every time is a single measurement.

    python bench/encode.py            # 32K tokens, batch sizes 1, 2, 4, 8, threads 1 to cores; writes docs/
    python bench/encode.py --quick    # 8K tokens, batch sizes 1 and 2; prints the table
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BART_SIZES,
    BART_VOCAB,
    DOCS,
    FIGURES,
    describe_machine,
    machine,
    markdown_table,
    pyplot,
    random_bart,
    save_figure,
    save_results,
    write_section,
)

SECTION = "encode"
WINDOW_TOKENS = 1024
TOKENS = 32768
BATCH_SIZES = (1, 2, 4, 8)
PRECISIONS = ("fp32", "bf16", "int8")
MATMUL_SIZE = 2048

# BART-base sizes. Only the encoder runs here.
D_MODEL = BART_SIZES["base"]["d_model"]
LAYERS = BART_SIZES["base"]["encoder_layers"]
FFN = BART_SIZES["base"]["encoder_ffn_dim"]


def encoder_flops_per_token(d_model: int, layers: int, ffn: int, window: int) -> int:
    """Return the encoder's multiply-add FLOPs per token (2 per multiply-add), embeddings and norms left out.

    Per layer and token: the four attention projections (4 d^2), the two
    feed-forward matrices (2 d ffn) and the attention scores and weighted sum
    over the window (2 window d), each a multiply-add.
    """
    multiply_adds = 4 * d_model * d_model + 2 * d_model * ffn + 2 * window * d_model
    return 2 * multiply_adds * layers


def matmul_flops_per_second(size: int = MATMUL_SIZE, repeats: int = 5, dtype_name: str = "float32") -> float:
    """Return the best rate of ``torch.mm`` on two size x size matrices of ``dtype_name``, in FLOP/s."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def build_model():
    return random_bart("base", max_positions=WINDOW_TOKENS)


def build_windows(tokens: int):
    """Return ``Windows`` over ``tokens`` random content ids, cut as the engine cuts a document."""
    import torch

    from synopsis.engine.windows import Window, Windows

    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(4, BART_VOCAB, (tokens,), generator=generator).tolist()
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


def time_encoding(model, windows, batch_windows: int, precision: str, threads: int):
    """Encode ``windows`` once; return (seconds, fused hidden states, float32)."""
    from synopsis.engine.encoding import encode_windows

    started = time.perf_counter()
    memory = encode_windows(model, windows, batch_windows=batch_windows, precision=precision, threads=threads)
    return time.perf_counter() - started, memory.hidden_states


def drift_from(states, reference) -> dict:
    """Return how far ``states`` are from ``reference``: max absolute, relative (Frobenius) and min cosine."""
    import torch

    difference = states - reference
    return {
        "max_abs": float(difference.abs().max()),
        "relative": float(difference.norm() / reference.norm()),
        "min_cosine": float(torch.nn.functional.cosine_similarity(states[0], reference[0], dim=-1).min()),
    }


def run(tokens: int, batch_sizes: tuple[int, ...], precisions: tuple[str, ...], thread_counts: tuple[int, ...]) -> dict:
    """Encode the document for every precision and batch size with one thread per physical core, then
    for every precision at batch 1 and each other thread count."""
    from synopsis.engine.speed import physical_cores
    from synopsis.engine.windows import Windows

    model = build_model()
    windows = build_windows(tokens)
    default_threads = physical_cores()
    warm_up = Windows(windows.input_ids[:1], windows.attention_mask[:1], windows.windows[:1], 1022)
    for precision in precisions:
        time_encoding(model, warm_up, 1, precision, default_threads)  # int8 quantizes its copy here

    cases = [(precision, batch, default_threads) for precision in precisions for batch in batch_sizes]
    cases += [(precision, 1, count) for precision in precisions for count in thread_counts if count != default_threads]
    results = []
    reference = None
    for precision, batch, threads in cases:
        print(f"{precision}, batch {batch}, {threads} threads", file=sys.stderr, flush=True)
        seconds, states = time_encoding(model, windows, batch, precision, threads)
        if reference is None:
            reference = states  # the first case is fp32, batch 1
        results.append(
            {
                "precision": precision,
                "batch": batch,
                "threads": threads,
                "seconds": seconds,
                "tokens_per_second": tokens / seconds,
                "drift": drift_from(states, reference),
            }
        )
    return {
        "tokens": tokens,
        "windows": len(windows),
        "default_threads": default_threads,
        "results": results,
        "flops_per_token": encoder_flops_per_token(D_MODEL, LAYERS, FFN, WINDOW_TOKENS),
        "matmul_flops_per_second": matmul_flops_per_second(),
        "bf16_matmul_flops_per_second": matmul_flops_per_second(dtype_name="bfloat16"),
    }


GOAL_SHARE_OF_MM_RATE = 0.60

# The engine defaults taken from these measurements, and the reasons the goal is missed.
WHY = (
    "Defaults taken from this measurement: on a CPU the engine encodes 4 windows per batch (batching gained "
    "at every precision, 8 gained little more and lost for int8) with one thread per physical core but one "
    "(`speed.encoding_threads()`), because with all cores OpenMP waits at every operation for a thread whose "
    "core another program holds, which made 1 thread faster than 2 here. bf16, which `auto` picks on a CPU with bf16 instructions, "
    "drifts 0.4% from fp32, under the 1% threshold the engine's tests hold reduced precision to. int8 drifts "
    "about 3%, so `auto` never picks it. Why the share of the mm rate is low: "
    "`torch.mm` keeps its best of five short bursts, which land in moments the shared cores are free, while "
    "each encoding case averages over 10 to 50 s of other jobs' load; and softmax, layer norm and GELU move "
    "memory without counted FLOPs. The cases also ran in order while the load fell, which favors the later "
    "ones (larger batches, then 1 thread), so the gains above are upper bounds."
)


def share_of_mm_rate(run_result: dict, row: dict) -> float:
    """Return the row's FLOP rate over the measured mm rate of its own number format (float32 for int8)."""
    rate = run_result["bf16_matmul_flops_per_second"] if row["precision"] == "bf16" else run_result["matmul_flops_per_second"]
    return row["tokens_per_second"] * run_result["flops_per_token"] / rate


def format_table(run_result: dict) -> str:
    flops = run_result["flops_per_token"]
    float32_batch_1 = run_result["results"][0]["tokens_per_second"]
    rows = []
    for row in run_result["results"]:
        achieved = row["tokens_per_second"] * flops
        drift = row["drift"]
        rows.append(
            [
                row["precision"],
                str(row["batch"]),
                str(row["threads"]),
                f"{row['seconds']:.1f}",
                f"{row['tokens_per_second']:,.0f}",
                f"{row['tokens_per_second'] / float32_batch_1:.2f}x",
                f"{achieved / 1e9:.0f}",
                f"{share_of_mm_rate(run_result, row):.0%}",
                f"{drift['relative']:.4f}",
                f"{drift['min_cosine']:.4f}",
            ]
        )
    header = [
        "precision",
        "batch windows",
        "threads",
        "seconds",
        "tokens/s",
        "vs fp32 batch 1",
        "GFLOP/s",
        "of own mm rate",
        "relative drift from fp32",
        "lowest cosine",
    ]
    return markdown_table(header, "lrrrrrrrrr", rows)


def best_row(run_result: dict, precision: str) -> dict | None:
    rows = [row for row in run_result["results"] if row["precision"] == precision]
    return max(rows, key=lambda row: row["tokens_per_second"]) if rows else None


def summary_lines(run_result: dict) -> list[str]:
    lines = [
        f"- Encoder FLOPs per token (BART-base, {WINDOW_TOKENS}-token window, multiply-adds counted as 2): "
        f"{run_result['flops_per_token'] / 1e6:.0f} MFLOP.",
        f"- Measured `torch.mm` rate ({MATMUL_SIZE} x {MATMUL_SIZE}, best of 5): float32 "
        f"{run_result['matmul_flops_per_second'] / 1e9:.0f} GFLOP/s, bfloat16 "
        f"{run_result['bf16_matmul_flops_per_second'] / 1e9:.0f} GFLOP/s.",
    ]
    for precision in ("fp32", "bf16", "int8"):
        row = best_row(run_result, precision)
        if row is None:
            continue
        share = share_of_mm_rate(run_result, row)
        if share > 1:
            # The encoder cannot beat the plain matmul it is made of: the
            # reference burst was slowed by other jobs, so no verdict holds.
            verdict = "no verdict: above 100% means the mm reference was measured while the cores were busy"
        elif share >= GOAL_SHARE_OF_MM_RATE:
            verdict = "met"
        else:
            verdict = f"missed by {(GOAL_SHARE_OF_MM_RATE - share) * 100:.0f} percentage points"
        lines.append(
            f"- Goal, at least {GOAL_SHARE_OF_MM_RATE:.0%} of the mm rate: {precision} at best {share:.0%} "
            f"(batch {row['batch']}, {row['threads']} thread{'s' if row['threads'] != 1 else ''}), {verdict}."
        )
    return lines


def plot(run_result: dict, path: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(9, 4))
    rows = run_result["results"]
    labels = [f"{row['precision']}\nb{row['batch']} t{row['threads']}" for row in rows]
    axis.bar(labels, [row["tokens_per_second"] for row in rows])
    axis.set_ylabel("tokens per second")
    axis.grid(True, axis="y", alpha=0.3)
    axis.tick_params(axis="x", labelsize=8)
    figure.suptitle(f"Encoding {run_result['tokens']:,} tokens in {WINDOW_TOKENS}-token windows, BART-base, CPU")
    save_figure(figure, path)


def write_docs(run_result: dict, info: dict) -> None:
    plot_path = FIGURES / f"{SECTION}.png"
    plot(run_result, plot_path)
    save_results(SECTION, [run_result], info)
    body = "\n".join(
        [
            "## Encoding: precision, batch size and threads",
            "",
            describe_machine(info),
            "",
            f"`encode_windows` on {run_result['tokens']:,} random token ids in {run_result['windows']} windows of "
            f"{WINDOW_TOKENS} tokens, BART-base-sized encoder with random weights, one process, each case "
            "encoding the whole document once after a one-window warm-up per precision. Precisions are the "
            "engine's: fp32, bf16 (autocast) and int8 (dynamic quantization of a copy of the encoder's Linear "
            f"layers). Every precision runs batch sizes {', '.join(str(b) for b in sorted({r['batch'] for r in run_result['results']}))} "
            f"at {run_result['default_threads']} threads (one per physical core), then "
            "batch 1 at the other thread counts. The drift columns compare the fused states with the first "
            "fp32 case's. The share of the matrix-multiply rate counts only the FLOPs listed below, against "
            "the `torch.mm` rate of the same number format (float32 for int8, which has no such reference here), "
            "so it is a rough efficiency figure. The cases ran one after another on a shared machine, so part "
            "of the differences may come from changing load.",
            "",
            format_table(run_result),
            "",
            *summary_lines(run_result),
            "",
            WHY,
            "",
            f"![Encoder tokens per second]({plot_path.relative_to(DOCS).as_posix()})",
        ]
    )
    write_section(SECTION, body)


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(value) for value in text.split(","))


def _precisions(text: str) -> tuple[str, ...]:
    names = tuple(text.split(","))
    if names[0] != "fp32" or not set(names) <= {"fp32", "bf16", "int8"}:
        raise argparse.ArgumentTypeError("use fp32 first, then any of bf16 and int8, comma-separated")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="encode 8K tokens with batch sizes 1 and 2 and print")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating docs/")
    parser.add_argument("--tokens", type=int, default=TOKENS, help=f"document tokens to encode (default: {TOKENS})")
    parser.add_argument("--batches", type=_numbers, default=BATCH_SIZES, help="windows per batch, comma-separated")
    parser.add_argument(
        "--precisions", type=_precisions, default=PRECISIONS, help="fp32 first, then bf16 and int8, comma-separated"
    )
    parser.add_argument(
        "--threads", type=_numbers, help="thread counts to try at batch 1 (default: 1 to the physical cores)"
    )
    parser.add_argument(
        "--rewrite-docs", action="store_true", help="render docs/ again from the saved results, running nothing"
    )
    args = parser.parse_args()

    if args.rewrite_docs:
        import json

        saved = json.loads((FIGURES / f"{SECTION}.json").read_text(encoding="utf-8"))
        write_docs(saved["results"][0], saved["machine"])
        return 0

    from synopsis.engine.speed import physical_cores

    tokens, batches = (8192, (1, 2)) if args.quick else (args.tokens, args.batches)
    thread_counts = args.threads or tuple(range(1, physical_cores() + 1))
    run_result = run(tokens, batches, args.precisions, thread_counts)
    info = {**machine(), "command": ("python bench/encode.py " + " ".join(sys.argv[1:])).strip()}
    print(format_table(run_result))
    print("\n".join(summary_lines(run_result)))
    if not args.quick and not args.no_write:
        write_docs(run_result, info)
        print(f"wrote {DOCS / 'benchmarks.md'} and {FIGURES}/{SECTION}.*", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
