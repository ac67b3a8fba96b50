"""Peak memory and step time of one training step: plain backpropagation, the cached step and LED.

Builds a BART-sized model with random weights, a Longformer-Encoder-Decoder
(``LEDForConditionalGeneration``) of the same width and depth with 16,384
encoder positions, and a byte-level BPE tokenizer trained on local text, all
offline. Each case runs one training step (forward and backward, no optimizer
update) in a fresh subprocess:

- plain: one graph through every window and the decoder, then backward;
- cached: ``cached_backward`` (gradient caching; the decoder attends to a long
  memory block by block, see engine/training/memory_attention.py);
- led: LED over the whole input as one sequence, global attention on the
  first token, then backward.

Inputs are real corpus text tokenized and repeated to the requested length,
with a 256-token summary. Peak memory is the child's VmHWM (peak resident
memory, model weights and Python included) on the CPU, and
``torch.cuda.max_memory_allocated`` (tensors only) on CUDA.

Every case runs under a memory cap, ``--memory-cap-gib``, which the CPU lowers
to 80% of the memory available when the case starts. An allocation past the
cap raises an error in the child, not a visit from the out-of-memory killer:
on the CPU through an RLIMIT_DATA limit, on CUDA through
``set_per_process_memory_fraction``. ``--longest`` then doubles the input of
the cached step until a case fails, passes the cap or would not finish within
``--time-limit``.

NOTE: on the CPU the cap does not cover memory that other processes take
after a case starts, so the kernel's out-of-memory killer can still stop a
case (it stopped LED at 16K tokens when two runs overlapped).

    python bench/train_memory.py --quick      # 1K tokens only, prints the table
    python bench/train_memory.py --longest    # 4K and 16K comparison, then the search, writes docs/
    python bench/train_memory.py --device cuda --dtype bfloat16 --config large --longest --time-limit 300

Results go to docs/benchmarks.md, one section per device, dtype and config,
with a plot and the raw results in docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BART_SIZES,
    BART_VOCAB,
    DOCS,
    FIGURES,
    GIB,
    ROOT,
    available_bytes,
    current_rss_bytes,
    describe_machine,
    machine,
    markdown_table,
    peak_rss_bytes,
    pyplot,
    run_child,
    save_results,
    write_section,
)

WINDOW_TOKENS = 1024  # BART's encoder positions, special tokens included
SUMMARY_TOKENS = 256
COMPARISON_SIZES = (4096, 16384)
QUICK_TOKENS = 1024  # --quick: two windows; about 30 s for plain or cached, 75 s for LED on a loaded 2-core CPU
METHODS = ("plain", "cached", "led")
LED_POSITIONS = 16384
LED_ATTENTION_WINDOW = 1024  # as allenai/led-base-16384
AVAILABLE_SHARE = 0.8  # on the CPU, cap a case at this share of the memory available when it starts
SEARCH_GROWTH = 2.2  # an estimate: a doubled input takes at most this many times as long

DTYPES = ("float32", "bfloat16")


# Models --------------------------------------------------------------------------


def build_models(folder: Path, config_name: str, attention_dropout: float) -> None:
    """Save a random BART and a random LED of the ``config_name`` size, each with the local tokenizer."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration, LEDConfig, LEDForConditionalGeneration

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.tiny import build_tokenizer

    tokenizer = build_tokenizer(vocab_size=8000)
    common = dict(
        **BART_SIZES[config_name],
        vocab_size=BART_VOCAB,
        dropout=0.1,
        attention_dropout=attention_dropout,
        activation_dropout=0.1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(**common, max_position_embeddings=WINDOW_TOKENS)).save_pretrained(
        folder / "bart"
    )
    led_config = LEDConfig(
        **common,
        max_encoder_position_embeddings=LED_POSITIONS,
        max_decoder_position_embeddings=WINDOW_TOKENS,
        attention_window=LED_ATTENTION_WINDOW,
    )
    LEDForConditionalGeneration(led_config).save_pretrained(folder / "led")
    for name in ("bart", "led"):
        tokenizer.save_pretrained(folder / name)


def corpus_text() -> tuple[str, str]:
    """Return long document text and a summary from the corpus pairs, or generated text without them."""
    pairs = ROOT.parent / "shared" / "corpus" / "pairs" / "qmsum_meetings.jsonl"
    if pairs.is_file():
        rows = [json.loads(line) for line in pairs.read_text(encoding="utf-8").splitlines()]
        return "\n".join(row["document"] for row in rows), " ".join(row["summary"] for row in rows)
    words = " ".join(f"word{n % 997}" for n in range(200_000))
    return words, words


