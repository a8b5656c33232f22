"""alignlab.inspect: per-token signals on hand-made cases, the HTML/PNG renderers, and the CLI on a real run dir."""
from __future__ import annotations

import html
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alignlab.inspect import InspectError, choose_signal, reference_path, resolve_r
from alignlab.losses import adaptive_coefficient, per_token_logratio_and_kl
from alignlab.viz.tokens import SIGNALS, TokenRow, color_scale, fmt, render_html, render_png

REPO = Path(__file__).resolve().parent.parent


def token_logratio_and_kl(pi, ref, targets, chunk_size=256):
    return per_token_logratio_and_kl(pi, ref, targets, chunk_size)


def token_logratio(pi, ref, targets, chunk_size=256):
    return per_token_logratio_and_kl(pi, ref, targets, chunk_size)[0]


def token_kl(pi, ref, chunk_size=256):
    targets = torch.zeros(pi.shape[:-1], dtype=torch.long)
    return per_token_logratio_and_kl(pi, ref, targets, chunk_size)[1]


def token_tvd(a, b):
    return adaptive_coefficient(a, b, r=1.0, eps=0.0)


token_alpha = adaptive_coefficient


# ---- per-token signals -----------------------------------------------------------------------------------------
def test_logratio_and_kl_two_token_vocabulary_by_hand():
    # pi = (1/2, 1/2), ref = (3/4, 1/4) at one position; the response token is 0
    pi = torch.tensor([[0.0, 0.0]])
    ref = torch.tensor([[math.log(3.0), 0.0]])
    logratio, kl = token_logratio_and_kl(pi, ref, torch.tensor([0]))
    assert logratio.item() == pytest.approx(math.log(0.5) - math.log(0.75), abs=1e-6)
    assert kl.item() == pytest.approx(0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5), abs=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 256])
def test_logratio_is_the_difference_of_log_softmax_gathers(chunk_size):
    g = torch.Generator().manual_seed(0)
    pi, ref = torch.randn(2, 5, 11, generator=g) * 3, torch.randn(2, 5, 11, generator=g) * 3
    y = torch.randint(0, 11, (2, 5), generator=g)
    expected = (F.log_softmax(pi, -1).gather(-1, y[..., None]) - F.log_softmax(ref, -1).gather(-1, y[..., None]))
    got = token_logratio(pi, ref, y, chunk_size=chunk_size)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, expected.squeeze(-1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 4, 256])
def test_kl_t_matches_a_direct_float64_computation(chunk_size):
    g = torch.Generator().manual_seed(1)
    pi, ref = torch.randn(3, 4, 17, generator=g) * 4, torch.randn(3, 4, 17, generator=g) * 4
    p_ref = ref.double().softmax(-1)
    expected = (p_ref * (p_ref.log() - pi.double().softmax(-1).log())).sum(-1)
    got = token_kl(pi, ref, chunk_size=chunk_size)
    assert got.dtype == torch.float32 and got.shape == (3, 4)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    assert (got >= -1e-6).all()
    assert token_kl(pi, pi).abs().max() < 1e-6  # KL of a distribution to itself


def test_kl_t_has_no_nan_where_a_probability_underflows():
    pi = torch.tensor([[0.0, -1e4, 0.0]])   # pi(v=1) underflows to 0 in float32
    ref = torch.tensor([[0.0, 0.0, -1e4]])  # ref(v=2) underflows
    logratio, kl = token_logratio_and_kl(pi, ref, torch.tensor([0]))
    assert torch.isfinite(logratio).all() and torch.isfinite(kl).all()
    assert kl.item() > 100  # ref puts 1/2 on a token pi gives ~e^-1e4: a huge, finite KL


