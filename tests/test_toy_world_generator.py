"""The toy world's problem generator: deterministic, arithmetically right, splits disjoint.

Every final answer is recomputed here from the sampled numbers with formulas written independently of the
generator's solution text, and every solution line's arithmetic is re-checked with exact fractions.
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction
from itertools import islice

import pytest

from benchmarks.toy_world.generator import (
    Difficulty,
    arithmetic_fact,
    generate_problems,
    generic_corpus,
    make_splits,
)


def expected_gsm8k(template: str, p: dict) -> int:
    """The answer of a GSM8K-like problem from its numbers alone."""
    n = p["n_steps"]
    if template == "shopping":
        total = sum(c * q for c, q in zip(p["counts"], p["prices"]))
        return p["bill"] - total if "bill" in p else total
    if template == "rates":
        made = p["rate"] * p["hours"] * p.get("days", 1)
        good = made - p.get("broken", 0)
        return good // p["per_box"] if "per_box" in p else good
    if template == "ages":
        a, b = p["age"], p["age"] + p["older"]
        if n == 1:
            return b
        if n == 2:
            return a + b
        c = p["times"] * a
        return c - b if "years" in p else b + c
    if template == "sharing":
        return (p["start"] - p["eaten"]) // p["friends"] + p.get("extra", 0)
    if template == "units":
        return (p["big"] * p["per"] + p.get("more", 0)) // p.get("parts", 1)
    if template == "savings":
        return p["per_week"] * p["weeks"] + p.get("gift", 0) - p.get("price", 0)
    raise AssertionError(f"untested template {template}")


def latex_to_fraction(text: str) -> Fraction:
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", text)
    if m:
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return -value if m.group(1) else value
    assert re.fullmatch(r"-?\d+", text), text
    return Fraction(int(text))


def expected_math(template: str, p: dict) -> Fraction | tuple[int, int]:
    if template == "fraction_sum":
        x, y = Fraction(p["a"], p["b"]), Fraction(p["c"], p["d"])
        return x + y if p["op"] == "+" else x - y
    if template == "linear":
        return Fraction(p["c"] - p["b"], p["a"])
    if template == "simplify":
        return Fraction(p["num"], p["den"])
    if template == "expand":
        return (p["p"] + p["q"], p["p"] * p["q"])
    raise AssertionError(f"untested template {template}")


LINE = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
OPS = {"+": Fraction.__add__, "-": Fraction.__sub__, "*": Fraction.__mul__, "/": Fraction.__truediv__}


def _answers_module():
    try:
        from harness_plugin import answers
    except ImportError:
        return None
    return answers if hasattr(answers, "score") else None


@pytest.mark.parametrize("difficulty", [Difficulty(), Difficulty(min_steps=1, max_steps=4, max_factor=12, max_value=300)])
def test_gsm8k_answers_are_right(difficulty: Difficulty) -> None:
    answers = _answers_module()
    templates = set()
    for problem in islice(generate_problems(7, "gsm8k", difficulty), 600):
        templates.add(problem.template)
        expected = expected_gsm8k(problem.template, problem.params)
        assert problem.final == str(expected)
        assert problem.answer.endswith(f"\n#### {expected}")
        lines = problem.answer.split("\n")[:-1]
        assert len(lines) >= problem.params["n_steps"]
        for line in lines:
            for a, op, b, c in LINE.findall(line):
                assert OPS[op](Fraction(a), Fraction(b)) == Fraction(c), line
        numbers = [int(x) for x in re.findall(r"\d+", problem.answer)]
        assert max(numbers) <= difficulty.max_value
        if answers is not None:
            assert answers.score(problem.answer, problem.final, "gsm8k")
    assert len(templates) >= 5, "the generator should exercise all its templates"


def test_math_answers_are_right() -> None:
    answers = _answers_module()
    for problem in islice(generate_problems(3, "math"), 300):
        expected = expected_math(problem.template, problem.params)
        assert f"\\boxed{{{problem.final}}}" in problem.answer
        if problem.template == "expand":
            s, prod = expected
            assert problem.final == f"x^2 + {s}x + {prod}"
        else:
            assert latex_to_fraction(problem.final) == expected
            # answers are fully reduced
            assert latex_to_fraction(problem.final).denominator == expected.denominator
        if answers is not None:
            assert answers.score(problem.answer, problem.final, "math")


def test_generator_is_deterministic_and_seed_dependent() -> None:
    a = [p.to_dict() for p in islice(generate_problems(11), 50)]
    b = [p.to_dict() for p in islice(generate_problems(11), 50)]
    c = [p.to_dict() for p in islice(generate_problems(12), 50)]
    assert a == b
    assert a != c


def test_splits_are_disjoint_and_deterministic() -> None:
    sizes = {"test": 100, "holdout": 100, "train": 2000}
    splits = make_splits(5, sizes)
    assert {k: len(v) for k, v in splits.items()} == sizes
    keys = {name: {(r["template"], str(sorted(r["params"].items()))) for r in recs} for name, recs in splits.items()}
    questions = {name: {r["question"] for r in recs} for name, recs in splits.items()}
    for x, y in [("test", "holdout"), ("test", "train"), ("holdout", "train")]:
        assert not keys[x] & keys[y]
        assert not questions[x] & questions[y]
    assert make_splits(5, sizes) == splits
    # with its share fixed, the test split does not depend on how much training data is asked for
    shares = {"test": 0.1, "holdout": 0.1, "train": 0.8}
    assert (make_splits(5, {"test": 100, "holdout": 10, "train": 10}, shares=shares)["test"]
            == make_splits(5, sizes, shares=shares)["test"])


def test_every_stratum_is_dealt_to_every_split_in_its_share() -> None:
    """World v3 dealt test first, so small strata (64 one-step products) went to test and train had none of them.

    Dealt by hash, each stratum (template, step count) gives train about its share of its distinct problems, so
    no kind of test problem is missing from train, however small its stratum.
    """
    d = Difficulty(min_steps=1, max_steps=2, max_factor=9, max_value=99)
    sizes = {"test": 400, "holdout": 400, "train": 3000}
    shares = {"test": 0.1, "holdout": 0.1, "train": 0.8}
    splits = make_splits(2, sizes, "gsm8k", d, shares=shares)

    def strata(records: list[dict]) -> Counter:
        return Counter(f"{r['template']}{r['params']['n_steps']}" for r in records)

    test, train = strata(splits["test"]), strata(splits["train"])
    assert set(test) <= set(train)
    for one_step in ("shopping1", "rates1", "sharing1", "savings1"):  # 64 problems each: train gets most of them
        assert train[one_step] >= 40, (one_step, train[one_step])
        assert test[one_step] <= 15, (one_step, test[one_step])
    with pytest.raises(ValueError, match="shares"):
        make_splits(2, sizes, shares={"test": 0.5, "train": 0.5})


def test_reworded_train_split_stays_disjoint_from_test_and_holdout() -> None:
    """Rewordings add questions to train only: each is new text, none shares a problem with test or holdout."""
    sizes = {"test": 30, "holdout": 30, "train": 1500}
    d = Difficulty(min_steps=1, max_steps=1, max_factor=4, max_value=30)
    shares = {"test": 0.25, "holdout": 0.25, "train": 0.5}
    splits = make_splits(3, sizes, "gsm8k", d, reworded=("train",), shares=shares)
    assert {k: len(v) for k, v in splits.items()} == sizes
    keys = {name: [(r["template"], str(sorted(r["params"].items()))) for r in recs] for name, recs in splits.items()}
    assert not set(keys["train"]) & (set(keys["test"]) | set(keys["holdout"]))
    assert len({r["question"] for r in splits["train"]}) == sizes["train"]
    assert len(set(keys["train"])) < sizes["train"]  # some problems do come in several wordings
    assert len(set(keys["test"])) == sizes["test"]  # the others do not
    with pytest.raises(ValueError, match="distinct"):  # the same bounds without rewordings run out
        make_splits(3, sizes, "gsm8k", d, shares=shares)


def test_too_small_world_fails_clearly() -> None:
    with pytest.raises(ValueError, match="distinct"):
        make_splits(0, {"train": 5_000}, "gsm8k", Difficulty(min_steps=1, max_steps=1, max_factor=2, max_value=10))
    with pytest.raises(ValueError, match="cannot fit"):
        make_splits(0, {"train": 10}, "gsm8k", Difficulty(min_steps=1, max_steps=1, max_factor=2, max_value=4))
    with pytest.raises(ValueError, match="max_steps"):
        Difficulty(min_steps=3, max_steps=2)


def test_generic_corpus_has_facts_but_no_solutions() -> None:
    import random

    d = Difficulty()
    rng = random.Random(0)
    for _ in range(500):
        a, op, b, c = LINE.fullmatch(arithmetic_fact(rng, d)).groups()
        assert OPS[op](Fraction(a), Fraction(b)) == Fraction(c)
    questions = [p.question for p in islice(generate_problems(0), 50)]
    docs = generic_corpus(questions, 200, 0, d, 6)
    assert len(docs) == 200
    assert not any("####" in doc for doc in docs)
    assert any(doc in questions for doc in docs)


@pytest.mark.parametrize("name", ["toy", "smoke"])
def test_every_preset_fits_its_difficulty(name: str) -> None:
    """The presets ask for splits close to the number of distinct problems their bounds allow: dealing them
    must succeed, with every split full and every problem within the preset's step bounds."""
    from benchmarks.toy_world.presets import get_preset, gsm8k_splits

    preset = get_preset(name)
    sizes = {"test": preset.n_test, "holdout": preset.n_holdout, "train": preset.n_train}
    splits = gsm8k_splits(preset)
    assert {k: len(v) for k, v in splits.items()} == sizes
    d = preset.difficulty
    assert all(d.min_steps <= p["params"]["n_steps"] <= d.max_steps for p in splits["train"])


