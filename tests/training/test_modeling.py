import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from utils import tiny_model, tiny_tokenizer

from hf_taskgroup.data.collator import MultiTaskDataCollator
from hf_taskgroup.training.features import compute_encoder_features
from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel, apply_lora


def _batch(tokenized, task, task_idx, n=4):
    tok = tiny_tokenizer()
    rows = [tokenized[task]["train"][i] for i in range(n)]
    for r in rows:
        r["task_ids"] = task_idx
    return MultiTaskDataCollator(tok)(rows)


@pytest.mark.parametrize(
    "task,expected_loss",
    [
        ("sent", lambda logits, y: F.cross_entropy(logits, y)),
        ("sim", lambda logits, y: F.mse_loss(logits, y)),
        ("hall", lambda logits, y: F.binary_cross_entropy_with_logits(logits, y)),
        ("ner", lambda logits, y: F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)),
    ],
)
def test_each_head_type_loss_and_logit_shape(suite, tokenized, task, expected_loss):
    model = tiny_model(suite).eval()
    idx = model.task_index(task)
    batch = _batch(tokenized, task, idx)
    out = model(**batch)
    info = suite.task_infos()[task]
    if info["type"] == "regression":
        assert out.logits.shape == (4,)
    elif info["type"] == "token_classification":
        assert out.logits.shape == (*batch["input_ids"].shape, info["num_labels"])
    else:
        assert out.logits.shape == (4, info["num_labels"])
    torch.testing.assert_close(out.loss, expected_loss(out.logits, batch["labels"]))


def test_mixed_task_batch_rejected(suite, tokenized):
    model = tiny_model(suite)
    batch = _batch(tokenized, "sent", 0)
    batch["task_ids"][1] = 1
    with pytest.raises(ValueError, match="one task"):
        model(**batch)


def test_mean_pooling_ignores_padding(suite):
    model = tiny_model(suite, pooling="mean").eval()
    ids = torch.tensor([[2, 5, 6, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    pooled = model.encode(ids, mask)
    hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(pooled, hidden[:, :4].mean(dim=1))


def test_trunk_is_shared_between_heads(suite):
    model = tiny_model(suite, trunk=(8,))
    assert model.trunk is not None
    assert all(h.out_proj.in_features == 8 for h in model.heads.values())


def test_encoder_has_no_pooler(suite):
    model = tiny_model(suite)
    assert not any("pooler" in n for n, _ in model.named_parameters())


def test_frozen_features_give_same_logits_as_running_the_encoder(suite, tokenized):
    model = tiny_model(suite, trunk=(8,)).eval()
    tok = tiny_tokenizer()
    for task in ("sent", "ner"):
        idx = model.task_index(task)
        ds = tokenized[task]["validation"]
        token_level = task == "ner"
        feats = compute_encoder_features(model, ds, token_level=token_level, batch_size=3, tokenizer=tok)
        rows = [ds[i] for i in range(5)]
        for r in rows:
            r["task_ids"] = idx
        batch = MultiTaskDataCollator(tok)(rows)
        direct = model(**batch).logits
        frows = [{"features": feats[i], "labels": rows[i]["labels"], "task_ids": idx} for i in range(5)]
        fbatch = MultiTaskDataCollator()(frows)
        cached = model(**fbatch).logits
        if token_level:  # compare the real (unpadded) positions
            mask = batch["attention_mask"].bool()
            torch.testing.assert_close(cached[mask], direct[mask], rtol=1e-4, atol=1e-5)
        else:
            torch.testing.assert_close(cached, direct, rtol=1e-4, atol=1e-5)


def test_lora_keeps_heads_trainable_and_freezes_encoder_base(suite):
    model = tiny_model(suite, trunk=(8,))
    peft_model = apply_lora(model, r=2, alpha=4, target_modules=["query", "value"])
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    for task in suite.task_names:
        assert any(f"heads.{task}" in n and "modules_to_save" in n for n in trainable), task
    assert any("trunk" in n and "modules_to_save" in n for n in trainable)
    base_encoder = [n for n, p in peft_model.named_parameters() if ".encoder." in n and "lora_" not in n]
    assert base_encoder and not any(n in trainable for n in base_encoder)


def test_save_and_reload_with_automodel_in_a_fresh_process(tmp_path, suite, tokenized):
    model = tiny_model(suite, trunk=(8,)).eval()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert not list((tmp_path / "m").glob("*.bin"))
    batch = _batch(tokenized, "hall", model.task_index("hall"))
    torch.save({k: v for k, v in batch.items()}, tmp_path / "batch.pt")
    expected = model(**batch).logits
    torch.save(expected, tmp_path / "expected.pt")
    code = textwrap.dedent(
        f"""
        import torch, hf_taskgroup
        from transformers import AutoModel
        m = AutoModel.from_pretrained({str(tmp_path / 'm')!r}).eval()
        assert type(m).__name__ == "MultiTaskModel", type(m)
        assert m.config.task_names == {suite.task_names!r}
        batch = torch.load({str(tmp_path / 'batch.pt')!r})
        torch.testing.assert_close(m(**batch).logits, torch.load({str(tmp_path / 'expected.pt')!r}))
        print("OK")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OK" in res.stdout


def test_config_rejects_bad_values():
    from utils import tiny_bert_config

    with pytest.raises(ValueError, match="pooling"):
        MultiTaskConfig(encoder=tiny_bert_config(), tasks={"a": {"type": "regression", "num_labels": 1}}, pooling="max")
    with pytest.raises(ValueError, match="unknown type"):
        MultiTaskConfig(encoder=tiny_bert_config(), tasks={"a": {"type": "ranking", "num_labels": 1}})
    with pytest.raises(ValueError, match="at least one task"):
        MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config(), tasks={}))
