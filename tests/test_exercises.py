"""The exercises: every answer key passes its check, typical mistakes are named, starter code is "not attempted",
hints and solutions appear only when asked, and checks are quick. Also the "predict, then run" helper."""

import inspect
import json
import math
import re
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import course_utils as cu

EXERCISES = cu.exercises.all_exercises()
IDS = [exercise.id for exercise in EXERCISES]


def _mistake_answer(exercise, mistake):
    return mistake.variant if exercise.cases is not None else mistake.variant(**exercise.context)


def _hidden_texts(exercise):
    """Text that check() must never print: every hint, and every substantial line of the answer key."""
    source = inspect.getsource(exercise.solution_function()).splitlines()[1:]  # the body, not the signature
    return list(exercise.hints) + [line.strip() for line in source if len(line.strip()) > 30]


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_the_answer_key_passes_its_check_quickly_and_silently(exercise, capsys):
    start = time.process_time()
    result = exercise.check(exercise.solution_answer())
    assert time.process_time() - start < 1.0  # CPU time: a loaded machine does not count
    assert result.passed, result
    out = capsys.readouterr().out
    assert "✅" in out and all(text not in out for text in _hidden_texts(exercise))


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_every_typical_mistake_is_rejected_and_named(exercise, capsys):
    assert len(exercise.mistakes) >= 2
    for mistake in exercise.mistakes:
        start = time.process_time()
        result = exercise.check(_mistake_answer(exercise, mistake))
        assert time.process_time() - start < 1.0  # CPU time: a loaded machine does not count
        assert result.status == "wrong", (mistake.name, result)
        assert f"This looks like {mistake.name}:" in result.message, (mistake.name, result.message)
        assert f'cu.exercises.get("{exercise.id}").hint()' in result.message
    out = capsys.readouterr().out
    assert all(text not in out for text in _hidden_texts(exercise))


@pytest.mark.parametrize("exercise", EXERCISES, ids=IDS)
def test_untouched_starter_code_is_not_attempted(exercise, capsys):
    if exercise.cases is None:
        assert exercise.check(None).status == "not attempted"
        return

    def starter(*args):
        # YOUR CODE HERE
        raise NotImplementedError

    def returns_none(*args):
        pass

    assert exercise.check(starter).status == "not attempted"
    assert exercise.check(returns_none).status == "not attempted"
    assert "⏳" in capsys.readouterr().out


def test_each_notebook_has_at_least_two_exercises_on_its_central_lines():
    for notebook in ("01", "02", "03", "04", "05", "06", "07", "08"):
        functions = [e.id for e in cu.exercises.all_exercises(notebook) if e.cases is not None]
        assert len(functions) >= 2, (notebook, functions)


def test_a_wrong_answer_without_a_known_mistake_gets_a_plain_message_and_checks_are_deterministic(capsys):
    exercise = cu.exercises.get("02.kd_loss")
    odd = lambda s, t, y, temperature, alpha: cu.losses.kd_loss(s, t, y, temperature, alpha) + 0.1
    first, second = exercise.check(odd), exercise.check(odd)
    assert first.status == "wrong" and "This looks like" not in first.message and "values are off" in first.message
    assert first.message == second.message
    crash = exercise.check(lambda *args: torch.ones(3) @ torch.ones(4))
    assert crash.status == "wrong" and "raised RuntimeError" in crash.message


# --- learner-written wrong answers (not the registered variants) get the right name ----------------------------------