# ---------------------------------------------------------------------------------------------- world v2: styles

STATEMENT = re.compile(r"(\d+) ([-+*/]) (\d+)(?: =| is|, which is|, that is) (\d+)")
OPERATION = re.compile(r"\d+ [-+*/] \d+")
PARITY = re.compile(r"Note that (\d+) is (even|odd)\.")
ORDER = re.compile(r"Note that (\d+) is (more|less) than (\d+)\.")
V2 = Difficulty(min_steps=1, max_steps=2, max_factor=9, max_value=99)


def test_styled_solutions_state_only_true_arithmetic_and_true_remarks() -> None:
    """Every equation in any phrasing ("a op b = c", "a op b, which is c"...) holds, and every side remark is a
    true statement (parity or order) about numbers that occur in the question."""
    remarks = 0
    for problem in islice(generate_problems(5, "gsm8k", V2), 800):
        assert problem.answer.endswith(f"\n#### {expected_gsm8k(problem.template, problem.params)}")
        question_numbers = {int(n) for n in re.findall(r"\d+", problem.question)}
        for line in problem.answer.split("\n")[:-1]:
            statements = STATEMENT.findall(line)
            assert len(statements) == len(OPERATION.findall(line)), f"an operation in no known phrasing: {line}"
            for a, op, b, c in statements:
                assert OPS[op](Fraction(a), Fraction(b)) == Fraction(c), line
            if line.startswith("Note that"):
                remarks += 1
                if m := PARITY.fullmatch(line):
                    n, parity = int(m.group(1)), m.group(2)
                    assert n in question_numbers and (n % 2 == 0) == (parity == "even"), line
                elif m := ORDER.fullmatch(line):
                    n, word, k = int(m.group(1)), m.group(2), int(m.group(3))
                    assert {n, k} <= question_numbers and (n > k) == (word == "more"), line
                else:
                    raise AssertionError(f"a side remark of no known kind: {line}")
        numbers = [int(x) for x in re.findall(r"\d+", problem.answer)]
        assert max(numbers) <= V2.max_value
    assert remarks > 50, "side remarks should be common enough to matter"


