"""Bad input gets a clear error: one test per empty, non-finite, out-of-range or mis-typed input (issue 20).

Each test asserts the error type and the words that name the mistake. All of them are fast: tiny tensors, a
hand-built ONNX graph instead of an export, and command-line programs that must stop at argument parsing.
"""

from __future__ import annotations

import argparse
import re
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import course_utils as cu
from course_utils.cli import build_corpus, lm_sweep, train_lm_teacher, train_teacher

NAN, INF = float("nan"), float("inf")


def logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


LABELS = torch.tensor([0, 1, 2, 3])


def with_value(tensor: torch.Tensor, index: tuple, value: float) -> torch.Tensor:
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


# --- the helpers ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [3, 3.5, np.float32(3.5), np.int64(3), torch.tensor(3.5), np.array(2.0)])
def test_as_number_accepts_python_numpy_and_0d_tensor_numbers(number):
    value = cu.validate.as_number(number, "x")
    assert type(value) in (int, float) and value == pytest.approx(float(number))


@pytest.mark.parametrize("bad, words", [(True, "got bool"), ("0.5", "got str"), (torch.ones(2), r"shape \(2,\)"),
                                        (None, "got NoneType")])
def test_as_number_refuses_what_is_not_one_number(bad, words):
    with pytest.raises(TypeError, match=words):
        cu.validate.as_number(bad, "x")


def test_in_range_names_the_interval():
    with pytest.raises(ValueError, match=r"x must be in \(0, 1\], got 0"):
        cu.validate.in_range(0, "x", 0, 1, low_open=True)
    with pytest.raises(ValueError, match="x must be >= 2 and finite, got nan"):
        cu.validate.in_range(NAN, "x", 2)
    assert cu.validate.in_range(np.float32(0.5), "x", 0, 1) == 0.5


def test_integer_refuses_floats_even_whole_ones():
    with pytest.raises(TypeError, match="whole number"):
        cu.validate.integer(2.0, "epochs")
    with pytest.raises(ValueError, match="between 1 and 3, got 4"):
        cu.validate.integer(4, "k", 1, 3)
    assert cu.validate.integer(np.int64(2), "k") == 2 and cu.validate.integer(torch.tensor(2), "k") == 2


def test_integer_labels_accept_whole_floats_and_refuse_fractions():
    assert cu.validate.integer_labels(np.array([1.0, 2.0]), "labels", 3).dtype == np.int64
    with pytest.raises(ValueError, match="0.7 at index"):
        cu.validate.integer_labels([0.7, 2.0], "labels")
    with pytest.raises(TypeError, match="integer class indices"):
        cu.validate.integer_labels(np.array(["a"]), "labels")


@pytest.mark.parametrize("parse, text, words", [
    (cu.validate.positive_int, "0", "positive integer"), (cu.validate.positive_int, "2.5", "positive integer"),
    (cu.validate.non_negative_int, "-1", ">= 0"), (cu.validate.positive_float, "nan", "> 0"),
    (cu.validate.positive_float, "-1", "> 0"), (cu.validate.fraction, "1.5", r"\[0, 1\]"),
    (cu.validate.finite_float, "inf", "finite"), (cu.validate.existing_directory, "/no/such/folder", "existing folder"),
])
def test_argparse_types_refuse_bad_text(parse, text, words):
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        parse(text)


# --- losses -----------------------------------------------------------------------------------------------------------


def test_kd_loss_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="student_logits is empty"):
        cu.losses.kd_loss(torch.empty(0, 10), torch.empty(0, 10), torch.empty(0, dtype=torch.long))


def test_kd_loss_refuses_a_nan_teacher_row():
    with pytest.raises(ValueError, match=r"teacher_logits holds 1 NaN or infinite value\(s\), the first at index \(1, 3\)"):
        cu.losses.kd_loss(logits(4, 10), with_value(logits(4, 10, seed=1), (1, 3), NAN), LABELS)


def test_kd_loss_refuses_infinite_student_logits():
    with pytest.raises(ValueError, match="student_logits holds 1 NaN or infinite"):
        cu.losses.kd_loss(with_value(logits(4, 10), (0, 0), INF), logits(4, 10, seed=1), LABELS)


