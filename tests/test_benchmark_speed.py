"""The speed harness (behrt-benchmark-speed): a tiny --quick run writes every section; FLOP counting
against a hand count and torch's FLOP counter; the GPU options parse and CUDA paths are guarded.
No timed assertions: timings on a shared CI machine prove nothing."""

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from behrt_hf import BehrtForMaskedLM
from behrt_hf.training import benchmark_speed as bench
from tests.helpers import tiny_config

TINY = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=37"


def test_quick_run_writes_every_section(tmp_path, capsys):
    out = tmp_path / "speed.json"
    results = bench.main([
        "--quick", "--output_json", str(out), "--synthetic", "medium", "--num_patients", "80",
        "--generation_patients", "20", "--presets", "small,medium", "--config_overrides", TINY,
        "--max_length", "32", "--batch_size", "4", "--repeats", "2", "--warmup", "1", "--matmul_size", "64",
        "--memory_batch_sizes", "2", "--padding_preset", "small",
    ])
    written = json.loads(out.read_text())
    assert written.keys() == results.keys() >= {"meta", "data", "train_throughput", "mfu", "padding", "pipeline",
                                                  "generation", "memory", "inference", "targets"}
    for preset in ("small", "medium"):
        train = written["train_throughput"]["presets"][preset]
        assert train["tokens_per_second"]["behrt"] > 0 and train["ratio_behrt_vs_bert"] > 0
        assert train["parameters"]["behrt"] > train["parameters"]["bert"]  # ages and segments embeddings
        assert 0 < written["mfu"]["presets"][preset]["mfu"]["behrt"] < math.inf
        assert written["inference"]["patients_per_second"][preset] > 0
    padding = written["padding"]
    assert set(padding["padding_fraction_mlm"]) == {"grouped", "padded_to_max_length", "random_order"}
    assert padding["padding_fraction_mlm"]["grouped"] <= padding["padding_fraction_mlm"]["padded_to_max_length"]
    assert set(padding["nvp"]["padding_fraction"]) == {"grouped_by_length", "random_order", "grouped_by_cut_length"}
    assert written["pipeline"]["ratio_batches_vs_model"] > 0
    assert written["generation"]["patients"] == 20 and "error" not in written["generation"]
    probes = written["memory"]["probes"]
    assert [(p["preset"], p["batch_size"]) for p in probes] == [("small", 2), ("medium", 2)]
    assert all("error" not in p and p["peak_rss_mib"] > 0 for p in probes), probes
    assert "6 * N + 12 * L * H * T" in written["mfu"]["formula"]
    assert {t["name"] for t in written["targets"]} >= {"BEHRT/BERT small", "grouped/padded", "pipeline/model"}
    printed = capsys.readouterr().out
    for title in ("1. train step", "2. padding", "3. model FLOP utilisation", "4. input pipeline",
                  "5. synthetic generation", "6. peak memory", "7. inference", "targets"):
        assert title in printed, title
    assert out.with_suffix(".txt").read_text().startswith("behrt-benchmark-speed on")


def test_flops_match_a_hand_count():
    config = tiny_config(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16, vocab_size=10)
    # per layer: q, k, v, output 4 * 8 * 8 = 256, feed-forward 2 * 8 * 16 = 256 -> 512, two layers 1024;
    # MLM transform 8 * 8 = 64, decoder 8 * 10 = 80 -> N = 1168 weights in matmuls.
    assert bench.matmul_parameters(8, 2, 16, 10) == 1168
    # per token: 6 * 1168 = 7008, attention 12 * 2 layers * 8 * T=5 = 960 -> 7968; batch 3 x 5 tokens.
    assert bench.train_flops(config, batch_size=3, seq_len=5) == 7968 * 15


def test_flops_match_torch_flop_counter():
    """Forward + backward of BehrtForMaskedLM, counted by torch, equals the formula (eager attention,
    so attention is plain matmuls the counter sees)."""
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config._attn_implementation = "eager"
    model = BehrtForMaskedLM(config)
    ids = torch.randint(5, config.vocab_size, (3, 11))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    assert counter.get_total_flops() == bench.train_flops(config, 3, 11)


def test_gpu_options_parse_and_cuda_is_guarded(monkeypatch):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            bench.main(["--device", "cuda", "--bf16", "--compile"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    (args,) = bench.parse_args((bench.SpeedArguments,), ["--device", "cuda", "--bf16", "--compile", "--quick",
                                                         "--batch_size", "5"])
    assert (args.device, args.bf16, args.compile) == ("cuda", True, True)
    assert args.batch_size == 5 and args.repeats == bench.QUICK["repeats"]  # --quick leaves explicit values
    with pytest.raises(ValueError, match="cpu or cuda"):
        bench.SpeedArguments(device="tpu")
    cpu = torch.device("cpu")
    bench.synchronize(cpu)  # no CUDA call on CPU
    assert bench.autocast(bench.SpeedArguments(), cpu).fast_dtype is not None  # disabled without --bf16


def test_batching_helpers():
    lengths = np.array([5, 1, 3, 2, 8, 8, 4])
    batches = bench.grouped_batches(lengths, batch_size=3, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert bench.padding_fraction([[0, 2], [4, 5]], lengths) == pytest.approx(1 - (5 + 3 + 16) / (10 + 16))
    assert bench.padding_fraction([[0, 2]], lengths, pad_to=10) == pytest.approx(1 - 8 / 20)
    assert bench.round_ratio([10, 10], [1.0, 2.0], [10, 10], [2.0, 2.0]) == pytest.approx(1.5)
    assert bench.per_round([1, 2], 5) == [1, 2, 1, 2, 1]


def test_warmup_steps_on_every_batch_before_timing():
    """A first step on a new batch shape pays one-off costs: every timed batch has been seen once."""
    config = tiny_config()
    batches = [{"input_ids": ids, "labels": ids} for ids in (torch.randint(5, config.vocab_size, (2, n)) for n in (4, 6, 9))]
    runner = bench.TrainSteps(BehrtForMaskedLM(config), batches, bench.SpeedArguments(), torch.device("cpu"))
    seen = []
    runner.step = lambda batch: seen.append(batch["input_ids"].shape[1])
    runner.warmup(1)
    assert seen == [4, 6, 9]
    seen.clear()
    runner.warmup(4)
    assert seen == [4, 6, 9, 4]
