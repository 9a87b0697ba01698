"""The training loop, evaluation helpers, quick mode, self-checks, widgets and the results recorder."""

from __future__ import annotations

import json

import pytest
import torch

import course_utils as cu


def test_training_lowers_the_loss(small_train):
    model = cu.images.create("cnn-9k", seed=0)
    images, labels = small_train.images[:256], small_train.labels[:256]
    before = torch.nn.functional.cross_entropy(model(images), labels).item()
    cu.train.fit(model, cu.data.make_loader(images, labels, batch_size=64), epochs=5, lr=1e-2,
                 lr_schedule="constant", progress=False)
    model.train()  # compare in the same (batch-statistics) mode as training
    after = torch.nn.functional.cross_entropy(model(images), labels).item()
    assert after < before - 0.3


def _run(seed: int, small_train):
    model = cu.images.create("cnn-2k", seed=seed)
    history = cu.train.fit(model, small_train.loader(batch_size=100, seed=seed), epochs=1, seed=seed,
                           val_data=(small_train.images[:200], small_train.labels[:200]), progress=False)
    return model, history


def test_same_seed_same_result_twice(small_train):
    (m1, h1), (m2, h2) = _run(3, small_train), _run(3, small_train)
    assert h1.step_loss == h2.step_loss
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    _, h3 = _run(4, small_train)
    assert h3.step_loss != h1.step_loss
    assert len(h1.val_accuracy) == 1 and 0.0 <= h1.final_accuracy <= 1.0


def test_cosine_schedule_and_custom_loss_are_used(small_train):
    seen = []

    def loss_fn(model, batch):
        seen.append(len(batch))
        return cu.train.cross_entropy_step(model, batch)

    model = cu.images.create("cnn-2k", seed=0)
    loader = small_train.loader(batch_size=250, extra=(torch.zeros(len(small_train), 10),))
    history = cu.train.fit(model, loader, epochs=2, lr=1.0, loss_fn=loss_fn, progress=False)
    assert seen == [3] * 8  # images, labels, extra tensor; 4 steps per epoch
    # cosine: factor 0.5 * (1 + cos(pi * 7 / 8)) at the last step
    assert history.lr[-1] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi * 7 / 8)).item()), rel=1e-6)


def test_fit_rejects_bad_arguments(small_train):
    model = cu.images.create("cnn-2k")
    with pytest.raises(ValueError, match="epochs"):
        cu.train.fit(model, small_train.loader(), epochs=0, progress=False)
    with pytest.raises(ValueError, match="lr_schedule"):
        cu.train.fit(model, small_train.loader(), epochs=1, lr_schedule="linear", progress=False)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        cu.train.fit(model, small_train.loader(), epochs=1, progress=False,
                     loss_fn=lambda m, b: m(b[0]).sum() * float("nan"))


def test_confusion_matrix_and_per_class_accuracy_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 1, 1, 1, 0])
    matrix = cu.evaluate.confusion_matrix(predictions, labels, num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert cu.evaluate.per_class_accuracy(predictions, labels, 3).tolist() == [0.5, 1.0, 0.0]
    with pytest.raises(ValueError, match="shape"):
        cu.evaluate.confusion_matrix(predictions[:3], labels)


def test_accuracy_of_a_fixed_model():
    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([0.0, 1.0]))

        def forward(self, x):
            return self.bias.expand(len(x), 2)

    images = torch.zeros(4, 1, 2, 2)
    assert cu.evaluate.accuracy(Constant(), images, torch.tensor([1, 1, 0, 1])) == 0.75
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        cu.evaluate.predict_logits(Constant(), torch.zeros(4, 2))


def test_quick_mode_flag(monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert cu.config.quick_mode() and cu.config.pick(10, 1) == 1 and cu.config.seeds() == [0, 1]
    monkeypatch.setenv("COURSE_QUICK", "0")
    assert not cu.config.quick_mode() and cu.config.pick(10, 1) == 10 and cu.config.seeds() == [0, 1, 2]
    monkeypatch.delenv("COURSE_QUICK")
    assert not cu.config.quick_mode()


def test_checks_report_correct_wrong_and_not_attempted(capsys):
    reference = lambda x: x * 2
    cases = [(torch.tensor([1.0, 2.0]),), (torch.tensor([-3.0]),)]
    assert cu.checks.check_function("double", reference, reference, cases).status == "correct"
    wrong = cu.checks.check_function("double", lambda x: x * 3, reference, cases, hint="multiply by two")
    assert wrong.status == "wrong" and "multiply by two" in wrong.message
    assert "2." not in wrong.message and "4." not in wrong.message  # the answer is not printed

    def starter(x):
        raise NotImplementedError

    assert cu.checks.check_function("double", starter, reference, cases).status == "not attempted"
    assert cu.checks.check_function("double", lambda x: x[:1], reference, cases).status == "wrong"
    assert cu.checks.check_value("answer", None, lambda a: a == 3).status == "not attempted"
    assert cu.checks.check_value("answer", 3, lambda a: a == 3).passed
    assert "❌" in capsys.readouterr().out


def test_explore_draws_the_static_figure_first():
    calls = []
    widget = cu.widgets.explore(lambda temperature, name: calls.append((temperature, name)),
                                temperature=(1.0, 10.0), name=["a", "b"])
    assert calls[0] == (1.0, "a")  # the static call, with the controls' first values
    assert widget is not None


def test_report_record_merges_values(tmp_path, monkeypatch):
    monkeypatch.setattr(cu.config, "REPO_DIR", tmp_path)
    monkeypatch.setenv("COURSE_QUICK", "1")
    cu.report.record("99_test", {"a": torch.tensor(0.5), "b": [1, 2]})
    path = cu.report.record("99_test", {"c": {"x": 1}})
    assert path == tmp_path / "results" / "runs" / "quick" / "99_test.json"
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2], "c": {"x": 1}}
    assert cu.report.load("99_test")["a"] == 0.5
    with pytest.raises(ValueError, match="plain name"):
        cu.report.record("a/b", {})


def test_a_new_run_does_not_keep_an_earlier_runs_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(cu.config, "REPO_DIR", tmp_path)
    monkeypatch.setattr(cu.report, "_STARTED", set())  # a fresh kernel
    monkeypatch.setenv("COURSE_QUICK", "1")
    cu.report.record_experiment("99_test", "old name: KD vs scratch", metric="accuracy", baseline=("scratch", [0.8, 0.81]),
                                method=("KD", [0.85, 0.86]))
    cu.report.record("99_test", {"renamed_away": 1})
    monkeypatch.setattr(cu.report, "_STARTED", set())  # Restart & Run All: another kernel
    cu.report.record_experiment("99_test", "new name: KD vs scratch", metric="accuracy", baseline=("scratch", [0.8, 0.81]),
                                method=("KD", [0.85, 0.86]))
    cu.report.record("99_test", {"kept": 2})
    recorded = cu.report.load("99_test")
    assert [e["name"] for e in recorded["experiments"]] == ["new name: KD vs scratch"] and recorded["kept"] == 2
    assert "renamed_away" not in recorded