def test_kd_loss_warns_when_teacher_logits_are_probabilities():
    with pytest.warns(UserWarning, match="look like probabilities"):
        cu.losses.kd_loss(logits(4, 10), logits(4, 10, seed=1).softmax(-1), LABELS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real logits: no warning
        cu.losses.kd_loss(logits(4, 10), logits(4, 10, seed=1), LABELS)


def test_kd_loss_refuses_a_single_class():
    with pytest.raises(ValueError, match="size >= 2.*one class"):
        cu.losses.kd_loss(logits(4, 1), logits(4, 1, seed=1), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("alpha", [np.float32(0.5), np.float64(0.5), torch.tensor(0.5)])
def test_kd_loss_accepts_numpy_and_tensor_alpha(alpha):
    expected = cu.losses.kd_loss(logits(4, 10), logits(4, 10, seed=1), LABELS, 4.0, 0.5)
    assert torch.allclose(cu.losses.kd_loss(logits(4, 10), logits(4, 10, seed=1), LABELS, 4.0, alpha), expected)


@pytest.mark.parametrize("temperature", [np.float32(4.0), torch.tensor(4.0), np.int64(4)])
def test_kd_loss_accepts_numpy_and_tensor_temperature(temperature):
    expected = cu.losses.kd_loss(logits(4, 10), logits(4, 10, seed=1), LABELS, 4.0, 0.5)
    assert torch.allclose(cu.losses.kd_loss(logits(4, 10), logits(4, 10, seed=1), LABELS, temperature, 0.5), expected)


def test_kd_loss_refuses_a_string_alpha_as_a_type_error():
    with pytest.raises(TypeError, match="alpha must be a number, got str '0.5'"):
        cu.losses.kd_loss(logits(4, 10), logits(4, 10, seed=1), LABELS, alpha="0.5")


def test_soft_targets_refuse_nan_logits():
    with pytest.raises(ValueError, match="logits holds 1 NaN"):
        cu.losses.soft_targets(with_value(logits(2, 10), (0, 2), NAN), 2.0)


@pytest.mark.parametrize("p", [INF, NAN, 0.0])
def test_attention_map_refuses_a_non_finite_or_zero_p(p):
    with pytest.raises(ValueError, match="p must be > 0 and finite"):
        cu.losses.attention_map(logits(2, 4, 3, 3), p=p)


def test_at_loss_refuses_p_infinity():
    with pytest.raises(ValueError, match="p must be > 0 and finite, got inf"):
        cu.losses.at_loss(logits(2, 4, 3, 3), logits(2, 4, 3, 3, seed=1), p=INF)


def test_attention_map_refuses_an_overflowing_p():
    with pytest.raises(ValueError, match="attention map .*overflowed"):
        cu.losses.attention_map(logits(2, 4, 3, 3) * 100, p=50.0)


@pytest.mark.parametrize("loss", [cu.losses.at_loss, cu.losses.hint_loss])
def test_feature_losses_refuse_an_empty_batch(loss):
    with pytest.raises(ValueError, match="student_features is empty"):
        loss(torch.empty(0, 4, 3, 3), torch.empty(0, 4, 3, 3))


@pytest.mark.parametrize("loss", [cu.losses.at_loss, cu.losses.hint_loss])
def test_feature_losses_refuse_nan_features(loss):
    with pytest.raises(ValueError, match="teacher_features holds 1 NaN"):
        loss(logits(2, 4, 3, 3), with_value(logits(2, 4, 3, 3, seed=1), (1, 0, 2, 2), NAN))


def test_hint_adapter_with_the_wrong_input_channels_gets_the_right_numbers():
    with pytest.raises(ValueError, match=r"takes 4 input channels but the student's features have 8.*HintAdapter\(8, 16\)"):
        cu.losses.hint_loss(logits(2, 8, 3, 3), logits(2, 16, 3, 3), adapter=cu.losses.HintAdapter(4, 16))


def test_hint_adapter_with_the_wrong_output_channels_suggests_student_then_teacher_channels():
    with pytest.raises(ValueError, match=r"adapter's output 32, teacher 16.*HintAdapter\(8, 16\)"):
        cu.losses.hint_loss(logits(2, 8, 3, 3), logits(2, 16, 3, 3), adapter=cu.losses.HintAdapter(8, 32))


@pytest.mark.parametrize("channels", [(0, 16), (8, -1)])
def test_hint_adapter_refuses_non_positive_channels(channels):
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        cu.losses.HintAdapter(*channels)


def test_align_spatial_refuses_an_empty_size():
    with pytest.raises(ValueError, match="size .* must be an integer >= 1, got 0"):
        cu.losses.align_spatial(logits(2, 4, 6, 6), (0, 0))


# --- training and evaluation ------------------------------------------------------------------------------------------


@pytest.fixture
def tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), torch.randn(12, 1, 2, 2), torch.arange(12) % 3


def test_fit_refuses_an_empty_loader(tiny):
    model, _, _ = tiny
    with pytest.raises(ValueError, match="yields no batch.*no optimiser step"):
        cu.train.fit(model, [], epochs=1, progress=False)


@pytest.mark.parametrize("max_steps", [0, -1])
def test_fit_refuses_a_run_without_an_optimiser_step(tiny, max_steps):
    model, x, y = tiny
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1.*at least one optimiser step"):
        cu.train.fit(model, cu.data.make_loader(x, y, batch_size=4), epochs=1, max_steps=max_steps, progress=False)


def test_fit_refuses_an_exhausted_loader(tiny):
    model, x, y = tiny

    class Exhausted:
        def __len__(self):
            return 3

        def __iter__(self):
            return iter(())

    with pytest.raises(RuntimeError, match="epoch 1 ran no optimiser step"):
        cu.train.fit(model, Exhausted(), epochs=1, progress=False)


@pytest.mark.parametrize("settings, error, words", [
    ({"lr": NAN}, ValueError, "lr must be > 0 and finite"), ({"lr": -1.0}, ValueError, "lr must be > 0"),
    ({"weight_decay": -1.0}, ValueError, "weight_decay must be >= 0"),
    ({"epochs": 2.5}, TypeError, "epochs must be a whole"),
    ({"seed": -1}, ValueError, "seed must be an integer between 0 and 4294967295"),
    ({"lr_schedule": lambda step, total: NAN}, ValueError, r"lr_schedule\(0, 3\) must be >= 0 and finite"),
])
def test_fit_refuses_bad_settings(tiny, settings, error, words):
    model, x, y = tiny
    arguments = {"epochs": 1, **settings}
    with pytest.raises(error, match=words):
        cu.train.fit(model, cu.data.make_loader(x, y, batch_size=4), progress=False, **arguments)


def test_fit_refuses_empty_validation_data_before_training(tiny):
    model, x, y = tiny
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="val_data images is empty"):
        cu.train.fit(model, cu.data.make_loader(x, y, batch_size=4), epochs=1, val_data=(x[:0], y[:0]), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # refused before any step


def test_fit_refuses_a_loss_that_is_not_a_scalar(tiny):
    model, x, y = tiny
    with pytest.raises(TypeError, match="scalar tensor.*mean"):
        cu.train.fit(model, cu.data.make_loader(x, y, batch_size=4), epochs=1, progress=False,
                     loss_fn=lambda m, batch: m(batch[0]))


def test_fit_refuses_a_model_with_nothing_to_train(tiny):
    model, x, y = tiny
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        cu.train.fit(model, cu.data.make_loader(x, y, batch_size=4), epochs=1, progress=False)


def test_accuracy_refuses_empty_images(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match="images is empty"):
        cu.evaluate.accuracy(model, x[:0], y[:0])


def test_accuracy_refuses_nan_images(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match="images holds 4 NaN"):
        cu.evaluate.accuracy(model, with_value(x, (0,), NAN), y)


def test_accuracy_refuses_unpaired_labels(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match="images has 12 examples but labels has 11"):
        cu.evaluate.accuracy(model, x, y[:11])


def test_predict_logits_refuses_batch_size_zero(tiny):
    model, x, _ = tiny
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        cu.evaluate.predict_logits(model, x, batch_size=0)


@pytest.mark.parametrize("predictions, labels, words", [
    ([0, 12], [0, 1], r"predictions must be class indices in \[0, 9\].*got 12"),
    ([0, 1], [0, -1], r"labels must be class indices in \[0, 9\].*got -1"),
])
def test_confusion_matrix_refuses_out_of_range_classes(predictions, labels, words):
    with pytest.raises(ValueError, match=words):
        cu.evaluate.confusion_matrix(torch.tensor(predictions), torch.tensor(labels), 10)


def test_confusion_matrix_refuses_fractional_predictions():
    with pytest.raises(ValueError, match="integer class indices, got 1.7"):
        cu.evaluate.confusion_matrix(torch.tensor([1.7, 0.0]), torch.tensor([2, 0]), 3)


def test_per_class_accuracy_refuses_an_out_of_range_prediction():
    with pytest.raises(ValueError, match=r"\[0, 2\] \(3 classes\), got 3"):
        cu.evaluate.per_class_accuracy(torch.tensor([3, 0]), torch.tensor([0, 0]), 3)


def test_per_class_accuracy_refuses_empty_input():
    with pytest.raises(ValueError, match="predictions is empty"):
        cu.evaluate.per_class_accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 3)