def _kd_written(reduction="batchmean", log_q=True, t_squared=True):
    def kd_loss(student_logits, teacher_logits, targets, temperature, alpha):
        hard = F.cross_entropy(student_logits, targets)
        student = (F.log_softmax if log_q else F.softmax)(student_logits / temperature, dim=1)
        soft = F.kl_div(student, F.softmax(teacher_logits / temperature, dim=1), reduction=reduction)
        return (1 - alpha) * hard + alpha * (temperature**2 if t_squared else 1) * soft

    return kd_loss


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # the learner's mistake, which PyTorch warns about
@pytest.mark.parametrize("learner_fn, mistake", [
    (_kd_written(), None),  # probabilities as the target (log_target=False) is also right
    (_kd_written(reduction="mean"), "reduction 'mean' instead of 'batchmean'"),
    (_kd_written(log_q=False), "probabilities where log-probabilities are expected"),
    (_kd_written(t_squared=False), "the T^2 factor missing"),
    (lambda s, t, y, temperature, alpha: (1 - alpha) * F.cross_entropy(s, y) + alpha * temperature**2 * F.kl_div(
        F.log_softmax(s / temperature, 1), F.softmax(t, 1), reduction="batchmean"), "the teacher not softened"),
])
def test_learner_written_kd_losses(learner_fn, mistake):
    result = cu.exercises.get("02.kd_loss").check(learner_fn)
    assert result.passed if mistake is None else (result.status == "wrong" and mistake in result.message)


def _phase_boundaries_truncating(fractions, total_steps):
    ends, running = [], 0.0
    for fraction in fractions:
        running += fraction
        ends.append(int(total_steps * running))
    ends[-1] = total_steps
    return list(zip([0, *ends[:-1]], ends))


def _bias_shift_in_place(logits, labels, class_index, shifts):
    best, best_accuracy = None, -1.0
    for shift in sorted(shifts):
        logits[:, class_index] += shift  # forgets to clone: the caller's logits drift
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        if accuracy > best_accuracy:
            best, best_accuracy = shift, accuracy
    return best


@pytest.mark.parametrize("exercise_id, learner_fn, expected", [
    ("01.entropy", lambda p: -(p * torch.log(p)).sum(dim=-1), "0 log 0 computed as nan"),
    ("01.entropy", lambda p: -(p * torch.log2(p.clamp(min=1e-30))).sum(dim=-1), "log base 2"),
    ("01.softmax_temperature", lambda z, t: torch.exp(z / t) / torch.exp(z / t).sum(-1, keepdim=True), "overflowing"),
    ("01.soft_gradient", lambda z, v, t: torch.softmax(z / t, 0) - torch.softmax(v / t, 0), "the 1/T factor missing"),
    ("02.best_bias_shift", _bias_shift_in_place, "changed its argument 1 in place"),
    ("03.hint_loss", lambda s, t, adapter: F.mse_loss(adapter(s), t, reduction="sum"), "a sum instead of a mean"),
    ("04.attention_map", lambda a, p=2: a.abs().pow(p).mean(1).flatten(1), "the attention map not normalised"),
    ("05.phase_boundaries", _phase_boundaries_truncating, "the ends truncated instead of rounded"),
    ("05.phase_index", lambda step, b: [i for i, (s, e) in enumerate(b) if s <= step <= e][0], "off-by-one"),
    ("06.per_channel_scales", lambda w: w.abs().max() / 127, "per-tensor where per-channel was asked"),
    ("06.fake_quantize", lambda x, s, z, lo, hi: (torch.clamp(x / s + z, lo, hi) - z) * s, "no rounding"),
    ("06.fake_quantize", lambda x, s, z, lo, hi: x + ((torch.round(x / s) + z - z) * s - x).detach(), "no clamping"),
    ("08.kl_per_position", lambda s, t, T: F.kl_div(F.log_softmax(t / T, -1), F.log_softmax(s / T, -1),
                                                    reduction="none", log_target=True).sum(-1), "KL arguments swapped"),
])
def test_learner_written_mistakes_are_named(exercise_id, learner_fn, expected):
    result = cu.exercises.get(exercise_id).check(learner_fn)
    assert result.status == "wrong" and expected in result.message, result.message


