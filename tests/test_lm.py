"""Notebook 08: the docstring corpus, the addition probe, the per-position distillation loss, generation and export."""

from __future__ import annotations

import json
import math
import warnings
import zlib

import numpy as np
import pytest
import torch

import course_utils as cu
from course_utils import language

TINY = language.GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=16)


def tiny_model(seed: int = 0) -> language.GPT:
    torch.manual_seed(seed)
    return language.GPT(TINY).eval()


# --- corpus ------------------------------------------------------------------------------------------------------

def test_corpus_checksum_and_split():
    corpus = language.load_corpus()
    assert 1_000_000 <= len(corpus) <= 5_000_000
    assert cu.checkpoints.sha256(language.corpus_path()) == language.CORPUS_SHA256
    assert corpus.startswith("## ")
    assert set(corpus) <= set(language.VOCAB)
    train_text, val_text = language.split_corpus(corpus, val_fraction=0.1)
    assert train_text + val_text == corpus
    assert val_text.startswith("## ") and train_text.endswith("\n")
    assert 0.08 < len(val_text) / len(corpus) < 0.12


def test_corpus_tampered_or_missing(tmp_path):
    copy = tmp_path / language.CORPUS_FILE
    copy.write_bytes(language.corpus_path().read_bytes()[:-1] + b"!")
    with pytest.raises(language.CorpusError, match="sha256"):
        language.load_corpus(copy)
    assert language.load_corpus(copy, verify=False).endswith("!")
    with pytest.raises(language.CorpusError, match="not found"):
        language.load_corpus(tmp_path / "missing.txt")


def test_encode_decode_round_trip_and_errors():
    sample = "## json.dumps\nSerialize ``obj`` to a JSON formatted ``str``.\n"
    ids = language.encode(sample)
    assert ids.dtype == torch.long and len(language.VOCAB) == 96
    assert language.decode(ids) == sample
    assert language.encode("\n A").tolist() == [0, 1, 34]  # newline, space (32 -> 1), 'A' (65 -> 34)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        language.encode("caf\u00e9")
    with pytest.raises(ValueError, match="token ids"):
        language.decode([96])


# --- the addition probe ------------------------------------------------------------------------------------------

def test_format_and_read_answer():
    assert language.format_addition(482, 319) == ("482+319=", "108")  # 801 written least significant digit first
    assert language.format_addition(482, 319, reverse=False) == ("482+319=", "801")
    assert language.format_addition(5, 5) == ("5+5=", "01")
    assert language.read_answer("108\n999") == 801
    assert language.read_answer("01") == 10
    assert language.read_answer("801", reverse=False) == 801
    assert language.read_answer("1a\n") is None and language.read_answer("\n") is None
    with pytest.raises(ValueError, match="non-negative"):
        language.format_addition(-1, 2)


def test_addition_text_sums_are_correct_and_never_held_out():
    lines = language.addition_text(2000, digits=(1, 2, 3), seed=3).splitlines()
    assert len(lines) == 2000
    for line in lines:
        left, answer = line.split("=")
        a, b = map(int, left.split("+"))
        assert int(answer[::-1]) == a + b
        assert max(len(str(a)), len(str(b))) <= 3
        assert not language.is_held_out(a, b)
    assert language.addition_text(50, seed=1) == language.addition_text(50, seed=1)


def test_held_out_split():
    assert language.is_held_out(482, 319) == (zlib.crc32(b"482+319") % 1000 < 100)
    share = np.mean([language.is_held_out(a, b) for a in range(100, 200) for b in range(300, 400)])
    assert 0.07 < share < 0.13
    for digits in (1, 2, 3, 4):
        test = language.sample_additions(100, digits, "test", seed=0)
        train = language.sample_additions(100, digits, "train", seed=0)
        assert all(language.is_held_out(a, b) for a, b in test)
        assert not any(language.is_held_out(a, b) for a, b in train)
        assert all(len(str(a)) == digits and len(str(b)) == digits for a, b in test + train)
        assert len(set(test)) == len(test)
    assert 0 < len(language.sample_additions(100, 1, "test")) < 100  # only ~10 one-digit problems are held out
    with pytest.raises(ValueError, match="split"):
        language.sample_additions(10, 2, "val")
    with pytest.raises(ValueError, match="positive"):
        language.sample_additions(10, 0, "test")