def test_per_class_accuracy_of_an_absent_class_is_nan_with_a_warning():
    with pytest.warns(UserWarning, match=r"classes \[2\] have no example"):
        result = cu.evaluate.per_class_accuracy(torch.tensor([0, 0, 0]), torch.tensor([0, 0, 1]), 3)
    assert result[0] == 1.0 and result[1] == 0.0 and result[2].isnan()  # was 0.0, as if class 2 were always missed


def test_confusion_matrix_refuses_zero_classes():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        cu.evaluate.confusion_matrix(torch.tensor([0]), torch.tensor([0]), 0)


# --- data -------------------------------------------------------------------------------------------------------------


def test_make_loader_refuses_empty_tensors():
    with pytest.raises(ValueError, match="first tensor is empty"):
        cu.data.make_loader(torch.empty(0, 3), torch.empty(0, dtype=torch.long))


def test_make_loader_refuses_a_list():
    with pytest.raises(TypeError, match="argument 1 is a list.*torch.as_tensor"):
        cu.data.make_loader(torch.zeros(3, 2), [0, 1, 2])


def test_make_loader_refuses_a_fractional_batch_size_and_accepts_a_numpy_one():
    with pytest.raises(TypeError, match="batch_size must be a whole number"):
        cu.data.make_loader(torch.zeros(8, 2), batch_size=2.5)
    assert len(cu.data.make_loader(torch.zeros(8, 2), batch_size=np.int64(4))) == 2