def test_styles_give_many_solutions_per_problem_and_plain_keeps_one() -> None:
    """The same problem (template and numbers) written many times gets many distinct solutions, all with the
    same final line; without styles it is always the canonical text."""
    import random

    from benchmarks.toy_world.generator import GSM8K_TEMPLATES

    for template in GSM8K_TEMPLATES:
        solutions, plains = set(), set()
        for i in range(60):
            # the same numbers each time: reseed the problem part, vary only the style stream
            question, steps, final, _ = _retry(GSM8K_TEMPLATES[template], random.Random(template), V2)
            solutions.add(steps.solution(final, question, random.Random(i)))
            plains.add(steps.solution(final, question, random.Random(i), style=False))
        assert len(plains) == 1 and plains == {steps.plain(final)}
        assert len(solutions) >= 10, template


def _retry(template, rng, d):
    from benchmarks.toy_world.generator import _Reject

    while True:
        try:
            return template(rng, 2, d)
        except _Reject:
            continue


def test_unstyled_stream_is_the_canonical_one() -> None:
    for styled, plain in zip(islice(generate_problems(2, "gsm8k", V2), 50),
                             islice(generate_problems(2, "gsm8k", V2, style=False), 50)):
        assert plain.answer == plain.canonical
        assert styled.answer.endswith("#### " + styled.final)