def test_per_token_values_sum_to_the_training_losses():
    """Summed over a response, the per-token values equal alignlab.losses.token_logps_and_kl's logratio and
    SeqKL (the quantities DPO/TDPO train on)."""
    from alignlab.losses import token_logps_and_kl

    g = torch.Generator().manual_seed(2)
    pi, ref = torch.randn(2, 6, 13, generator=g), torch.randn(2, 6, 13, generator=g)
    labels = torch.randint(0, 13, (2, 6), generator=g)
    labels[0, :2] = -100  # prompt positions
    labels[1, 4:] = -100  # padding
    seq_pi, seq_ref, seq_kl = token_logps_and_kl(pi, ref, labels)
    mask = labels != -100
    logratio, kl = token_logratio_and_kl(pi, ref, labels.clamp(min=0))
    torch.testing.assert_close((logratio * mask).sum(1), seq_pi - seq_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close((kl * mask).sum(1), seq_kl, atol=1e-5, rtol=0)


def test_bf16_logits_give_float32_values():
    g = torch.Generator().manual_seed(3)
    pi, ref = torch.randn(4, 9, generator=g).bfloat16(), torch.randn(4, 9, generator=g).bfloat16()
    logratio, kl = token_logratio_and_kl(pi, ref, torch.zeros(4, dtype=torch.long))
    assert logratio.dtype == kl.dtype == torch.float32


def test_a_t_equals_r_tvd_plus_eps():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    q = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    dpo, rev = p.clamp(min=1e-30).log(), q.clamp(min=1e-30).log()
    tvd = 0.5 * (p - q).abs().sum(-1)  # [0.6, 0, 0]
    torch.testing.assert_close(token_tvd(dpo, rev), tvd, atol=1e-6, rtol=0)
    a = token_alpha(dpo, rev, r=20.0, eps=1e-3)
    torch.testing.assert_close(a, 20.0 * tvd + 1e-3, atol=1e-5, rtol=0)
    assert a[1].item() == pytest.approx(1e-3)  # identical teachers: a_t = eps


@pytest.mark.parametrize("chunk_size", [1, 5, 256])
def test_a_t_is_the_coefficient_the_training_loss_uses(chunk_size):
    from alignlab.losses.aligndistil import _teacher

    g = torch.Generator().manual_seed(4)
    dpo, rev = torch.randn(3, 7, 19, generator=g) * 3, torch.randn(3, 7, 19, generator=g) * 3
    _, _, a_train = _teacher(dpo, rev, "adaptive", 0.05, 0.1, 15.0, 2e-3)
    a = token_alpha(dpo, rev, r=15.0, eps=2e-3, chunk_size=chunk_size)
    torch.testing.assert_close(a, a_train, atol=1e-5, rtol=1e-6)
    assert (a >= 2e-3 - 1e-7).all() and (a <= 15.0 + 2e-3 + 1e-5).all()


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="same shape"):
        token_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="targets"):
        token_logratio(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


# ---- run dir resolution and signal choice ----------------------------------------------------------------------
TARGETS = {"dpo": "alignlab.methods.dpo.DPO", "tdpo1": "alignlab.methods.tdpo.TDPO",
           "tdpo2": "alignlab.methods.tdpo.TDPO", "aligndistil": "alignlab.methods.aligndistil.AlignDistil"}


def _results(method: str, **extra) -> dict:
    return {"status": "ok", "config": {"method": {"name": method, "_target_": TARGETS[method]}}, "stages": {},
            **extra}


def test_choose_signal_by_method():
    teachers = {"dpo_model": "/x/dpo", "reverse_model": "/x/rev"}
    assert choose_signal(_results("dpo")) == "logratio"
    assert choose_signal(_results("tdpo1")) == choose_signal(_results("tdpo2")) == "kl"
    assert choose_signal(_results("aligndistil", stages=teachers)) == "alpha"
    assert choose_signal(_results("aligndistil", stages={"dpo_model": "/x/dpo"})) == "logratio"  # dpo_ref teacher
    assert choose_signal(_results("tdpo2"), "logratio") == "logratio"
    with pytest.raises(InspectError, match="dpo_ref"):
        choose_signal(_results("aligndistil", stages={"dpo_model": "/x/dpo"}), "alpha")
    with pytest.raises(InspectError, match="stages.dpo_model"):
        choose_signal(_results("dpo"), "alpha")


def test_resolve_r_follows_the_method_default():
    assert resolve_r({"r": 12}) == 12.0
    assert resolve_r({"r": None, "mode": "off_policy"}) == 20.0
    assert resolve_r({"r": None, "mode": "on_policy"}) == 30.0


def test_reference_path_order(tmp_path):
    pre, sft = tmp_path / "pre", tmp_path / "cache" / "sft-abc"
    pre.mkdir()
    sft.mkdir(parents=True)
    config = {"paths": {"cache_dir": str(tmp_path / "cache")}, "model": {"random_init": True}}
    base = {"config": config, "stages": {"start": "sft-abc"}}
    assert reference_path({**base, "pre_dir": str(pre)}) == str(pre)
    assert reference_path({**base, "pre_dir": None}) == str(sft)
    assert reference_path({**base, "pre_dir": None}, override="/some/model") == "/some/model"
    with pytest.raises(InspectError, match="--reference"):
        reference_path({**base, "pre_dir": None, "stages": {"start": "sft-gone"}})
    with pytest.raises(InspectError, match="--reference"):
        reference_path({"config": config, "pre_dir": None, "stages": {"start": "random-123"}})
    hub = {"config": {"paths": {}, "model": {"random_init": False}}, "pre_dir": None,
           "stages": {"start": "EleutherAI/pythia-70m"}}
    assert reference_path(hub) == "EleutherAI/pythia-70m"  # a pretrained hub start model (no SFT stage)


# ---- rendering -------------------------------------------------------------------------------------------------
def _rows() -> list[TokenRow]:
    return [
        TokenRow("The movie", [" was", " <b>great</b>", " & ", "fun", "."], [0.5, -1.25, 0.0, 2.0, -0.031],
                 extra={"kl": [0.1, 0.2, 0.3, 0.4, 0.5]}),
        TokenRow("I 'think'", [" it", "\n", " \"bad\"", "<|endoftext|>"], [1e-4, -3.5, 0.75, float("nan")]),
    ]


def test_html_holds_every_token_and_value(tmp_path):
    rows = _rows()
    path = render_html(rows, "logratio", tmp_path / "t.html", title="a <test> run")
    text = path.read_text(encoding="utf-8")
    assert text.count("<span class='tok'") == sum(len(r.tokens) for r in rows)
    label = SIGNALS["logratio"][0]
    for row in rows:
        assert html.escape(row.prompt) in text
        for tok, value in zip(row.tokens, row.values):
            assert html.escape(tok).replace("\n", "\u21b5\n") in text
            assert f"title='{html.escape(f'{label} = {fmt(value)}')}" in text
    assert "KL_t = 0.3" in text  # the extra signal in the tooltip
    assert "<b>great</b>" not in text and "&lt;b&gt;great&lt;/b&gt;" in text
    assert "a &lt;test&gt; run" in text


def test_color_scale_is_shared_and_symmetric_for_the_logratio():
    rows = _rows()
    assert color_scale(rows, "logratio") == (-3.5, 3.5)
    kl_rows = [TokenRow(r.prompt, r.tokens, r.extra["kl"]) for r in rows if r.extra]
    assert color_scale(kl_rows, "kl") == (0.0, 0.5)  # sequential signals start at 0
    assert color_scale(rows, "logratio", vmax=1.0) == (-1.0, 1.0)
    assert color_scale([TokenRow("p", ["a"], [0.0])], "logratio")[1] > 0  # all zero: still a valid range


def test_png_is_written(tmp_path):
    rows = _rows() + [TokenRow("long " * 40, ["tok%d " % i for i in range(120)] + ["x" * 250],
                               [math.sin(i) for i in range(121)])]  # wraps, and one token longer than a line
    for signal in ("logratio", "kl", "alpha"):
        path = render_png(rows, signal, tmp_path / f"t_{signal}.png", title="$not math$ 50%")
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import matplotlib.image

    img = matplotlib.image.imread(tmp_path / "t_logratio.png")
    assert img.shape[0] > 200 and img.shape[1] > 1000


def test_token_row_checks_lengths():
    with pytest.raises(ValueError, match="2 tokens but 1 values"):
        TokenRow("p", ["a", "b"], [1.0])


# ---- end to end on a real (tiny) run ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from conftest import compose_config

    from alignlab.run import run

    out = tmp_path_factory.mktemp("inspect_run")
    run(compose_config(out, ["experiment=smoke", "trainer.max_steps=5", "eval.enabled=false"]))
    return out


def _full_logps(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1, from a plain full forward (independent of response_logits)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].double()
    return F.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)


