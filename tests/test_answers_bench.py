"""The answer-checker benchmark: its generators and a small end-to-end run (skipped without the shared data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.answers import Gold, hendrycks_answer, main, perturbations, rewrites
from harness_plugin.answers import is_equivalent


def _gold(answer: str, dataset: str = "math") -> Gold:
    return Gold("math" if dataset == "math" else "gsm8k", dataset, 0, answer, "", "algebra")


def test_hendrycks_extraction_takes_the_last_box() -> None:
    assert hendrycks_answer("so $\\boxed{1}$ and then $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert hendrycks_answer("only \\fbox{7}") == "7"
    assert hendrycks_answer("none") is None


@pytest.mark.parametrize(
    "answer", ["\\frac{3}{4}", "0.25", "12", "1+2\\sqrt{3}", "\\{1, 2\\}", "30^\\circ", "(1, 2)", "2\\sqrt{2}"]
)
def test_generated_rewrites_are_equivalent_and_perturbations_are_not(answer: str) -> None:
    gold = _gold(answer)
    assert rewrites(gold), "every sample answer should have at least one rewrite"
    for family, text in rewrites(gold):
        assert is_equivalent(text, answer), (family, text)
    for family, text in perturbations(gold):
        assert not is_equivalent(text, answer), (family, text)


def test_small_run_writes_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    output = tmp_path / "answers.json"
    assert main(["--data", str(shared_data), "--limit", "15", "--no-math-verify", "--no-load", "--json", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "| self " in printed and "checks/s" in printed
    figures = json.loads(output.read_text())["results"]["ours"]
    assert figures["self"]["accuracy"] == 1.0
    assert figures["cross"]["false_positives"] == 0
    assert figures["all"]["pairs"] > 100


def test_styled_outputs_score_as_labelled() -> None:
    """Every model-style output of the benchmark is scored as its label says, in each family, both ways."""
    from benchmarks.answers.styles import styled_pairs
    from harness_plugin.answers import score

    answers = [str(n) for n in range(-7, 30, 2)] + ["\\frac{1}{2}", "2\\sqrt{3}", "\\pi", "(1, 2)", "x^2+1"]
    golds = [Gold("math500", "math", i, a, f"\\boxed{{{a}}}", "algebra") for i, a in enumerate(answers)]
    pairs = styled_pairs(golds, seed=1, per_family=8)
    families = {pair.family for pair in pairs}
    assert len(families) >= 10
    for family in families:
        assert {p.expected for p in pairs if p.family == family} == {True, False}, family
    wrong = [(p.family, p.prediction, p.reference) for p in pairs
             if score(p.prediction, p.reference, p.dataset) is not p.expected]
    assert not wrong


def test_default_data_is_the_folder_beside_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.answers import default_data

    monkeypatch.delenv("ANTIDISTILL_DATA_DIR", raising=False)
    checkout = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(checkout)  # tox installs a wheel: the checkout is then known only as the working folder
    beside = checkout.parent / "shared" / "data"
    assert default_data() == (str(beside) if beside.is_dir() else "$ANTIDISTILL_DATA_DIR")
