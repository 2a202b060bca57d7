"""Fine-tuning: no leakage past the index visit, every mode, class imbalance, LoRA save/reload/merge."""

import json

import datasets
import numpy as np
import pytest
import torch
from peft import AutoPeftModelForSequenceClassification, PeftModel

from behrt_hf import BehrtConfig, BehrtForMaskedLM, BehrtForPreTraining, BehrtForSequenceClassification, BehrtTokenizerFast, patient_features
from behrt_hf.data_collator import DataCollatorForBehrt
from behrt_hf.tasks import Task, shift_classifier_bias
from behrt_hf.training import finetune
from behrt_hf.training.trainer import BehrtTrainer
from tests.helpers import save_task_cohort

TINY = "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=37"
COMMON = ["--task", "demo", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--max_length", "64",
          "--per_device_train_batch_size", "16", "--seed", "3", "--save_strategy", "no"]


@pytest.fixture(scope="module")
def task_cohort(tmp_path_factory):
    return save_task_cohort(tmp_path_factory.mktemp("task") / "data")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, task_cohort):
    """A tiny 'pretrained' BEHRT (random weights) with its tokenizer, saved like behrt-pretrain saves it."""
    _, splits = task_cohort
    return save_tiny_base(tmp_path_factory.mktemp("pretrained"), splits, BehrtForPreTraining)