def test_stratified_indices_accept_a_numpy_size():
    assert len(cu.data.stratified_indices(torch.arange(20) % 2, np.int64(6))) == 6


# --- schedule ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["fraction", "lr", "lr_end", "at_weight", "temperature"])
@pytest.mark.parametrize("value", [NAN, INF])
def test_schedule_phase_refuses_non_finite_numbers(key, value):
    phase = {"name": "a", "fraction": 1.0, key: value}
    with pytest.raises(ValueError, match=f"phase 'a': {key} must be a finite number, got {value}"):
        cu.schedule.Schedule([phase], 100)


def test_schedule_accepts_numpy_numbers():
    schedule = cu.schedule.Schedule([{"name": "a", "fraction": np.float32(1.0), "alpha": np.float32(0.5)}], np.int64(10))
    assert schedule.total_steps == 10 and schedule.value("alpha", 3) == 0.5


def test_difficulty_order_refuses_nan_logits():
    with pytest.raises(ValueError, match="teacher_logits holds 1 NaN"):
        cu.schedule.difficulty_order(with_value(logits(4, 3), (2, 1), NAN))


def test_cache_attention_maps_refuses_empty_images(tiny):
    model, x, _ = tiny
    with pytest.raises(ValueError, match="images is empty"):
        cu.schedule.cache_attention_maps(model, x[:0], ["1"])


# --- language model ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt() -> cu.language.GPT:
    return cu.language.create("lm-student-s", seed=0).eval()


@pytest.mark.parametrize("token", [200, -1])
def test_gpt_refuses_ids_outside_the_vocabulary(gpt, token):
    with pytest.raises(ValueError, match=rf"token id {token}, outside the vocabulary \[0, 95\]"):
        gpt(torch.tensor([[1, token]]))