@pytest.mark.slow
def test_cli_on_a_real_run_dir(tiny_run):
    from alignlab import models
    from alignlab.inspect import main

    assert main([str(tiny_run), "--prompts", "2", "--max-new-tokens", "10"]) == 0
    out = tiny_run / "inspect"
    for ext in ("png", "html", "json"):
        assert (out / f"tokens_logratio.{ext}").stat().st_size > 0
    record = json.loads((out / "tokens_logratio.json").read_text())
    assert record["signal"] == "logratio" and len(record["rows"]) == 2
    results = json.loads((tiny_run / "results.json").read_text())
    assert record["reference"] == results["pre_dir"] and record["policy"] == results["policy_dir"]
    pi = models.load_pretrained(results["policy_dir"]).eval()
    ref = models.load_pretrained(results["pre_dir"]).eval()
    page = (out / "tokens_logratio.html").read_text(encoding="utf-8")
    for row in record["rows"]:
        n = len(row["token_ids"])
        assert 1 <= n <= 10 and len(row["tokens"]) == len(row["values"]["logratio"]) == len(row["values"]["kl"]) == n
        # the values belong to the right positions: compare with an independent full forward
        ids = row["prompt_ids"] + row["token_ids"]
        expected = (_full_logps(pi, ids) - _full_logps(ref, ids))[len(row["prompt_ids"]) - 1:]
        torch.testing.assert_close(torch.tensor(row["values"]["logratio"], dtype=torch.float64), expected,
                                   atol=1e-4, rtol=0)
        assert all(v >= -1e-6 for v in row["values"]["kl"])
        for tok in row["tokens"]:
            assert html.escape(tok).replace("\n", "\u21b5\n") in page


