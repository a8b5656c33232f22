"""alignlab.data.source.DataSource: every shipped source subclasses it, and its defaults mean "nothing to do"."""
import ast
import json
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_class

from alignlab.data.files import PreferenceFiles
from alignlab.data.mini_imdb import MiniImdb
from alignlab.data.source import DataSource, distinct_prompts, first_chosen
from alignlab.eval.winrate import winrate_vs_chosen

REPO = Path(__file__).resolve().parent.parent
DATA_CONFIGS = sorted((REPO / "conf" / "data").glob("*.yaml"))


class PromptsOnly(DataSource):
    def corpus(self):
        return ["a b c"]

    def prompts(self, split, tokenizer=None):
        return ["a"]


@pytest.mark.parametrize("path", DATA_CONFIGS, ids=[p.stem for p in DATA_CONFIGS])
def test_every_shipped_source_is_a_data_source(path):
    target = yaml.safe_load(path.read_text())["source"]["_target_"]
    assert issubclass(get_class(target), DataSource)


def test_defaults_describe_a_source_with_prompts_only():
    source = PromptsOnly()
    assert source.bind_tokenizer(object()) is None
    assert source.sft_rows() is None
    assert source.preference_rows("train") is None and source.preference_rows("validation") is None
    assert source.chosen_responses() == {} and source.chosen_responses("test") == {}


def test_corpus_and_prompts_have_no_default():
    with pytest.raises(TypeError, match="abstract"):
        DataSource()

    class NoPrompts(DataSource):
        def corpus(self):
            return []

    with pytest.raises(TypeError, match="prompts"):
        NoPrompts()


def test_mini_imdb_takes_the_defaults():
    source = MiniImdb(n_reviews=200, n_eval_prompts=20)
    source.bind_tokenizer(object())  # nothing to bind: reviews are plain text
    assert source.preference_rows("train") is None  # the pair stage generates pairs
    assert source.chosen_responses("test") == {}
    assert len(source.sft_rows()) == 180 and source.corpus() == source.texts("train")


def test_preference_files_answer_chosen_responses(tmp_path):
    rows = [{"prompt": "p1", "chosen": " a", "rejected": " b"}, {"prompt": "p1", "chosen": " c", "rejected": " d"},
            {"prompt": "p2", "chosen": " e", "rejected": " f"}]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    source = PreferenceFiles(str(tmp_path / "pairs.jsonl"), str(tmp_path / "pairs.jsonl"))
    assert source.chosen_responses("test") == {"p1": " a", "p2": " e"}
    assert source.prompts("test") == ["p1", "p2"]


def test_row_helpers():
    rows = [{"prompt": "q", "chosen": "1"}, {"prompt": "p", "chosen": "2"}, {"prompt": "q", "chosen": "3"}]
    assert distinct_prompts(rows) == ["q", "p"]
    assert first_chosen(rows) == {"q": "1", "p": "2"}


class RefusingReward:
    def score(self, prompts, completions):
        raise AssertionError("nothing to score")


def test_no_reference_responses_means_no_win_rate():
    samples = [{"prompt": "p", "completion": " x"}]
    assert winrate_vs_chosen(RefusingReward(), samples, {}) == {}
    assert winrate_vs_chosen(RefusingReward(), samples, PromptsOnly().chosen_responses("test")) == {}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_imdb_shares_the_prefix_prompt_protocol_not_mini_imdb():
    from alignlab.data.imdb import Imdb
    from alignlab.data.prefix_prompts import PrefixPromptSource

    assert issubclass(Imdb, PrefixPromptSource) and issubclass(MiniImdb, PrefixPromptSource)
    assert "alignlab.data.mini_imdb" not in imported_modules(REPO / "alignlab" / "data" / "imdb.py")