def test_transfer_windows():
    transfer = {"text_windows": torch.arange(90).reshape(10, 9), "additions": torch.arange(1000, 1100)}
    x, y = language.transfer_windows(transfer, 20, 8, 0.25, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (20, 8) and torch.equal(y[:, :-1], x[:, 1:])
    assert (x >= 1000).all(dim=1).sum() == 5
    with pytest.raises(ValueError, match="block_size"):
        language.transfer_windows(transfer, 20, 16, 0.25, torch.Generator())


def test_windows():
    ids = torch.arange(100)
    x, y = language.random_windows(ids, 5, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8)
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    x, y = language.mixed_windows(ids, ids + 1000, 10, 8, 0.3, torch.Generator().manual_seed(0))
    assert (x >= 1000).all(dim=1).sum() == 3
    with pytest.raises(ValueError, match="longer than block_size"):
        language.random_windows(ids[:8], 1, 8, torch.Generator())


# --- the per-position distillation loss ---------------------------------------------------------------------------

def test_per_position_kd_loss_hand_computed():
    # position 0: teacher softmax = (1/4, 1/4, 1/2), student uniform -> KL = 0.5 ln(3/4) + 0.5 ln(3/2) = 0.5 ln(9/8)
    # position 1: student equals teacher -> KL = 0. The loss averages over positions (and the batch).
    teacher = torch.tensor([[[0.0, 0.0, math.log(2)], [0.0, 0.0, math.log(2)]]])  # (B=1, T=2, C=3)
    student = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, math.log(2)]]])
    kl0 = 0.5 * math.log(9 / 8)
    assert cu.losses.kd_loss(student, teacher, None, temperature=1.0, alpha=1.0).item() == pytest.approx(kl0 / 2, rel=1e-5)
    # T = 2 with both logits doubled gives the same distributions; the T^2 factor multiplies the KL by 4
    assert cu.losses.kd_loss(2 * student, 2 * teacher, None, temperature=2.0, alpha=1.0).item() == pytest.approx(
        4 * kl0 / 2, rel=1e-5)
    # alpha = 0: cross-entropy per position, averaged: targets 2 and 0 -> (ln 3 + ln 4) / 2
    targets = torch.tensor([[2, 0]])
    assert cu.losses.kd_loss(student, teacher, targets, temperature=1.0, alpha=0.0).item() == pytest.approx(
        (math.log(3) + math.log(4)) / 2, rel=1e-5)


# --- the model, bits per character and generation -----------------------------------------------------------------

def test_model_shapes_sizes_and_errors():
    model = tiny_model()
    assert model(torch.zeros(3, 16, dtype=torch.long)).shape == (3, 16, 96)
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    teacher = cu.evaluate.count_parameters(language.create("lm-teacher"))
    assert 500_000 <= teacher <= 2_000_000
    for name in ("lm-student-s", "lm-student-m", "lm-student-l", "lm-student-xl"):
        assert 5 <= teacher / cu.evaluate.count_parameters(language.create(name)) <= 30
    with pytest.raises(cu.checkpoints.UnknownModelError, match="unknown language model 'lm-student-xxl'.*'lm-student-s'"):
        language.create("lm-student-xxl")
    with pytest.raises(KeyError):  # UnknownModelError is a KeyError; the old names are gone
        language.create("student-s")
    short = language.create("lm-student-s", seed=0, block_size=16)  # the students take the teacher's context
    assert short.cfg.block_size == 16 and short.pos_emb.weight.shape == (16, 32)
    count = cu.evaluate.count_parameters
    assert count(language.create("lm-student-s")) - count(short) == (32 - 16) * 32
    with pytest.raises(ValueError, match="block_size"):
        language.create("lm-student-s", block_size=0)


def test_causality():
    model = tiny_model()
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, 8] = (ids[0, 8] + 1) % 96
    with torch.no_grad():
        assert torch.allclose(model(ids)[0, :8], model(changed)[0, :8], atol=1e-6)
        assert not torch.allclose(model(ids)[0, 8:], model(changed)[0, 8:])


def test_bits_per_char_of_a_uniform_model_is_log2_vocab():
    model = tiny_model()
    with torch.no_grad():
        model.tok_emb.weight.zero_()  # the tied head then outputs zero logits: the uniform distribution
    ids = torch.randint(0, 96, (200,), generator=torch.Generator().manual_seed(0))
    assert language.bits_per_char(model, ids) == pytest.approx(math.log2(96), rel=1e-6)
    with pytest.raises(ValueError, match="more than block_size"):
        language.bits_per_char(model, ids[:10])