def test_gpt_refuses_a_1d_input_and_says_how_to_add_the_batch_axis(gpt):
    with pytest.raises(ValueError, match=r"must be \(B, T\).*got shape \(8,\).*idx\[None\]"):
        gpt(torch.arange(8))


def test_gpt_refuses_float_ids(gpt):
    with pytest.raises(TypeError, match="integer token ids"):
        gpt(torch.zeros(1, 4))


@pytest.mark.parametrize("settings, error, words", [
    ({"max_new_tokens": 0}, ValueError, "max_new_tokens must be an integer >= 1"),
    ({"top_k": 0}, ValueError, "top_k must be an integer >= 1"),
    ({"temperature": NAN}, ValueError, "temperature must be >= 0 and finite, got nan"),
    ({"stop_id": 96}, ValueError, "stop_id must be an integer between 0 and 95"),
])
def test_generate_refuses_bad_settings(gpt, settings, error, words):
    arguments = {"max_new_tokens": 3, "seed": 0, **settings}
    with pytest.raises(error, match=words):
        cu.language.generate(gpt, torch.tensor([[1, 2]]), **arguments)


def test_generate_refuses_a_prompt_outside_the_vocabulary(gpt):
    with pytest.raises(ValueError, match="prompt_ids holds the token id 500"):
        cu.language.generate(gpt, torch.tensor([[500]]), 2)


@pytest.mark.parametrize("settings, words", [({"n_tokens": 0}, "n_tokens must be"), ({"repeats": 0}, "repeats must be"),
                                             ({"prompt": ""}, "prompt is empty")])
def test_latency_per_token_refuses_empty_work(gpt, settings, words):
    with pytest.raises(ValueError, match=words):
        cu.export.latency_per_token(gpt, **{"n_tokens": 2, "repeats": 1, **settings})


def test_bits_per_char_refuses_ids_outside_the_vocabulary(gpt):
    with pytest.raises(ValueError, match="ids holds the token id 300"):
        cu.language.bits_per_char(gpt, torch.full((100,), 300))


def test_bits_per_char_refuses_batch_size_zero(gpt):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        cu.language.bits_per_char(gpt, torch.randint(0, 96, (100,)), batch_size=0)


def test_transfer_windows_refuse_a_fraction_above_one():
    transfer = {"text_windows": torch.randint(0, 96, (10, 33)), "additions": torch.randint(0, 96, (100,))}
    with pytest.raises(ValueError, match=r"addition_fraction must be in \[0, 1\], got 1.5"):
        cu.language.transfer_windows(transfer, 8, 32, 1.5, torch.Generator().manual_seed(0))


def test_random_windows_refuse_a_negative_count():
    with pytest.raises(ValueError, match="number of windows.*>= 0, got -1"):
        cu.language.random_windows(torch.arange(50), -1, 8, torch.Generator())


def test_decode_refuses_float_ids_and_accepts_numpy_ints():
    with pytest.raises(TypeError, match="token ids must be integers, got float"):
        cu.language.decode([1.5])
    assert cu.language.decode(np.array([34, 35])) == cu.language.VOCAB[34:36]


# --- vibration --------------------------------------------------------------------------------------------------------


def test_vibration_labels_given_as_fractions_are_refused_not_truncated():
    with pytest.raises(ValueError, match="integer class indices, got 0.7.*nothing is truncated"):
        cu.vibration.generate([0.7, 2.2])


def test_vibration_labels_given_as_whole_floats_are_accepted():
    assert cu.vibration.generate([1.0, 2.0]).labels.tolist() == [1, 2]


@pytest.mark.parametrize("content, words", [
    ("# sample_rate=12000\n0.1\n0.2\nabc\n0.3\n", r"bad.csv, line 4: 'abc' is not a number"),
    ("# sample_rate=fast\n0.1\n", r"bad.csv, line 1: 'fast' is not a number \(the sample rate"),
    ("# sample_rate=12000\n0.1\n0.2,0.3\n", "bad.csv, line 3: expected one value per line"),
    ("# sample_rate=12000\n", "bad.csv holds no samples"),
])
def test_load_recording_names_the_file_and_line_of_a_bad_csv(tmp_path, content, words):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(ValueError, match=words):
        cu.vibration.load_recording(tmp_path / "bad.csv")


