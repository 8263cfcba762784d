"""The pipeline's publishing rules (issue 16): the frozen encoder stored once per run, pushes that never overwrite
without ``overwrite``, a changed ``publish_method`` that trains what is missing, cards with the settings used."""

from __future__ import annotations

import json
import re

import pytest
from huggingface_hub import DatasetCard, ModelCard
from utils import tiny_bert_config, tiny_suite, tiny_tokenizer

from hf_taskgroup.pipeline import Pipeline, PipelineConfig
from hf_taskgroup.publishing.models import ENCODER_SHARD
from hf_taskgroup.training.modeling import MultiTaskConfig, MultiTaskModel


def _factory(infos, seed):
    import torch

    torch.manual_seed(seed)
    config = MultiTaskConfig(encoder=tiny_bert_config(), tasks=dict(infos), pooling="mean", trunk_hidden_sizes=[8],
                             classifier_dropout=0.0, trunk_dropout=0.0)
    return MultiTaskModel(config)


def _pipeline(tmp_path, **kw):
    suite = tiny_suite(("classification", "regression", "multilabel"))
    suite["sent"].license, suite["sim"].license, suite["hall"].license = "mit", "mit", "mit"
    values = dict(output_dir=str(tmp_path / "run"), methods=["all_in_one", "single_task"], num_train_epochs=1, batch_size=8,
                  trunk_hidden_sizes=[8], max_length=32, pvi_null="analytic", pvi_num_train_epochs=1,
                  recommend=False)  # the publishing rules with the first method published (all_in_one)
    values.update(kw)
    return Pipeline(PipelineConfig(**values), suite=suite, tokenizer=tiny_tokenizer(), model_factory=_factory,
                    progress=False)


@pytest.mark.hub
@pytest.mark.slow
def test_pipeline_shares_the_encoder_refuses_overwrites_and_trains_a_new_publish_method(tmp_path, local_hub,
                                                                                         hub_repo_id):
    out = tmp_path / "run"
    result = _pipeline(tmp_path, push_to_hub=True, hub_prefix=hub_repo_id).run()
    assert set(result.published) == {"pvi dataset", *result.model_dirs}

    # the run's config records the settings the trainings resolved (not None defaults)
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["num_train_epochs"] == 1.0 and resolved["learning_rate"] == 3e-3

    # 5. frozen: one encoder file on disk for every saved model (all_in_one published: one group)
    shards = [p / ENCODER_SHARD for p in result.model_dirs.values()]
    shards += list((out / "runs").glob(f"*/model/{ENCODER_SHARD}"))
    assert len({s.stat().st_ino for s in shards}) == 1
    assert len(list((out / "runs" / "_shared").iterdir())) == 1

    # 8. the pushed card: licence of the tasks, hyperparameters used
    card = ModelCard.load(f"{hub_repo_id}-group0")
    assert card.data.license == "mit"
    assert re.search(r"\| epochs \| 1(\.0)? \|", card.text) and "| learning_rate | 0.003 |" in card.text
    assert "trust_remote_code=True" in card.text
    # 9. the PVI dataset card
    dcard = DatasetCard.load(f"{hub_repo_id}-pvi", repo_type="dataset").data.to_dict()
    assert dcard["license"] == "mit" and dcard["task_categories"] == ["text-classification"]

    # 6. the same run pushed again needs no --overwrite: the PVI data and the models are on the Hub already,
    # unchanged, so nothing is uploaded (other PVI values are refused: tests/publishing/test_hub.py) ...
    commits = {repo: len(local_hub.commits(repo, kind)) for repo, kind in
               ((f"{hub_repo_id}-pvi", "dataset"), (f"{hub_repo_id}-group0", "model"))}
    again = _pipeline(tmp_path, push_to_hub=True, hub_prefix=hub_repo_id).run()
    assert again.published["pvi dataset"] == result.published["pvi dataset"]
    assert {repo: len(local_hub.commits(repo, kind)) for repo, kind in
            ((f"{hub_repo_id}-pvi", "dataset"), (f"{hub_repo_id}-group0", "model"))} == commits
    # ... and goes through with overwrite
    _pipeline(tmp_path, push_to_hub=True, hub_prefix=hub_repo_id, overwrite=True).run()

    # 7. another publish method on the same run dir trains the models it needs (no FileNotFoundError)
    switched = _pipeline(tmp_path, publish_method="single_task").run()
    assert len(switched.model_dirs) == 3
    for folder in switched.model_dirs.values():
        assert (folder / "config.json").is_file() and (folder / ENCODER_SHARD).is_file()


@pytest.mark.hub
@pytest.mark.slow
def test_two_identical_runs_write_byte_identical_cards_and_a_repush_is_no_change(tmp_path, local_hub, hub_repo_id):
    """With the recommendation on (the default), the same run twice (other folders, other timings) gives the same
    model cards byte for byte, so pushing the second run's models where the first's are is not a change."""
    from hf_taskgroup.publishing.models import check_group_model_push, push_group_model

    first = _pipeline(tmp_path / "a", recommend=True, recommend_seeds=2).run()
    second = _pipeline(tmp_path / "b", recommend=True, recommend_seeds=2).run()
    assert first.groupings["recommended"].cost.seconds != second.groupings["recommended"].cost.seconds  # measured
    assert list(first.model_dirs) == list(second.model_dirs) and first.model_dirs
    for key, folder in first.model_dirs.items():
        card = (folder / "README.md").read_bytes()
        assert card == (second.model_dirs[key] / "README.md").read_bytes(), key
        assert b"recommended" in card and str(tmp_path).encode() not in card
    repo = f"{hub_repo_id}-group0"
    key = next(iter(first.model_dirs))
    push_group_model(first.model_dirs[key], repo)
    uploads, conflicts = check_group_model_push(second.model_dirs[key], repo)  # no overwrite needed: nothing changes
    assert conflicts == [] and "README.md" in uploads