def save_tiny_base(path, splits, model_class):
    """A tiny random `model_class` and the tokenizer of `splits["train"]`, saved in `path`."""
    tokenizer = BehrtTokenizerFast.build_vocab(splits["train"], model_max_length=64)
    config = BehrtConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64)
    torch.manual_seed(0)
    model_class(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_a_split_without_positives_fails_before_training(task_cohort, tmp_path):
    """A test split that cannot be scored is reported up front, naming the task and the split."""
    path, splits = task_cohort
    negatives = [dict(p, label_demo=0) for p in splits["test"] if p["label_demo"] >= 0]
    features = patient_features(tasks=["demo"], with_oracle=True)
    data = datasets.load_from_disk(path)
    data["test"] = datasets.Dataset.from_list(negatives, features=features)
    broken = tmp_path / "data"
    data.save_to_disk(str(broken))
    with pytest.raises(ValueError, match=f"'demo': the test split has {len(negatives)} eligible patients and 0 positive"):
        run(str(broken), tmp_path / "run", "--mode", "full", "--config_overrides", TINY, "--max_steps", "2")
    assert not (tmp_path / "run" / "summary.json").exists()


def run(path, out, *extra):
    return finetune.main(["--dataset_path", path, "--output_dir", str(out), "--do_train", *COMMON, *extra])


def test_full_finetuning_from_scratch_reports_against_the_oracle(task_cohort, tmp_path):
    path, _ = task_cohort
    result = run(path, tmp_path, "--mode", "full", "--config_overrides", TINY, "--max_steps", "4")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mode"] == "full" and summary["model"]["trainable_percent"] == 100
    assert list(result["report"]) == ["validation", "test"]  # in this order on every run, not a set's
    for split in ("validation", "test"):
        report = result["report"][split]
        assert {"auroc", "auprc", "brier"} <= set(report["model"]) and "oracle" in report
        assert report["gap_to_oracle_auroc"] == pytest.approx(report["oracle"]["auroc"] - report["model"]["auroc"])
    train = [p for p in datasets.load_from_disk(path)["train"] if p["label_demo"] >= 0]
    positives = sum(p["label_demo"] for p in train)
    assert summary["data"]["pos_weight"] == pytest.approx((len(train) - positives) / positives)
    for name in ("roc.png", "pr.png", "calibration.png", "predictions_test.json", "model.safetensors"):
        assert (tmp_path / name).exists(), name
    model = BehrtForSequenceClassification.from_pretrained(tmp_path)
    assert model.config.pos_weight == [pytest.approx(summary["data"]["pos_weight"])]

    # evaluated again without --do_train (mode lora by default): as it is, no adapter wrapped around it
    again = finetune.main(["--dataset_path", path, "--output_dir", str(tmp_path / "eval"), *COMMON,
                           "--model_name_or_path", str(tmp_path)])
    assert again["trainable_parameters"] == 0
    assert again["report"]["test"]["model"] == pytest.approx(result["report"]["test"]["model"], abs=1e-6)


def test_saved_model_is_recalibrated_to_the_real_prevalence(task_cohort, tmp_path):
    """pos_weight w multiplies the learned odds by w: the saved classifier bias is the trained one - log(w)."""
    from safetensors.torch import load_file

    path, _ = task_cohort
    run(path, tmp_path, "--mode", "full", "--config_overrides", TINY, "--max_steps", "2",
        "--save_strategy", "steps", "--save_steps", "2")
    summary = json.loads((tmp_path / "summary.json").read_text())
    shift = summary["data"]["calibration_logit_shift"]
    assert shift == pytest.approx(-np.log(summary["data"]["pos_weight"]))
    trained = load_file(str(tmp_path / "checkpoint-2" / "model.safetensors"))["classifier.bias"]
    saved = load_file(str(tmp_path / "model.safetensors"))["classifier.bias"]
    torch.testing.assert_close(saved, trained + shift)


def test_config_overrides_over_a_pretrained_model_change_only_the_head(pretrained):
    """--config_overrides reaches a pretrained model (it was silently ignored): the pooling and dropouts
    change; a field its weights fix is refused by name, not loaded into mismatched weights."""
    tokenizer = BehrtTokenizerFast.from_pretrained(pretrained)
    model = finetune.build_model(finetune.FinetuneModelArguments(
        model_name_or_path=pretrained, mode="full", config_overrides="pooling=last,classifier_dropout=0.3"),
        tokenizer, pos_weight=None)
    assert (model.config.pooling, model.config.classifier_dropout) == ("last", 0.3)
    assert model.behrt.pooler.pooling == "last"
    with pytest.raises(ValueError, match="sets hidden_size, which .* trained weights fix"):
        finetune.build_model(finetune.FinetuneModelArguments(
            model_name_or_path=pretrained, mode="full", config_overrides="hidden_size=64,pooling=mean"),
            tokenizer, pos_weight=None)


def test_recalibration_shifts_the_lora_classifier_copy(pretrained):
    """Under LoRA the trained classifier is PEFT's copy (saved with the adapter), not the frozen original."""
    tokenizer = BehrtTokenizerFast.from_pretrained(pretrained)
    model = finetune.build_model(finetune.FinetuneModelArguments(model_name_or_path=pretrained, mode="lora"),
                                 tokenizer, pos_weight=3.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("classifier.original_module.bias")
              or n.endswith("classifier.modules_to_save.default.bias")}
    assert len(before) == 2
    shift_classifier_bias(model, -1.5)
    for name, parameter in model.named_parameters():
        if name in before:
            expected = before[name] - 1.5 if "modules_to_save" in name else before[name]
            torch.testing.assert_close(parameter.detach(), expected)
    frozen = BehrtForSequenceClassification.from_pretrained(pretrained, num_labels=1)
    frozen.classifier.requires_grad_(False)
    with pytest.raises(ValueError, match="one trainable classifier bias"):
        shift_classifier_bias(frozen, -1.5)


def test_sampler_replaces_pos_weight(task_cohort, tmp_path):
    path, _ = task_cohort
    run(path, tmp_path, "--mode", "full", "--config_overrides", TINY, "--max_steps", "2", "--class_imbalance", "sampler")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["data"]["pos_weight"] is None
    assert summary["data"]["calibration_logit_shift"] < 0  # 50/50 batches inflate the odds as pos_weight does
    assert BehrtForSequenceClassification.from_pretrained(tmp_path).config.pos_weight is None


def test_probe_trains_only_the_head(task_cohort, pretrained, tmp_path):
    path, _ = task_cohort
    run(path, tmp_path, "--mode", "probe", "--model_name_or_path", pretrained, "--max_steps", "3",
        "--learning_rate", "1e-2")
    before = BehrtForPreTraining.from_pretrained(pretrained)
    after = BehrtForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(after.behrt.encoder.layer[0].attention.self.query.weight,
                               before.behrt.encoder.layer[0].attention.self.query.weight, rtol=0, atol=0)
    assert not torch.equal(after.behrt.pooler.dense.weight, before.behrt.pooler.dense.weight)


def test_two_stage_unfreezes_the_encoder(task_cohort, pretrained, tmp_path):
    path, _ = task_cohort
    run(path, tmp_path, "--mode", "two_stage", "--model_name_or_path", pretrained, "--max_steps", "3",
        "--head_epochs", "1", "--learning_rate", "1e-2")
    assert (tmp_path / "stage1_head" / "done").exists()
    before = BehrtForPreTraining.from_pretrained(pretrained)
    after = BehrtForSequenceClassification.from_pretrained(tmp_path)
    assert not torch.equal(after.behrt.encoder.layer[0].attention.self.query.weight,
                           before.behrt.encoder.layer[0].attention.self.query.weight)
    assert json.loads((tmp_path / "summary.json").read_text())["model"]["trainable_percent"] == 100


def test_lora_adapter_is_small_and_reloads_identically(task_cohort, pretrained, tmp_path):
    path, _ = task_cohort
    result = run(path, tmp_path, "--mode", "lora", "--model_name_or_path", pretrained, "--max_steps", "4",
                 "--learning_rate", "1e-2")
    assert result["trainable_parameters"] < result["total_parameters"]
    adapter_config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == pretrained
    assert set(adapter_config["target_modules"]) == {"query", "key", "value", "dense"}
    assert not (tmp_path / "model.safetensors").exists()
    assert (tmp_path / "adapter_model.safetensors").stat().st_size < 2_000_000

    tokenizer = BehrtTokenizerFast.from_pretrained(tmp_path)
    task = Task("demo")
    test = task.encode(task.eligible(datasets.load_from_disk(path)["test"]), tokenizer, max_length=64)
    batch = DataCollatorForBehrt(tokenizer.pad_token_id)([test[i] for i in range(8)])
    batch.pop("labels")
    saved = json.loads((tmp_path / "predictions_test.json").read_text())["probability"][:8]

    def probabilities(model):
        with torch.no_grad():
            return torch.sigmoid(model.eval()(**batch).logits).reshape(-1)

    base = BehrtForSequenceClassification.from_pretrained(pretrained, num_labels=1)
    peft_model = PeftModel.from_pretrained(base, tmp_path)
    reloaded = probabilities(peft_model)
    torch.testing.assert_close(reloaded, torch.tensor(saved, dtype=reloaded.dtype), atol=1e-5, rtol=1e-5)
    auto = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path, num_labels=1)
    torch.testing.assert_close(probabilities(auto), reloaded)
    merged = peft_model.merge_and_unload()
    assert type(merged) is BehrtForSequenceClassification
    torch.testing.assert_close(probabilities(merged), reloaded, atol=1e-5, rtol=1e-5)