@pytest.mark.parametrize("signal, words", [(np.full(64, np.nan), "signal holds 64 NaN"), (np.zeros(0), "signal is empty")])
def test_envelope_spectrum_refuses_nan_and_empty_signals(signal, words):
    with pytest.raises(ValueError, match=words):
        cu.vibration.envelope_spectrum(signal, 1000.0)


@pytest.mark.parametrize("settings, words", [({"speed_hz": NAN}, "speed_hz holds 1 NaN"),
                                             ({"load": -0.5}, "load must be >= 0")])
def test_vibration_generate_refuses_bad_operating_conditions(settings, words):
    with pytest.raises(ValueError, match=words):
        cu.vibration.generate([1], **settings)


def test_defect_frequencies_refuse_nan():
    with pytest.raises(ValueError, match="shaft_hz holds 1 NaN"):
        cu.vibration.defect_frequencies(NAN)


@pytest.mark.parametrize("signal, rate, words", [(np.array([1.0, np.nan]), 1000.0, "signal holds 1 NaN"),
                                                 (np.ones(10), 0.0, "sample_rate must be > 0")])
def test_save_recording_refuses_what_load_recording_would_refuse(tmp_path, signal, rate, words):
    with pytest.raises(ValueError, match=words):
        cu.vibration.save_recording(tmp_path / "r.npz", signal, rate)
    assert not (tmp_path / "r.npz").exists()


@pytest.mark.parametrize("call, error, words", [
    (lambda: cu.vibration.make_dataset(2.5), TypeError, "n_per_class must be a whole number"),
    (lambda: cu.vibration.to_windows(np.zeros(100), 20.0), TypeError, "window must be a whole number"),
    (lambda: cu.vibration.to_windows(np.zeros(100), 20, hop=0), ValueError, "hop must be an integer >= 1"),
])
def test_vibration_counts_must_be_whole_numbers(call, error, words):
    with pytest.raises(error, match=words):
        call()


# --- widgets, config, report ------------------------------------------------------------------------------------------


def _never_called(**values):
    raise AssertionError("the static figure must not be drawn for refused controls")


@pytest.mark.parametrize("defaults, controls, words", [
    ({"x": 30}, {"x": (0, 20)}, r"default x = 30 lies outside its slider's range \[0, 20\]"),
    ({"x": "c"}, {"x": ["a", "b"]}, "not one of the dropdown's options"),
    ({}, {"x": (5, 1)}, "needs low < high"),
    ({"y": 3}, {"x": (0, 2)}, r"defaults names \['y'\], which have no control"),
    ({"x": 9}, {"x": {"one": 1, "two": 2}}, "not one of the dropdown's options"),
])
def test_explore_refuses_a_default_the_widget_would_not_show(defaults, controls, words):
    with pytest.raises(ValueError, match=words):
        cu.widgets.explore(_never_called, defaults=defaults, **controls)


@pytest.mark.parametrize("value", ["2", "quick", "ture"])
def test_an_unrecognised_course_quick_value_is_an_error(monkeypatch, value):
    monkeypatch.setenv("COURSE_QUICK", value)
    with pytest.raises(ValueError, match=f"COURSE_QUICK='{value}' is not understood"):
        cu.config.quick_mode()


@pytest.mark.parametrize("value, quick", [("1", True), ("TRUE", True), (" on ", True), ("0", False), ("no", False),
                                          ("", False)])
def test_recognised_course_quick_values(monkeypatch, value, quick):
    monkeypatch.setenv("COURSE_QUICK", value)
    assert cu.config.quick_mode() is quick


def test_seeds_refuse_zero():
    with pytest.raises(ValueError, match="n_default must be an integer >= 1"):
        cu.config.seeds(0, 1)