# One case, in a child process ----------------------------------------------------


def apply_memory_cap(device: str, cap_bytes: int) -> None:
    """Make allocations past ``cap_bytes`` fail with an error in this process."""
    if device == "cpu":
        # RLIMIT_DATA counts private writable mappings, where malloc puts torch's tensors.
        resource.setrlimit(resource.RLIMIT_DATA, (cap_bytes, cap_bytes))
    else:
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_bytes / total), 0)


def document_tensors(tokenizer, tokens: int):
    """Return (document ids, labels): ``tokens`` corpus tokens and a SUMMARY_TOKENS-token summary."""
    import torch

    document, summary = corpus_text()
    document_ids = tokenizer(document, add_special_tokens=False, verbose=False)["input_ids"]
    summary_ids = tokenizer(summary, add_special_tokens=False, verbose=False)["input_ids"]
    document_ids = (document_ids * math.ceil(tokens / len(document_ids)))[:tokens]
    labels = torch.tensor([[tokenizer.bos_token_id] + summary_ids[: SUMMARY_TOKENS - 2] + [tokenizer.eos_token_id]])
    return document_ids, labels


def window_tensors(tokenizer, document_ids: list[int]):
    """Cut ids into windows as the engine does: <s> + 1022 content tokens + </s>, the last one padded."""
    import torch

    content = WINDOW_TOKENS - 2
    rows = [
        [tokenizer.bos_token_id] + document_ids[start : start + content] + [tokenizer.eos_token_id]
        for start in range(0, len(document_ids), content)
    ]
    input_ids = torch.full((len(rows), WINDOW_TOKENS), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = torch.tensor(row)
        attention_mask[index, : len(row)] = 1
    return input_ids, attention_mask


def step_function(method: str, model, tokenizer, document_ids: list[int], labels, dtype):
    """Build one training step of ``method``; return a function that runs it and returns the loss, and the windows."""
    import torch

    from synopsis.engine.training.step import autocast_context, cached_backward, decoder_loss, encode_chunk

    device = model.device
    labels = labels.to(device)
    if method == "led":
        ids = [tokenizer.bos_token_id] + document_ids[: LED_POSITIONS - 2] + [tokenizer.eos_token_id]
        input_ids = torch.tensor([ids], device=device)
        attention_mask = torch.ones_like(input_ids)
        global_attention = torch.zeros_like(input_ids)
        global_attention[:, 0] = 1  # the <s> token attends to, and is attended by, every position

        def run():
            with autocast_context(device, dtype):
                loss = model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    global_attention_mask=global_attention,
                    labels=labels,
                    use_cache=False,
                ).loss
            loss.backward()
            return loss

        return run, 1

    input_ids, attention_mask = window_tensors(tokenizer, document_ids)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    if method == "cached":
        return lambda: cached_backward(model, input_ids, attention_mask, labels, 1, autocast_dtype=dtype), len(input_ids)

    def run():
        # Plain backpropagation: one graph through every window and the decoder.
        with autocast_context(device, dtype):
            memory = encode_chunk(model.get_encoder(), input_ids, attention_mask).unsqueeze(0)
            loss = decoder_loss(model, memory, labels)
        loss.backward()
        return loss

    return run, len(input_ids)


def run_case(options: dict) -> dict:
    """Run one step of ``options['method']`` on ``options['tokens']`` tokens; return the measurements."""
    device_name, method, tokens = options["device"], options["method"], options["tokens"]
    apply_memory_cap(device_name, options["cap_bytes"])
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    device = torch.device(device_name)
    dtype = torch.bfloat16 if options["dtype"] == "bfloat16" else None  # bfloat16 runs as autocast, as in training
    folder = Path(options["folder"]) / ("led" if method == "led" else "bart")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).to(device)
    model.train()
    document_ids, labels = document_tensors(tokenizer, tokens)

    if device.type == "cuda":
        # Warm up kernels and the allocator on a one-window input, so the timed step pays no start-up cost.
        warm_up, _ = step_function(method, model, tokenizer, document_ids[:1000], labels, dtype)
        warm_up()
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = current_rss_bytes()

    run, windows = step_function(method, model, tokenizer, document_ids, labels, dtype)
    started = time.perf_counter()
    loss = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss_bytes()
    return {"windows": windows, "seconds": seconds, "peak_bytes": peak, "before_bytes": before, "loss": float(loss)}