def test_lora_on_a_masked_lm_base_saves_its_new_pooler(task_cohort, tmp_path):
    """A masked-LM checkpoint has no pooler: the fresh one is trained in full and saved with the adapter,
    so the adapter reproduces its predictions whatever the random state at reload."""
    path, splits = task_cohort
    base = save_tiny_base(tmp_path / "mlm", splits, BehrtForMaskedLM)
    tokenizer = BehrtTokenizerFast.from_pretrained(base)
    out = tmp_path / "lora"
    run(path, out, "--mode", "lora", "--model_name_or_path", base, "--max_steps", "4", "--learning_rate", "1e-2")
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert "pooler" in adapter_config["modules_to_save"]

    task = Task("demo")
    test = task.encode(task.eligible(datasets.load_from_disk(path)["test"]), tokenizer, max_length=64)
    batch = DataCollatorForBehrt(tokenizer.pad_token_id)([test[i] for i in range(8)])
    batch.pop("labels")
    saved = torch.tensor(json.loads((out / "predictions_test.json").read_text())["probability"][:8])
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = AutoPeftModelForSequenceClassification.from_pretrained(out, num_labels=1).eval()
        with torch.no_grad():
            reloaded = torch.sigmoid(model(**batch).logits).reshape(-1)
        torch.testing.assert_close(reloaded, saved.to(reloaded.dtype), atol=1e-5, rtol=1e-5)