def test_record_refuses_nan_and_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr(cu.config, "REPO_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"values\['scores'\]\[1\] = nan"):
        cu.report.record("99_test", {"scores": [0.5, NAN]})
    assert not (tmp_path / "results").exists()


def test_load_precomputed_names_an_invalid_json_file(tmp_path):
    (tmp_path / "sweep.json").write_text("{not json")
    with pytest.raises(ValueError, match="sweep.json is not valid JSON.*python -m course_utils.cli.kd_sweep"):
        cu.report.load_precomputed(tmp_path / "sweep.json", "python -m course_utils.cli.kd_sweep", "an hour")


def test_plot_confusion_refuses_a_matrix_that_does_not_fit_the_class_names():
    with pytest.raises(ValueError, match=r"confusion matrix \(7, 7\) must be square with one row per class name \(10"):
        cu.plotting.plot_confusion(torch.zeros(7, 7, dtype=torch.long), cu.images.CLASS_NAMES)  # 7 classes, 10 names


def test_plot_distribution_refuses_logits():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*not the logits"):
        cu.plotting.plot_distribution(logits(10) * 5, cu.images.CLASS_NAMES)


def test_show_images_refuses_labels_that_do_not_pair_up():
    with pytest.raises(ValueError, match="images has 4 examples but labels has 3"):
        cu.plotting.show_images(torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 2]))


def test_capture_says_when_a_hooked_module_did_not_run():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with cu.hooks.capture(model, ["0"]) as features:
        pass
    with pytest.raises(KeyError, match="'0' is hooked but produced no output"):
        features["0"]
    with pytest.raises(KeyError, match=r"'1' was not captured; the captured paths are \['0'\]"):
        features["1"]


# --- ONNX: a hand-built graph (no export), its card, the runner and the benchmark -------------------------------------


@pytest.fixture
def onnx_file(tmp_path):
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "weight")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "weight"], ["logits"])], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [weight])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    cu.export.write_card(path, made_by="test")
    return path


def test_an_onnx_file_changed_after_its_card_was_written_is_refused(onnx_file):
    assert cu.export.read_card(onnx_file)["made_by"] == "test"
    proto = onnx.load(str(onnx_file))
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((4, 3), np.float32), "weight"))
    onnx.save(proto, str(onnx_file))  # still a valid model, with other weights
    with pytest.raises(cu.export.OnnxFileError, match="does not match its card tiny.onnx.json"):
        cu.export.load_session(onnx_file)
    with pytest.raises(cu.export.OnnxFileError, match="does not match its card"):
        cu.export.onnx_accuracy(onnx_file, np.zeros((2, 4), np.float32), np.zeros(2, np.int64))
    assert cu.export.load_session(onnx_file, verify=False) is not None  # an explicit opt-out still loads


def test_a_broken_card_is_reported(onnx_file):
    cu.export.card_path(onnx_file).write_text("{}")
    with pytest.raises(cu.export.OnnxFileError, match="not a valid ONNX model card"):
        cu.export.load_session(onnx_file)


def test_run_session_refuses_batch_size_zero(onnx_file):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        cu.export.run_session(cu.export.load_session(onnx_file), np.zeros((5, 4), np.float32), batch_size=0)


def test_run_session_refuses_empty_inputs(onnx_file):
    with pytest.raises(ValueError, match="inputs is empty"):
        cu.export.onnx_accuracy(onnx_file, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))


def test_run_session_refuses_nan_inputs(onnx_file):
    with pytest.raises(ValueError, match="inputs holds 1 NaN"):
        cu.export.run_session(cu.export.load_session(onnx_file), with_value(torch.zeros(3, 4), (2, 1), NAN))


def test_load_session_accepts_a_numpy_thread_count(onnx_file):
    assert cu.export.load_session(onnx_file, threads=np.int64(1)).get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("target", ["model", "path"])
def test_benchmark_refuses_zero_threads(onnx_file, target):
    model = nn.Linear(4, 3) if target == "model" else onnx_file
    with pytest.raises(ValueError, match="each of threads must be an integer >= 1, got 0"):
        cu.export.benchmark(model, (4,), batch_sizes=(1,), threads=(0,), warmup=0, runs=1)


def test_benchmark_refuses_an_empty_example_shape():
    with pytest.raises(ValueError, match="example shape must be an integer >= 1, got 0"):
        cu.export.benchmark(nn.Linear(4, 3), (0,), batch_sizes=(1,), threads=(1,), warmup=0, runs=1)


def test_benchmark_accepts_numpy_batch_sizes(onnx_file):
    result = cu.export.benchmark(onnx_file, (4,), batch_sizes=(np.int64(2),), threads=(1,), warmup=0, runs=1)
    assert result.rows[0].batch_size == 2