@pytest.mark.slow
def test_cli_alpha_and_kl_signals(tiny_run, tmp_path):
    """The AlignDistil path on a copy of the run whose "teachers" are its policy and its SFT model (a real
    AlignDistil run trains two teacher models, too slow for a test): a_t must be r * TVD + eps between them."""
    from alignlab import models
    from alignlab.inspect import main

    fake = tmp_path / "ad_run"
    fake.mkdir()
    results = json.loads((tiny_run / "results.json").read_text())
    results["config"]["method"] = {"name": "aligndistil", "_target_": "alignlab.methods.aligndistil.AlignDistil",
                                   "teacher": "adaptive", "r": None, "eps": 1e-3,
                                   "mode": "off_policy"}
    results["stages"].update(dpo_model=results["policy_dir"], reverse_model=results["pre_dir"])
    (fake / "results.json").write_text(json.dumps(results))
    assert main([str(fake), "--prompt", "The film", "--prompt", "I", "--max-new-tokens", "6", "--out",
                 str(tmp_path / "o")]) == 0
    record = json.loads((tmp_path / "o" / "tokens_alpha.json").read_text())
    assert record["signal"] == "alpha" and [r["prompt"] for r in record["rows"]] == ["The film", "I"]
    dpo = models.load_pretrained(results["policy_dir"]).eval()
    rev = models.load_pretrained(results["pre_dir"]).eval()
    for row in record["rows"]:
        ids = row["prompt_ids"] + row["token_ids"]
        with torch.no_grad():
            p = dpo(input_ids=torch.tensor([ids])).logits[0, :-1].double().softmax(-1)
            q = rev(input_ids=torch.tensor([ids])).logits[0, :-1].double().softmax(-1)
        tvd = 0.5 * (p - q).abs().sum(-1)[len(row["prompt_ids"]) - 1:]
        torch.testing.assert_close(torch.tensor(row["values"]["alpha"], dtype=torch.float64), 20.0 * tvd + 1e-3,
                                   atol=1e-4, rtol=1e-4)
    # explicit --signal kl on the same run
    assert main([str(fake), "--prompt", "The film", "--max-new-tokens", "4", "--signal", "kl", "--out",
                 str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "tokens_kl.png").stat().st_size > 0


@pytest.mark.slow
def test_cli_subprocess_and_errors(tiny_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "alignlab.inspect", str(tiny_run), "--prompt", "The acting",
                           "--max-new-tokens", "5", "--out", str(tmp_path / "cli")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "png:" in proc.stdout and (tmp_path / "cli" / "tokens_logratio.png").stat().st_size > 0
    # a user error: a message, no traceback, exit code 2
    proc = subprocess.run([sys.executable, "-m", "alignlab.inspect", str(tmp_path / "nope")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "results.json does not exist" in proc.stderr and "Traceback" not in proc.stderr
    # a run whose start model is gone, with no --reference
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken, ignore=shutil.ignore_patterns("checkpoints", "inspect"))
    results = json.loads((broken / "results.json").read_text())
    results.update(pre_dir=None)
    results["stages"]["start"] = "sft-0000000000000000"
    (broken / "results.json").write_text(json.dumps(results))
    from alignlab.inspect import main

    assert main([str(broken), "--prompt", "x"]) == 2