def test_a_saved_adapter_is_evaluated_and_trained_further_as_it_is(task_cohort, pretrained, tmp_path):
    """--model_name_or_path <adapter>: its own LoRA weights and classifier, not a fresh adapter on top."""
    path, _ = task_cohort
    trained = run(path, tmp_path / "a", "--mode", "lora", "--model_name_or_path", pretrained, "--max_steps", "4",
                  "--learning_rate", "1e-2")
    evaluated = finetune.main(["--dataset_path", path, "--output_dir", str(tmp_path / "eval"), *COMMON,
                               "--model_name_or_path", str(tmp_path / "a")])
    assert evaluated["trainable_parameters"] == 0
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["mode"] == "evaluate"
    for split in ("validation", "test"):
        assert evaluated["report"][split]["model"] == pytest.approx(trained["report"][split]["model"], abs=1e-6)
    first = json.loads((tmp_path / "a" / "predictions_test.json").read_text())["probability"]
    again = json.loads((tmp_path / "eval" / "predictions_test.json").read_text())["probability"]
    np.testing.assert_allclose(again, first, atol=1e-6)

    further = run(path, tmp_path / "b", "--model_name_or_path", str(tmp_path / "a"), "--max_steps", "2",
                  "--lora_r", "2")  # the adapter's rank (8) wins
    assert further["trainable_parameters"] == trained["trainable_parameters"]
    assert json.loads((tmp_path / "b" / "adapter_config.json").read_text())["base_model_name_or_path"] == pretrained
    with pytest.raises(ValueError, match="is a LoRA adapter: it continues with --mode lora"):
        run(path, tmp_path / "c", "--model_name_or_path", str(tmp_path / "a"), "--mode", "probe", "--max_steps", "1")


@pytest.mark.parametrize("preset", ["small", "medium"])
def test_default_lora_trains_under_ten_percent_of_the_presets(preset, tmp_path):
    """The issue's target, on the real preset sizes with a realistic vocabulary (~600 codes)."""
    codes = [f"ICD10CM//C{i:03d}" for i in range(600)]
    tokenizer = BehrtTokenizerFast.build_vocab([{"patient_id": "0", "visits": [{"age": 50.0, "codes": codes}]}])
    BehrtForPreTraining(BehrtConfig.from_preset(preset, vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    model = finetune.build_model(finetune.FinetuneModelArguments(model_name_or_path=str(tmp_path), mode="lora"),
                                 tokenizer, pos_weight=3.0)
    trainable, total = model.num_parameters(only_trainable=True), model.num_parameters()
    # transformers' counter, reached through PEFT's wrappers, counts the LoRA weights and both classifier copies
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == sum(p.numel() for p in model.parameters())
    assert trainable / total < 0.10, (trainable, total)
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size < 2_000_000


def test_early_stopping_ends_on_the_best_checkpoint_once_the_loss_stops_falling(task_cohort, tmp_path):
    """At a learning rate too small to move the loss, no evaluation after the first one improves on it:
    with patience 2 the run stops at the third evaluation, not at max_steps."""
    path, _ = task_cohort
    common = [c for c in COMMON if c not in ("--save_strategy", "no")]
    result = finetune.main(["--dataset_path", path, "--output_dir", str(tmp_path), "--do_train", *common,
                            "--mode", "full", "--config_overrides", TINY, "--max_steps", "40", "--learning_rate",
                            "1e-12", "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps",
                            "--save_steps", "2", "--load_best_model_at_end", "true", "--early_stopping_patience", "2",
                            "--metric_for_best_model", "loss", "--greater_is_better", "false"])
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["best_global_step"] == 2
    assert result["report"]["test"]["model"]["auroc"] is not None


def test_early_stopping_without_evaluations_is_refused(task_cohort, tmp_path):
    path, _ = task_cohort
    with pytest.raises(ValueError, match="--early_stopping_patience needs evaluations"):
        run(path, tmp_path, "--mode", "full", "--config_overrides", TINY, "--early_stopping_patience", "3")


def test_scratch_model_numbers_ages_as_its_config_overrides_say(task_cohort, tmp_path):
    """age_unit from --config_overrides reaches the from-scratch tokenizer (a recency-bucket model in months)."""
    path, _ = task_cohort
    run(path, tmp_path, "--mode", "full", "--max_steps", "2",
        "--config_overrides", TINY + ",age_unit=month,recency_encoding=buckets")
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["age_unit"], config["recency_encoding"]) == ("month", "buckets")
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["age_unit"] == "month"


@pytest.mark.parametrize("bad,match", [(["--mode", "adapter"], "--mode must be one of"),
                                       (["--label_fraction", "0"], "--label_fraction"),
                                       (["--class_imbalance", "both"], "--class_imbalance")])
def test_bad_arguments(task_cohort, tmp_path, bad, match):
    path, _ = task_cohort
    with pytest.raises(ValueError, match=match):
        run(path, tmp_path, *bad)


def test_prediction_keeps_dataset_order_under_length_grouping(task_cohort, tmp_path):
    """transformers 5 length-groups evaluation too; BehrtTrainer must keep predict() in dataset order."""
    from transformers import TrainingArguments

    path, splits = task_cohort
    tokenizer = BehrtTokenizerFast.build_vocab(splits["train"], model_max_length=64)
    task = Task("demo")
    test = task.encode(task.eligible(datasets.load_from_disk(path)["test"]), tokenizer, max_length=64)
    model = BehrtForSequenceClassification(BehrtConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=4, intermediate_size=37,
                                                       max_position_embeddings=64, num_labels=1)).eval()
    training_args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                      remove_unused_columns=False, train_sampling_strategy="group_by_length",
                                      per_device_eval_batch_size=4)
    collate = DataCollatorForBehrt(tokenizer.pad_token_id)
    predicted = BehrtTrainer(model=model, args=training_args, data_collator=collate).predict(test).predictions
    with torch.no_grad():
        direct = torch.cat([model(**{k: v for k, v in collate([test[j] for j in range(i, min(i + 4, len(test)))]).items()
                                     if k != "labels"}).logits for i in range(0, len(test), 4)])
    np.testing.assert_allclose(predicted.reshape(-1), direct.reshape(-1).numpy(), rtol=1e-5, atol=1e-6)