def test_quantize_static_refuses_calibration_data_with_a_nan(onnx_file, tmp_path):
    calibration = with_value(torch.randn(16, 4), (3, 1), NAN)
    with pytest.raises(ValueError, match=r"calibration set holds 1 NaN or infinite value\(s\), the first at index \(3, 1\)"):
        cu.export.quantize_static(onnx_file, tmp_path / "int8.onnx", calibration)


def test_quantize_static_refuses_a_percentile_above_100(onnx_file, tmp_path):
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\], got 150"):
        cu.export.quantize_static(onnx_file, tmp_path / "int8.onnx", torch.randn(16, 4), method="percentile",
                                  percentile=150.0)


@pytest.mark.parametrize("call", [lambda: cu.export.fake_quantize(torch.ones(3), 0.1, 0, 5, 5),
                                  lambda: cu.export.affine_parameters(torch.tensor(-1.0), torch.tensor(1.0), 5, 5)])
def test_quantization_grid_needs_q_min_below_q_max(call):
    with pytest.raises(ValueError, match=r"q_min \(5\) must be below q_max \(5\)"):
        call()


def test_fake_quantize_refuses_a_zero_scale():
    with pytest.raises(ValueError, match="scale must be > 0"):
        cu.export.fake_quantize(torch.ones(3), 0.0, 0, 0, 255)


# --- command-line programs stop at their arguments, before any work ---------------------------------------------------


@pytest.mark.parametrize("main, argv, words", [
    (train_teacher.main, ["--epochs", "0"], "--epochs: expected a positive integer"),
    (train_teacher.main, ["--batch-size", "0"], "--batch-size: expected a positive integer"),
    (train_teacher.main, ["--lr", "-1"], "--lr: expected a finite number > 0"),
    (train_teacher.main, ["--threads", "0"], "--threads: expected a positive integer"),
    (train_teacher.main, ["--seed", "-1"], "--seed: expected an integer >= 0"),
    (train_lm_teacher.main, ["--steps", "0"], "--steps: expected a positive integer"),
    (train_lm_teacher.main, ["--block-size", "4"], "--block-size 4 is shorter than the transfer set's 8-character"),
    (train_lm_teacher.main, ["--addition-fraction", "2"], r"--addition-fraction: expected a number in \[0, 1\]"),
    (train_lm_teacher.main, ["--lr", "nan"], "--lr: expected a finite number > 0"),
    (lm_sweep.main, ["--epochs", "0"], "--epochs: expected a positive integer"),
    (lm_sweep.main, ["--alpha", "1.5"], r"--alpha: expected a number in \[0, 1\]"),
    (lm_sweep.main, ["--temperature", "nan"], "--temperature: expected a finite number > 0"),
    (lm_sweep.main, ["--students", "bogus"], "--students: invalid choice: 'bogus'"),
    (lm_sweep.main, ["--steps", "1", "--epochs", "4"], "fewer windows than one batch"),
    (build_corpus.main, ["--max-bytes", "0"], "--max-bytes: expected a positive integer"),
    (build_corpus.main, ["--stdlib", "/no/such/folder"], "is not an existing folder"),
])
def test_command_line_programs_refuse_bad_arguments(capsys, main, argv, words):
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--out", "/nonexistent/never-written"])
    assert stopped.value.code == 2
    assert re.search(words, capsys.readouterr().err)


def test_build_corpus_refuses_to_write_an_empty_corpus(tmp_path):
    (tmp_path / "empty_lib").mkdir()
    with pytest.raises(SystemExit, match="no docstring was extracted"):
        build_corpus.main(["--stdlib", str(tmp_path / "empty_lib"), "--out", str(tmp_path / "corpus.txt")])
    assert not (tmp_path / "corpus.txt").exists()


def test_write_precomputed_round_trips_through_load_precomputed(tmp_path):
    result = {"command": "python -m course_utils.cli.kd_sweep", "seeds": [100, 101], "rows": [{"mean": 0.5}]}
    path = cu.report.write_precomputed(tmp_path / "new" / "folder" / "sweep.json", result)
    assert path.is_file() and path.read_text().endswith("\n")
    assert cu.report.load_precomputed(path, "python -m course_utils.cli.kd_sweep", "an hour") == result