def test_generation_is_deterministic_by_seed():
    model = tiny_model()
    prompt = language.encode("## os.path\n")[None, :].repeat(2, 1)
    first = language.generate(model, prompt, 30, temperature=1.0, seed=7)
    assert first.shape == (2, 30)
    assert torch.equal(first, language.generate(model, prompt, 30, temperature=1.0, seed=7))
    assert not torch.equal(first, language.generate(model, prompt, 30, temperature=1.0, seed=8))
    greedy = language.generate(model, prompt, 30, temperature=0, seed=1)
    assert torch.equal(greedy, language.generate(model, prompt, 30, temperature=0, seed=2))
    completion = language.complete(model, "def ", 20, temperature=0.8, seed=3)
    assert completion == language.complete(model, "def ", 20, temperature=0.8, seed=3)
    with pytest.raises(ValueError, match="temperature"):
        language.generate(model, prompt, 3, temperature=-1)
    with pytest.raises(ValueError, match=r"\(B, T0\)"):
        language.generate(model, prompt[0], 3)


def test_generate_stops_and_top_k():
    model = tiny_model()
    prompt = language.encode("1+2=")[None, :]
    out = language.generate(model, prompt, 10, temperature=1.0, top_k=1, seed=0)
    assert torch.equal(out, language.generate(model, prompt, 10, temperature=0))  # top-1 sampling is greedy
    with torch.no_grad():
        model.tok_emb.weight[0] *= 10.0  # newline's (tied) row becomes the longest, and the final layer norm
        model.ln_f.weight.zero_()  # outputs that row at every position: newline (id 0) always wins
        model.ln_f.bias.copy_(model.tok_emb.weight[0])
    assert language.generate(model, prompt, 10, temperature=0, stop_id=0).tolist() == [[0]]
    assert language.addition_answers(model, [(1, 2)]) == [None]
    with pytest.raises(ValueError, match="empty"):
        language.addition_accuracy(model, [])


# --- the shipped teacher's checksum -------------------------------------------------------------------------------

def test_load_teacher_verifies_checksum(tmp_path):
    model = tiny_model()
    weights = tmp_path / "lm_teacher.pt"
    torch.save(model.state_dict(), weights)
    card = {"config": language.config_dict(model), "weights_file": weights.name, "sha256": cu.checkpoints.sha256(weights)}
    (tmp_path / language.TEACHER_CARD).write_text(json.dumps(card))
    loaded = language.load_teacher(tmp_path)
    ids = torch.randint(0, 96, (2, 16))
    assert torch.equal(loaded(ids), model(ids)) and not loaded.training
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(cu.checkpoints.CheckpointError, match="does not match"):
        language.load_teacher(tmp_path)
    with pytest.raises(cu.checkpoints.CheckpointError, match="train_lm_teacher"):
        language.teacher_card(tmp_path / "nowhere")


def test_shipped_lm_teacher_matches_its_card():
    teacher, card = language.load_teacher(), language.teacher_card()
    exact = card["addition_exact_match_by_digits"]
    for digits in (2, 4):  # a trained length and an unseen one, re-measured as the card measured them
        problems = language.sample_additions(200, digits, "test", seed=1)
        assert language.addition_accuracy(teacher, problems) == pytest.approx(exact[str(digits)], abs=0.02)
    assert min(exact[d] for d in ("1", "2", "3")) >= 0.9  # the probe has a skill for the students to inherit


def test_learning_rate_schedule():
    from course_utils.cli.train_lm_teacher import lr_at

    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.1)


# --- export parity ------------------------------------------------------------------------------------------------