def test_other_accepted_answers_and_value_exercises_with_context():
    mapping = cu.exercises.get("03.progressive_mapping")
    assert mapping.check(lambda s, t: [math.ceil((i + 1) * t / s - 1) for i in range(s)]).passed  # rounding up is fine
    assert mapping.check(lambda s, t: [round((i + 1) * t / s - 1) for i in range(s)]).passed
    adapter = cu.exercises.get("03.adapter_parameters")
    assert adapter.check(8 * 32 + 64, student_channels=8, teacher_channels=32).passed
    assert "batch norm forgotten" in adapter.check(256, student_channels=8, teacher_channels=32).message
    assert cu.exercises.get("01.high_temperature_limit").check(" B ").passed
    with pytest.raises(TypeError, match="takes no context"):
        cu.exercises.get("02.kd_loss").check(cu.losses.kd_loss, rows=[])


# --- hints and solutions, only when asked -----------------------------------------------------------------------------


def test_hints_come_in_tiers_and_the_solution_prints_the_answer_key(capsys):
    exercise = cu.exercises.get("02.kd_loss")
    exercise.hint()
    first = capsys.readouterr().out
    assert "Hint 1 of 3" in first and exercise.hints[0] in first and exercise.hints[1] not in first
    assert '.hint(2)' in first
    exercise.hint(10)
    last = capsys.readouterr().out
    assert "Hint 3 of 3" in last and ".solution()" in last
    with pytest.raises(ValueError, match="level"):
        exercise.hint(0)
    exercise.solution()
    solution = capsys.readouterr().out
    assert "def kd_loss" in solution and "batchmean" in solution and "course_utils/solutions.py" in solution


def test_the_answer_key_table_lists_every_exercise_of_a_notebook():
    table = cu.exercises.answer_key("02")
    assert table.count("\n") == 1 + len(cu.exercises.all_exercises("02"))
    assert "`02.kd_loss`" in table and "the T^2 factor missing" in table and "solutions.py::kd_loss" in table
    assert "01." not in table
    assert cu.exercises.answer_key("06").count("no clamping") == 1  # named once, though checked with and without STE


def test_an_unknown_exercise_suggests_the_closest_id():
    with pytest.raises(KeyError, match="Did you mean '02.kd_loss'"):
        cu.exercises.get("02.kd_los")


def test_every_solution_is_plain_learner_code_that_never_calls_its_own_reference():
    for exercise in EXERCISES:
        source = inspect.getsource(exercise.solution_function())
        assert "cu.exercises" not in source and "solutions." not in source
    assert "cu.losses.kd_loss" not in inspect.getsource(cu.exercises.get("02.kd_loss").solution_function())


# --- predict, then run ---------------------------------------------------------------------------------------------


def test_compare_prediction(capsys):
    assert cu.exercises.compare_prediction(None, 0.87, name="accuracy").status == "no prediction"
    assert "no prediction recorded" in capsys.readouterr().out
    close = cu.exercises.compare_prediction(1.5, 2.0, name="gain", unit="points", tolerance=1.0)
    assert close.status == "close" and "within your tolerance" in close.message and "0.5 points higher" in close.message
    off = cu.exercises.compare_prediction(1.5, -0.2, unit="points")
    assert off.status == "off" and "other way" in off.message
    assert cu.exercises.compare_prediction((0.8, 0.9), torch.tensor(0.85)).status == "close"
    assert "outside your range" in cu.exercises.compare_prediction((0.9, 0.8), 0.95).message
    assert cu.exercises.compare_prediction(" Win", "win").status == "close"
    assert cu.exercises.compare_prediction("win", "within noise").status == "off"
    assert cu.exercises.compare_prediction("a lot", 2.0).status == "not comparable"
    assert cu.exercises.compare_prediction(True, True).status == "close"
    with pytest.raises(ValueError, match="measured"):
        cu.exercises.compare_prediction(1.0, float("nan"))


def test_the_notebooks_name_only_registered_exercises():
    named = set()
    for path in sorted(Path(cu.config.REPO_DIR, "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            named |= set(re.findall(r'cu\.exercises\.get\("([^"]+)"\)', "".join(cell["source"])))
    assert named and named <= set(IDS), named - set(IDS)
