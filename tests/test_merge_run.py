"""Merging inside a run (merge=average|hma|ondare|onties) and alone, without training (mode=merge)."""
import pytest
import torch
from safetensors.torch import load_file

from alignlab.errors import ConfigError
from alignlab.run import run
from conftest import compose_config

pytestmark = pytest.mark.slow
SMALL = ["experiment=smoke", "trainer.max_steps=10", "eval.n_prompts=16"]


@pytest.fixture(scope="module")
def averaged(tmp_path_factory):
    out = tmp_path_factory.mktemp("merge")
    return run(compose_config(out, [*SMALL, "merge=average", "merge.alpha=0.25", "eval=tax", "eval.tax.n_texts=32",
                                    "eval.tax.n_probe=32"])), out


def test_average_after_training_is_the_convex_combination(averaged):
    results, out = averaged
    pre = load_file(f"{results['pre_dir']}/model.safetensors")
    aligned = load_file(f"{results['policy_dir']}/model.safetensors")
    merged = load_file(f"{results['merged_dir']}/model.safetensors")
    assert merged.keys() == aligned.keys()
    for key in merged:
        torch.testing.assert_close(merged[key], 0.25 * aligned[key] + 0.75 * pre[key])
    m = results["metrics"]
    assert m["merge/alpha"] == 0.25
    for key in ("tax/ppl_ratio", "tax/probe_drop", "tax/probe_accuracy_pre", "eval/reward", "eval/kl"):
        assert key in m and m[key] == m[key], key


def test_merge_stage_alone_learns_hma_ratios_with_mean_alpha(averaged, tmp_path):
    results, _ = averaged
    alone = run(compose_config(tmp_path, ["experiment=smoke", "mode=merge", "merge=hma", "merge.alpha=0.5",
                                          "merge.lr=0.1", "merge.top=32", "merge.n_keep=24", "eval.n_prompts=8",
                                          f"merge.aligned={results['policy_dir']}", f"merge.pre={results['pre_dir']}"]))
    ratios = [alone["metrics"][f"merge/ratio_{k}"] for k in (1, 2, 3)]
    assert sum(ratios) / 3 == pytest.approx(0.5, abs=1e-5)
    assert (tmp_path / "merged" / "model.safetensors").exists() and "eval/reward" in alone["metrics"]


def test_given_hma_ratios_in_merge_mode(averaged, tmp_path):
    results, _ = averaged
    alone = run(compose_config(tmp_path, ["experiment=smoke", "mode=merge", "merge=hma", "merge.alpha=0.5",
                                          "merge.block_ratios=[0.2,0.5,0.8]", "eval.enabled=false",
                                          f"merge.aligned={results['policy_dir']}", f"merge.pre={results['pre_dir']}"]))
    assert [alone["metrics"][f"merge/ratio_{k}"] for k in (1, 2, 3)] == [0.2, 0.5, 0.8]
    pre = load_file(f"{results['pre_dir']}/model.safetensors")
    aligned = load_file(f"{results['policy_dir']}/model.safetensors")
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    key = "gpt_neox.layers.3.mlp.dense_h_to_4h.weight"  # layer 4 of 4: block 3
    torch.testing.assert_close(merged[key], 0.8 * aligned[key] + 0.2 * pre[key])


@pytest.mark.parametrize("bad,match", [("merge.alpha=1.5", "merge.alpha"),
                                       ("merge.block_ratios=[0.5,0.5]", "merge.block_ratios")])
def test_bad_merge_settings_fail_before_training(tmp_path, bad, match):
    kind = "hma" if "block" in bad else "average"
    with pytest.raises(ConfigError, match=match):
        run(compose_config(tmp_path, [*SMALL, f"merge={kind}", bad]))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("kind", ["ondare", "onties"])
def test_online_merging_optimizers_train(tmp_path, kind):
    results = run(compose_config(tmp_path, [*SMALL, f"merge={kind}", "eval.enabled=false", "trainer.max_steps=6"]))
    assert results["metrics"]["train/loss"] == results["metrics"]["train/loss"]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = ckpt["optimizer_states"][0]["state"]
    assert any("tau" in s for s in state.values())  # the task vector lives in the optimizer state for resume


def test_a_policy_merged_with_itself_at_alpha_0_evaluates_as_the_reference(averaged, tmp_path):
    """The identity check of the evaluation: the merged model is merge.pre itself, so the preference accuracy is a
    tie everywhere (1/2), the KL is 0, and both sample sets are the same (same reward)."""
    results, _ = averaged
    alone = run(compose_config(tmp_path, ["experiment=smoke", "mode=merge", "merge=average", "merge.alpha=0",
                                          f"merge.aligned={results['policy_dir']}",
                                          f"merge.pre={results['policy_dir']}", f"eval.pairs={results['stages']['pairs']}"]))
    m = alone["metrics"]
    assert m["eval/pref_accuracy"] == 0.5 and m["eval/kl"] == 0.0 and m["eval/reward"] == m["eval/reward_ref"]