def test_stories_come_from_the_canonical_solution() -> None:
    from benchmarks.toy_world.generator import story

    for problem in islice(generate_problems(4, "gsm8k", V2), 100):
        told = story(problem.question, problem.canonical)
        assert "Note that" not in told and "####" not in told and "?" not in told
        assert not STATEMENT.search(told)


def test_perturbed_copies_keep_labels_of_untouched_positions() -> None:
    """Noise replaces only non-protected completion tokens, at a rate within bounds; the batch masks exactly
    the replaced positions and keeps every other label of the original example."""
    import random

    from benchmarks.toy_world.train import _batch, perturbed_copies

    rng = random.Random(0)
    protected = set(range(10))  # e.g. the digit ids
    examples = []
    for k in range(200):
        n_prompt = rng.randint(1, 5)
        ids = [1000 + k] + [rng.randint(0, 49) for _ in range(rng.randint(n_prompt + 20, n_prompt + 60))]
        examples.append((ids, n_prompt))  # the first (prompt) token names the example
    noisy = perturbed_copies(examples, list(range(50, 60)), protected, 0.5, (0.05, 0.10), seed=3)
    assert len(noisy) == 100
    assert perturbed_copies(examples, list(range(50, 60)), protected, 0.5, (0.05, 0.10), seed=3) == noisy
    for ids, n_prompt, positions in noisy:
        source = examples[ids[0] - 1000][0]
        changed = [i for i, (a, b) in enumerate(zip(ids, source)) if a != b]
        assert set(changed) == set(positions)
        assert all(i >= n_prompt and source[i] not in protected and i != len(ids) - 1 for i in positions)
        eligible = sum(1 for i in range(n_prompt, len(ids) - 1) if source[i] not in protected)
        assert 0.05 * eligible - 1 <= len(positions) <= 0.10 * eligible + 1
        labels = _batch([(ids, n_prompt, positions)], pad_id=0)["labels"][0].tolist()
        for i, label in enumerate(labels):
            if i < n_prompt or i in positions:
                assert label == -100
            else:
                assert label == source[i]
    with pytest.raises(ValueError):
        perturbed_copies(examples, [], protected, 0.5, (0.05, 0.1), seed=0)