def _export_quickly(model: language.GPT, path) -> str:
    """The TorchScript exporter: about 1 s instead of the ~15 s fixed cost of ``cu.export.export_onnx``'s dynamo path.

    These tests check the ONNX wrapper ``cu.export.OnnxLM`` and dynamic INT8 of a transformer; the notebook, executed by CI,
    exports a student with ``cu.export.export_onnx`` itself.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 8, dtype=torch.long),), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch", 1: "sequence"}})
    return str(path)


def test_export_parity_fp32_and_int8(tmp_path):
    model = tiny_model()
    path = _export_quickly(model, tmp_path / "lm.onnx")
    session = cu.export.load_session(path, threads=1)
    for length in (3, 16):
        ids = torch.randint(0, 96, (3, length), generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            expected = model(ids).numpy()
        assert np.abs(cu.export.run_session(session, ids.numpy()) - expected).max() < 1e-4
    prompt = language.encode("## re\n")[None, :]
    onnx_model = cu.export.OnnxLM(session, TINY)
    assert torch.equal(language.generate(onnx_model, prompt, 12, temperature=0),
                       language.generate(model, prompt, 12, temperature=0))
    long_ids = torch.randint(0, 96, (40,), generator=torch.Generator().manual_seed(0))
    assert language.bits_per_char(onnx_model, long_ids) == pytest.approx(language.bits_per_char(model, long_ids), rel=1e-5)
    assert cu.export.latency_per_token(onnx_model, "## ", n_tokens=4, repeats=1) > 0
    int8 = cu.export.quantize_dynamic(path, tmp_path / "lm_int8.onnx")
    assert cu.export.model_size(int8) < cu.export.model_size(path)
    int8_logits = cu.export.run_session(cu.export.load_session(int8, threads=1), ids.numpy())
    assert np.abs(int8_logits - expected).max() < 0.1 * np.abs(expected).max() + 0.05
    with pytest.raises(cu.export.OnnxFileError, match="does not exist"):
        cu.export.quantize_dynamic(tmp_path / "missing.onnx", tmp_path / "x.onnx")


# --- a student made of the teacher's layers (DistilBERT) ----------------------------------------------------------

def test_student_from_teacher_copies_the_chosen_layers():
    torch.manual_seed(0)
    teacher = language.GPT(language.GPTConfig(block_size=16, n_layer=4, n_head=2, n_embd=16)).eval()
    student = language.student_from_teacher(teacher, [0, 2]).eval()
    assert student.cfg.n_layer == 2 and student.cfg.n_embd == 16 and student.head.weight is student.tok_emb.weight
    ids = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the student is the teacher with blocks 1 and 3 left out
        x = teacher.tok_emb(ids) + teacher.pos_emb(torch.arange(10))
        expected = teacher.head(teacher.ln_f(teacher.blocks[2](teacher.blocks[0](x))))
        assert torch.allclose(student(ids), expected, atol=1e-6)
        assert not torch.allclose(student(ids), teacher(ids), atol=1e-3)
        student.blocks[0].attn.qkv.weight.add_(1.0)  # copies, not shared tensors
    assert not torch.allclose(student.blocks[0].attn.qkv.weight, teacher.blocks[0].attn.qkv.weight)
    count = cu.evaluate.count_parameters
    assert count(teacher) - count(student) == 2 * count(teacher.blocks[0])
    for bad in ([], [4], [-1]):
        with pytest.raises(ValueError, match="block indices"):
            language.student_from_teacher(teacher, bad)


# --- the precomputed size ladder ----------------------------------------------------------------------------------

def _ladder(complete: bool = True) -> dict:
    row = {"student": "lm-student-s", "method": "token KD", "parameters": 100, "n_layer": 2, "n_embd": 32, "seeds": [0, 1],
           "bits_per_char": [3.0, 3.2], "exact_match": {"1": [0.5, 1.0], "2": [0.0, 0.0]}}
    return {"settings": {"seeds": [0, 1]}, "complete": complete, "rows": [row]}


def test_ladder_cells_summarise_per_seed_values(tmp_path):

    path = tmp_path / "ladder.json"
    path.write_text(json.dumps(_ladder()))
    cells = language.ladder_cells(language.load_ladder(path))
    cell = cells["lm-student-s", "token KD"]
    assert cell["shape"] == "2 layers x 32" and cell["parameters"] == 100
    assert cell["bits_per_char"]["mean"] == pytest.approx(3.1) and cell["bits_per_char"]["values"] == [3.0, 3.2]
    assert cell["exact_match"][1]["mean"] == pytest.approx(0.75) and set(cell["exact_match"]) == {1, 2}
    path.write_text(json.dumps(_ladder(complete=False)))
    with pytest.raises(ValueError, match="--resume"):
        language.load_ladder(path)
    with pytest.raises(FileNotFoundError, match="lm_sweep"):
        language.load_ladder(tmp_path / "missing.json")


def test_shipped_ladder_is_complete_over_seeds_and_matches_the_teacher():

    ladder = language.load_ladder()
    assert ladder["teacher_sha256"] == language.teacher_card()["sha256"]
    seeds = ladder["settings"]["seeds"]
    assert len(seeds) >= 3
    cells = {(row["student"], row["method"]) for row in ladder["rows"]}
    students = [name for name in language.CONFIGS if name != "lm-teacher"]
    assert cells == {(name, method) for name in students for method in language.LADDER_METHODS}
    for row in ladder["rows"]:
        assert row["seeds"] == seeds and len(row["bits_per_char"]) == len(seeds)
        assert all(len(values) == len(seeds) for values in row["exact_match"].values())


@pytest.mark.parametrize("argv, words", [(["--seeds", "-1"], "--seeds: expected an integer >= 0"),
                                         (["--seeds", "1", "1"], "repeats a seed")])
def test_lm_sweep_refuses_bad_seeds(capsys, argv, words):
    from course_utils.cli import lm_sweep

    with pytest.raises(SystemExit) as stopped:
        lm_sweep.main([*argv, "--out", "/nonexistent/never-written"])
    assert stopped.value.code == 2 and words in capsys.readouterr().err