# Orchestration -------------------------------------------------------------------


class Runner:
    """Runs cases in children within a memory cap and an overall time limit."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.deadline = time.monotonic() + args.time_limit if args.time_limit else None

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def run(self, method: str, tokens: int) -> dict:
        base = {"method": method, "tokens": tokens}
        cap = int(self.args.memory_cap_gib * GIB)
        if self.args.device == "cpu":
            cap = min(cap, int(available_bytes() * AVAILABLE_SHARE))
        base["cap_bytes"] = cap
        if method == "led" and tokens > LED_POSITIONS:
            return {**base, "error": f"LED has {LED_POSITIONS:,} positions"}
        timeout = self.args.case_timeout
        left = self.seconds_left()
        if left is not None:
            if left <= 0:
                return {**base, "error": "time limit reached"}
            timeout = min(timeout, left)
        options = {
            "folder": str(self.folder),
            "method": method,
            "tokens": tokens,
            "device": self.args.device,
            "dtype": self.args.dtype,
            "cap_bytes": cap,
        }
        print(f"running {method} at {tokens:,} tokens, cap {cap / GIB:.1f} GiB", file=sys.stderr, flush=True)
        result = run_child(__file__, [json.dumps(options)], timeout)
        error = result.get("error", "")
        if "can't allocate memory" in error or "OutOfMemoryError" in error:
            result["error"] = f"over the {cap / GIB:.1f} GiB cap"
        print(f"  {result}", file=sys.stderr, flush=True)
        return {**base, **result}


def search_longest(runner: Runner, results: list[dict], start: int, stop: int) -> None:
    """Double the cached step's input from ``start`` while it fits the cap and the time limit."""
    tokens = start
    last_seconds = max((row["seconds"] for row in results if row["method"] == "cached" and "seconds" in row), default=0)
    last_tokens = max((row["tokens"] for row in results if row["method"] == "cached" and "seconds" in row), default=1)
    while tokens <= stop:
        left = runner.seconds_left()
        expected = last_seconds * tokens / last_tokens * SEARCH_GROWTH / 2
        if left is not None and expected > left:
            results.append(
                {"method": "cached", "tokens": tokens, "error": f"expected about {expected:.0f} s, {left:.0f} s left"}
            )
            return
        row = runner.run("cached", tokens)
        results.append(row)
        if "error" in row:
            return
        last_seconds, last_tokens = row["seconds"], tokens
        tokens *= 2


# Report --------------------------------------------------------------------------


def growth_per_1k(results: list[dict], method: str, low: int, high: int) -> float | None:
    """Return the peak-memory growth in bytes per 1,024 input tokens between two measured sizes."""
    rows = {row["tokens"]: row for row in results if row["method"] == method and "peak_bytes" in row}
    if low not in rows or high not in rows:
        return None
    return (rows[high]["peak_bytes"] - rows[low]["peak_bytes"]) / (high - low) * 1024


def goals(results: list[dict], cap_gib: float) -> list[str]:
    """Return one Markdown line per goal, with the measured figure."""
    measured = {(row["method"], row["tokens"]): row for row in results if "seconds" in row}
    lines = []
    plain, cached = measured.get(("plain", 16384)), measured.get(("cached", 16384))
    if plain and cached:
        ratio = cached["seconds"] / plain["seconds"]
        lines.append(f"- Cached step time over plain's at 16K tokens: {ratio:.2f}x (goal: at most 1.05x).")
    plain_growth = growth_per_1k(results, "plain", 4096, 16384)
    cached_growth = growth_per_1k(results, "cached", 4096, 16384)
    cached_rows = sorted(tokens for method, tokens in measured if method == "cached")
    if plain_growth and cached_growth is not None:
        lines.append(
            f"- Peak growth per 1K input tokens from 4K to 16K: plain {plain_growth / 2**20:.0f} MiB, "
            f"cached {cached_growth / 2**20:.1f} MiB ({cached_growth / plain_growth:.3f} of plain's; "
            "goal: at most 0.1)."
        )
    if plain_growth and len(cached_rows) >= 2 and cached_rows[-1] > 16384:
        long_growth = growth_per_1k(results, "cached", 16384, cached_rows[-1])
        if long_growth is not None:
            lines.append(
                f"- Cached peak growth per 1K tokens from 16K to {cached_rows[-1]:,}: "
                f"{long_growth / 2**20:.1f} MiB ({long_growth / plain_growth:.3f} of plain's 4K-16K growth)."
            )
    if cached_rows:
        longest = measured[("cached", cached_rows[-1])]
        lines.append(
            f"- Longest input the cached step trained: {cached_rows[-1]:,} tokens at "
            f"{longest['peak_bytes'] / GIB:.2f} GiB peak in {longest['seconds']:.0f} s "
            f"(goal: 524,288 tokens within 24 GiB; the cap here was {cap_gib:g} GiB)."
        )
    return lines