def test_trainer_sampler_hooks_are_the_ones_transformers_calls(tmp_path):
    """BehrtTrainer overrides Trainer's private sampler hooks (transformers has no public one; see its
    docstring). This fails when a transformers release renames them, changes their signature, or
    stops building the train / eval / test loaders through them."""
    import inspect

    from transformers import Trainer, TrainingArguments

    from tests.helpers import tiny_config

    assert list(inspect.signature(Trainer._get_train_sampler).parameters) == ["self", "train_dataset"]
    assert list(inspect.signature(Trainer._get_eval_sampler).parameters) == ["self", "eval_dataset"]
    n = 64
    data = datasets.Dataset.from_dict({"idx": list(range(n)), "input_ids": [[1] * (1 + i % 7) for i in range(n)],
                                       "length": [1 + i % 7 for i in range(n)]})
    calls = []

    class Spy(BehrtTrainer):
        def _get_train_sampler(self, train_dataset=None):
            calls.append("train")
            return super()._get_train_sampler(train_dataset)

        def _get_eval_sampler(self, eval_dataset):
            calls.append("eval")
            return super()._get_eval_sampler(eval_dataset)

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", remove_unused_columns=False,
                             train_sampling_strategy="group_by_length", per_device_train_batch_size=1,
                             per_device_eval_batch_size=1)
    backwards = list(range(n))[::-1]
    trainer = Spy(train_sampler=backwards, model=BehrtForSequenceClassification(tiny_config(num_labels=1)),
                  args=args, train_dataset=data, eval_dataset=data, data_collator=lambda rows: [r["idx"] for r in rows])
    assert [batch[0] for batch in trainer.get_train_dataloader()] == backwards  # the sampler given
    assert [batch[0] for batch in trainer.get_eval_dataloader()] == list(range(n))  # in order, not length-grouped
    assert [batch[0] for batch in trainer.get_test_dataloader(data)] == list(range(n))
    assert calls == ["train", "eval", "eval"]


@pytest.mark.parametrize(("mode", "pretrained_start", "expected"), [("lora", True, 2e-3), ("full", True, 2e-4), ("full", False, 2e-3)])
def test_a_command_without_training_flags_fine_tunes_with_the_recipe(task_cohort, pretrained, tmp_path, mode,
                                                                      pretrained_start, expected):
    """transformers' defaults (batch 8, learning rate 5e-5) leave a LoRA adapter where it started:
    `behrt-finetune` defaults to the recipe's batch and its learning rate for the mode instead."""
    from transformers import TrainerCallback

    seen = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen.update(learning_rate=args.learning_rate, batch=args.per_device_train_batch_size)

    path, _ = task_cohort
    start = ["--model_name_or_path", pretrained] if pretrained_start else ["--config_overrides", TINY]
    finetune.main(["--dataset_path", path, "--output_dir", str(tmp_path), "--do_train", "--task", "demo", "--use_cpu",
                   "--report_to", "none", "--max_length", "64", "--save_strategy", "no", "--max_steps", "1",
                   "--mode", mode, *start], callbacks=[Capture()])
    assert seen == {"learning_rate": expected, "batch": 32}
    assert finetune.recipe_learning_rate(finetune.FinetuneModelArguments(mode="probe", model_name_or_path="x")) == 2e-3