def format_table(results: list[dict], device: str) -> str:
    peak = "peak RSS" if device == "cpu" else "peak allocated"
    header = ["input tokens", "windows", "method", "step time", peak, "before the step", "note"]
    rows = []
    for row in results:
        windows = row.get("windows", 1 if row["method"] == "led" else math.ceil(row["tokens"] / (WINDOW_TOKENS - 2)))
        if "error" in row:
            rows.append([f"{row['tokens']:,}", str(windows), row["method"], "-", "-", "-", row["error"]])
        else:
            rows.append(
                [
                    f"{row['tokens']:,}",
                    str(windows),
                    row["method"],
                    f"{row['seconds']:.1f} s",
                    f"{row['peak_bytes'] / GIB:.2f} GiB",
                    f"{row['before_bytes'] / GIB:.2f} GiB",
                    "",
                ]
            )
    return markdown_table(header, "rrlrrrl", rows)


def plot(results: list[dict], path: Path, title: str) -> None:
    plt = pyplot()
    figure, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for method, marker in (("plain", "o"), ("cached", "s"), ("led", "^")):
        rows = sorted((row for row in results if row["method"] == method and "seconds" in row), key=lambda r: r["tokens"])
        tokens = [row["tokens"] / 1024 for row in rows]
        memory_axis.plot(tokens, [row["peak_bytes"] / GIB for row in rows], marker=marker, label=method)
        time_axis.plot(tokens, [row["seconds"] for row in rows], marker=marker, label=method)
    for axis, label in ((memory_axis, "peak memory (GiB)"), (time_axis, "step time (s)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("input tokens (K)")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def section_name(info: dict) -> str:
    return f"train_memory_{info['device']}_{info['dtype']}_{info['config']}"


def write_docs(results: list[dict], info: dict) -> None:
    name = section_name(info)
    size = f"BART-{info['config']}"
    title = f"One {size} training step, {SUMMARY_TOKENS}-token summary, {info['dtype']} on {info['device']}"
    plot_path = FIGURES / f"{name}.png"
    plot(results, plot_path, title)
    peak = (
        "Peak memory is the child process's VmHWM (peak RSS), model weights and Python included"
        if info["device"] == "cpu"
        else "Peak memory is torch.cuda.max_memory_allocated (tensors only, allocator cache excluded)"
    )
    body = [
        f"## Training memory: plain backpropagation, the cached step and LED ({size}, {info['dtype']}, {info['device']})",
        "",
        describe_machine(info),
        "",
        f"One training step (forward and backward, no optimizer update) with random weights: {size} sizes, "
        f"dropout 0.1, attention dropout {info['attention_dropout']:g}, {info['dtype']} "
        f"({'autocast over float32 weights' if info['dtype'] == 'bfloat16' else 'no autocast'}), "
        f"{WINDOW_TOKENS}-token windows and a {SUMMARY_TOKENS}-token summary, each case in a fresh process. "
        f"LED is LEDForConditionalGeneration of the same width and depth with {LED_POSITIONS:,} encoder positions, "
        f"a {LED_ATTENTION_WINDOW}-token attention window and global attention on the first token, fed the same "
        f"tokens as one sequence. {peak}. Every case ran under a {info['memory_cap_gib']:g} GiB cap "
        "(on the CPU, lowered to 80% of the memory available at its start). "
        "The cached step attends to memories of 8,192 positions or more block by block "
        "(engine/training/memory_attention.py). AdamW would add twice the weights on top.",
        "",
        format_table(results, info["device"]),
        "",
        *goals(results, info["memory_cap_gib"]),
        "",
        f"![Peak memory and step time]({plot_path.relative_to(DOCS).as_posix()})",
    ]
    if info.get("gpu"):
        body[2] += f" GPU: {info['gpu']}."
    if info.get("notes"):
        body += ["", info["notes"]]
    write_section(name, "\n".join(body))
    save_results(name, results, info)


def merged_results(name: str, results: list[dict]) -> list[dict]:
    """Return the saved results of section ``name`` with ``results`` added, ordered by method and size.

    A new row replaces the saved row of the same case, unless the new one is
    an error and the saved one a measurement: on a shared machine a rerun can
    fail for lack of free memory that an earlier run had.
    """
    path = FIGURES / f"{name}.json"
    saved = json.loads(path.read_text(encoding="utf-8"))["results"] if path.is_file() else []
    rows: dict[tuple[str, int], dict] = {}
    for row in saved + results:
        key = (row["method"], row["tokens"])
        if "error" in row and key in rows and "error" not in rows[key]:
            continue
        rows[key] = row
    return sorted(rows.values(), key=lambda row: (row["tokens"] > COMPARISON_SIZES[-1], row["tokens"], METHODS.index(row["method"])))


def _sizes(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in value.split(",") if part.strip())


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device the steps run on")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="float32, or bfloat16 autocast over float32 weights"
    )
    parser.add_argument("--config", choices=tuple(BART_SIZES), default="base", help="BART-base or BART-large sizes")
    parser.add_argument("--quick", action="store_true", help="run the methods at 1,024 tokens only and print the table")
    parser.add_argument("--longest", action="store_true", help="after the comparison, search the longest cached input")
    parser.add_argument(
        "--longest-from", type=int, default=32768, help="first input size (tokens) the search tries (default: 32768)"
    )
    parser.add_argument(
        "--longest-to", type=int, default=4 * 2**20, help="largest input size (tokens) the search tries"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds for the whole run: a case running at the limit is stopped, and the search starts "
        "no size expected to pass it",
    )
    parser.add_argument("--case-timeout", type=float, default=3600, help="seconds allowed per case (default: 3600)")
    parser.add_argument(
        "--memory-cap-gib", type=float, default=24, help="memory cap per case in GiB (default: 24)"
    )
    parser.add_argument(
        "--sizes", type=_sizes, default=COMPARISON_SIZES, help="input tokens of the comparison cases, comma-separated"
    )
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="methods of the comparison, comma-separated: plain, cached, led"
    )
    parser.add_argument(
        "--attention-dropout", type=float, default=0.1, help="attention dropout of both models (default: 0.1)"
    )
    parser.add_argument("--notes", default="", help="a sentence added below the table in docs/")
    parser.add_argument(
        "--append",
        action="store_true",
        help="merge the results into this section's saved ones (a case measured again replaces the old row)",
    )
    parser.add_argument(
        "--rewrite-docs",
        action="store_true",
        help="render docs/ again from the saved results of --device, --dtype and --config, with --notes, running nothing",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table without updating docs/")
    parser.add_argument("--child", metavar="OPTIONS", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_arguments()
    if args.child:
        print(json.dumps(run_case(json.loads(args.child))))
        return 0

    if args.rewrite_docs:
        name = section_name({"device": args.device, "dtype": args.dtype, "config": args.config})
        saved = json.loads((FIGURES / f"{name}.json").read_text(encoding="utf-8"))
        write_docs(saved["results"], {**saved["machine"], "notes": args.notes or saved["machine"].get("notes", "")})
        return 0

    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method {', '.join(unknown)}: use plain, cached or led")
    sizes = (QUICK_TOKENS,) if args.quick else args.sizes
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-memory-") as folder:
        build_models(Path(folder), args.config, args.attention_dropout)
        runner = Runner(args, Path(folder))
        for tokens in sizes:
            for method in methods:
                results.append(runner.run(method, tokens))
        if args.longest and not args.quick:
            search_longest(runner, results, args.longest_from, args.longest_to)

    command = "python bench/train_memory.py " + " ".join(sys.argv[1:])
    info = {
        **machine(),
        "command": command.strip(),
        "device": args.device,
        "dtype": args.dtype,
        "config": args.config,
        "attention_dropout": args.attention_dropout,
        "memory_cap_gib": args.memory_cap_gib,
        "notes": args.notes,
    }
    if args.device == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    print(format_table(results, args.device))
    print("\n".join(goals(results, args.memory_cap_gib)))
    if not args.quick and not args.no_write:
        if args.append:
            results = merged_results(section_name(info), results)
        write_docs(results, info)
        print(f"wrote {DOCS / 'benchmarks.md'} and {FIGURES}/{section_name(info)}.*", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
