"""Tests for the vibration generator, its recording loader, the 1-D models and the capstone pipeline (notebook 07)."""

import math

import numpy as np
import pytest
import torch

import course_utils as cu
from course_utils import export, losses, train, vibration


def test_defect_frequencies_match_hand_computed_values_for_the_6205():
    # d/D = 7.94 / 39.04 = 0.203381; n = 9; f_r = 30 Hz
    freqs = vibration.defect_frequencies(30.0)
    ratio = 7.94 / 39.04
    assert float(freqs["bpfo"]) == pytest.approx(4.5 * 30 * (1 - ratio))          # 107.54 Hz
    assert float(freqs["bpfi"]) == pytest.approx(4.5 * 30 * (1 + ratio))          # 162.46 Hz
    assert float(freqs["bsf"]) == pytest.approx(39.04 / 15.88 * 30 * (1 - ratio**2))  # 70.70 Hz
    assert float(freqs["ftf"]) == pytest.approx(15 * (1 - ratio))                  # 11.95 Hz
    assert float(freqs["bpfo"]) == pytest.approx(107.54, abs=0.01)
    assert float(freqs["bpfo"] + freqs["bpfi"]) == pytest.approx(9 * 30)          # BPFO + BPFI = n f_r
    with pytest.raises(ValueError, match="positive"):
        vibration.defect_frequencies(0.0)
    with pytest.raises(ValueError, match="fault must be one of"):
        vibration.impact_rate("cage", 30.0)


def test_generator_shapes_labels_and_determinism():
    data = vibration.make_dataset(3, seed=5)
    window = vibration.MachineConfig().window
    assert data.signals.shape == (21, 1, window) and data.signals.dtype == torch.float32
    assert sorted(data.labels.tolist()) == sorted(list(range(7)) * 3)
    assert len(vibration.CLASS_NAMES) == 7 and vibration.CLASS_NAMES[0] == "healthy"
    assert torch.all((data.fault_hz == 0) == (data.labels == 0))              # only healthy machines have no impacts
    low, high = vibration.MachineConfig().speed_hz
    assert torch.all((data.speed_hz >= low) & (data.speed_hz <= high))
    again = vibration.make_dataset(3, seed=5)
    assert torch.equal(data.signals, again.signals) and torch.equal(data.labels, again.labels)
    other = vibration.make_dataset(3, seed=6)
    assert not torch.equal(data.signals, other.signals)
    part = data.subset(data.labels == 0)
    assert len(part) == 3 and part.signals.shape[1:] == (1, window)
    with pytest.raises(ValueError, match="class indices"):
        vibration.generate([7])


def test_fault_rate_follows_geometry_and_severity_adds_energy():
    labels = np.array([1, 3, 5] * 4)
    data = vibration.generate(labels, seed=0, speed_hz=20.0, load=0.5)
    freqs = vibration.defect_frequencies(20.0)
    expected = {1: freqs["bpfo"], 3: freqs["bpfi"], 5: 2 * freqs["bsf"]}
    for label, rate in zip(labels, data.fault_hz):
        assert float(rate) == pytest.approx(float(expected[int(label)]), rel=1e-5)
    mild = vibration.generate([1] * 30, seed=1, speed_hz=25.0, load=0.5)
    severe = vibration.generate([2] * 30, seed=1, speed_hz=25.0, load=0.5)
    healthy = vibration.generate([0] * 30, seed=1, speed_hz=25.0, load=0.5)
    energy = lambda d: d.signals.pow(2).mean().item()
    assert energy(healthy) < energy(mild) < energy(severe)


@pytest.mark.parametrize("label, fault", [(1, "outer"), (2, "outer"), (3, "inner"), (5, "ball")])
def test_envelope_spectrum_peaks_at_the_claimed_defect_frequency(label, fault):
    config = vibration.MachineConfig(window=24_000)  # 2 s: 0.5 Hz resolution
    data = vibration.generate([label], config, seed=0, speed_hz=25.0, load=0.5)
    claimed = float(data.fault_hz[0])
    assert claimed == pytest.approx(float(vibration.impact_rate(fault, 25.0)))
    freqs, magnitude = vibration.envelope_spectrum(data.signals[0, 0], config.sample_rate, band=(2000, 5000))
    near = (freqs > 0.5 * claimed) & (freqs < 1.5 * claimed)
    peak = freqs[near][magnitude[near].argmax()]
    assert abs(peak - claimed) <= 1.0, f"envelope peak at {peak} Hz, generator claims {claimed:.2f} Hz"
    others = [float(vibration.impact_rate(f, 25.0)) for f in ("outer", "inner", "ball") if f != fault]
    for other in others:  # the other faults' rates are not where the energy is
        assert magnitude[np.argmin(abs(freqs - other))] < 0.5 * magnitude[near].max()


def test_envelope_spectrum_of_a_pure_am_tone():
    # x = (1 + 0.5 cos 2 pi 10 t) cos 2 pi 1000 t: squared envelope (1 + 0.5 cos a)^2 = 1.125 + cos a + 0.125 cos 2a,
    # and a cosine of amplitude A gives |rfft| / N = A / 2: 0.5 at 10 Hz, 0.0625 at 20 Hz.
    fs, n = 8000, 8000
    t = np.arange(n) / fs
    x = (1 + 0.5 * np.cos(2 * np.pi * 10 * t)) * np.cos(2 * np.pi * 1000 * t)
    freqs, magnitude = vibration.envelope_spectrum(x, fs)
    assert magnitude[freqs == 10][0] == pytest.approx(0.5, rel=1e-3)
    assert magnitude[freqs == 20][0] == pytest.approx(0.0625, rel=1e-3)
    with pytest.raises(ValueError, match="band"):
        vibration.envelope_spectrum(x, fs, band=(500, 5000))


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_recording_round_trip(tmp_path, suffix):
    signal = np.sin(np.linspace(0, 20, 5000))
    path = vibration.save_recording(tmp_path / f"rec{suffix}", signal, 12_000)
    loaded, rate = vibration.load_recording(path, sample_rate=12_000)
    assert rate == 12_000 and loaded.shape == (5000,)
    np.testing.assert_allclose(loaded, signal, rtol=1e-6, atol=1e-7)
    windows = vibration.to_windows(loaded, 2048, hop=1024)
    assert windows.shape == (3, 1, 2048) and windows.dtype == torch.float32
    assert torch.equal(windows[1, 0], torch.from_numpy(loaded[1024:3072].astype(np.float32)))


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no recording"):
        vibration.load_recording(tmp_path / "missing.npz")
    path = vibration.save_recording(tmp_path / "rec.npz", np.zeros(3000), 48_000)
    with pytest.raises(ValueError, match="48000 Hz but 12000 Hz"):
        vibration.load_recording(path, sample_rate=12_000)
    np.savez(tmp_path / "stereo.npz", signal=np.zeros((3000, 2)), sample_rate=12_000.0)
    with pytest.raises(ValueError, match="one channel"):
        vibration.load_recording(tmp_path / "stereo.npz")
    np.savez(tmp_path / "nofs.npz", signal=np.zeros(3000))
    with pytest.raises(ValueError, match="sample_rate"):
        vibration.load_recording(tmp_path / "nofs.npz")
    (tmp_path / "two.csv").write_text("# sample_rate=12000\n1,2\n3,4\n")
    with pytest.raises(ValueError, match="one value per line"):
        vibration.load_recording(tmp_path / "two.csv")
    (tmp_path / "nohead.csv").write_text("1\n2\n")
    with pytest.raises(ValueError, match="first line"):
        vibration.load_recording(tmp_path / "nohead.csv")
    np.savez(tmp_path / "nan.npz", signal=np.array([0.0, np.nan] * 2000), sample_rate=12_000.0)
    with pytest.raises(ValueError, match="NaN"):
        vibration.load_recording(tmp_path / "nan.npz")
    with pytest.raises(ValueError, match="fewer than one window"):
        vibration.to_windows(np.zeros(100), 2048)
    with pytest.raises(ValueError, match="unsupported"):
        (tmp_path / "rec.txt").write_text("1\n")
        vibration.load_recording(tmp_path / "rec.txt")


def test_vibration_models_shapes_paths_and_macs():
    student = vibration.create("vib-student", seed=0)
    x = torch.randn(2, 1, 2048)
    assert student(x).shape == (2, 7)
    # front end: 2047 // 16 = 127 decimated samples -> 64 bins; DFT as a matrix product: 2 bands * 127 * (2 * 64)
    # stem: 8 * 2 * 5 * 64; block1: 16 * 8 * 5 * 32; block2: 16 * 16 * 5 * 16; head: (16 * 16) * 7
    expected = 2 * 127 * 128 + 8 * 2 * 5 * 64 + 16 * 8 * 5 * 32 + 16 * 16 * 5 * 16 + 256 * 7
    assert vibration.multiply_accumulates(student) == expected
    teacher = vibration.create("vib-teacher", seed=0)
    from course_utils import hooks

    with hooks.capture(teacher, ["block2"]) as t_feats, hooks.capture(student, ["block2"]) as s_feats:
        teacher(x), student(x)
    assert t_feats["block2"].shape == (2, 64, 16) and s_feats["block2"].shape == (2, 16, 16)
    assert vibration.as_2d(s_feats["block2"]).shape == (2, 16, 1, 16)
    with pytest.raises(cu.checkpoints.UnknownModelError, match="unknown vibration model 'vib-huge'.*'vib-student'"):
        vibration.create("vib-huge")
    with pytest.raises(ValueError, match=r"\(B, 1, L\)"):
        student(torch.randn(2, 2048))
    with pytest.raises(ValueError, match="to_windows"):
        student(torch.randn(2, 1, 1000))


def test_vibration_set_loader_batches_like_make_loader():
    data = vibration.make_dataset(5, seed=0)
    logits = torch.randn(len(data), 7)
    for shuffle in (True, False):
        ours = list(data.loader(batch_size=8, shuffle=shuffle, seed=3, extra=(logits,)))
        by_hand = list(cu.data.make_loader(data.signals, data.labels, logits, batch_size=8, shuffle=shuffle, seed=3))
        assert len(ours) == len(by_hand) == 5
        for batch, expected in zip(ours, by_hand):
            assert len(batch) == 3 and all(torch.equal(a, b) for a, b in zip(batch, expected))
    assert not torch.equal(next(iter(data.loader(seed=3)))[1], next(iter(data.loader(seed=4)))[1])


def test_no_vibration_teacher_is_shipped_and_load_teacher_says_how_to_train_one():
    with pytest.raises(cu.checkpoints.CheckpointError, match="notebook 07 trains its own.*vib-teacher"):
        vibration.load_teacher()


def test_front_end_finds_the_modulation_rate_and_the_shaft_line():
    # x = (1 + cos 2 pi f_m t) cos 2 pi 3000 t + 0.5 cos 2 pi f_s t: the band-passed carrier's squared envelope
    # repeats at f_m (channel 0), the low band holds the f_s line (channel 1). Both are put on exact bins.
    frontend = vibration.SpectralFrontEnd()
    bin_hz = frontend.bin_hz(12_000)
    assert bin_hz == pytest.approx(12_000 / 16 / 127)                  # 5.906 Hz
    t = torch.arange(2048, dtype=torch.float64) / 12_000
    f_m, f_s = 17 * bin_hz, 5 * bin_hz                                 # 100.4 Hz and 29.5 Hz
    x = (1 + torch.cos(2 * math.pi * f_m * t)) * torch.cos(2 * math.pi * 3000 * t) + 0.5 * torch.cos(2 * math.pi * f_s * t)
    with torch.no_grad():
        spectra = frontend(x.float().view(1, 1, -1))
    assert spectra.shape == (1, 2, 64)
    assert int(spectra[0, 0, 2:].argmax()) + 2 == 17
    assert int(spectra[0, 1, 2:].argmax()) + 2 == 5
    with pytest.raises(ValueError, match="band"):
        vibration.SpectralFrontEnd(band=(0.3, 0.6))


def test_end_to_end_pipeline_quick(tmp_path):
    """Generate, train a teacher briefly, distil a student with KD, export to INT8 ONNX, measure size and RAM."""
    train_set, test_set = vibration.make_dataset(12, seed=0), vibration.make_dataset(4, seed=1)
    teacher = vibration.create("vib-teacher", seed=0)
    train.fit(teacher, train_set.loader(batch_size=32), epochs=1, progress=False)
    with torch.no_grad():
        teacher_logits = teacher(train_set.signals)
    student = vibration.create("vib-student", seed=0)
    kd_step = lambda model, batch: losses.kd_loss(model(batch[0]), batch[2], batch[1], temperature=4.0, alpha=0.9)
    history = train.fit(student, train_set.loader(batch_size=32, extra=(teacher_logits,)), epochs=1, loss_fn=kd_step,
                        progress=False)
    assert math.isfinite(history.train_loss[-1])
    fp32 = export.export_onnx(student, tmp_path / "student.onnx", test_set.signals[:2])
    int8 = export.quantize_static(fp32, tmp_path / "student_int8.onnx", train_set.signals[:32])
    assert export.model_size(int8) < 100 * 1024
    accuracy = export.onnx_accuracy(int8, test_set.signals, test_set.labels)
    assert 0.0 <= accuracy <= 1.0
    ram = export.session_peak_ram_mb(str(int8), (1, 1, 2048), runs=2)
    assert ram["process_peak_mb"] >= ram["baseline_mb"] > 0 and ram["session_mb"] >= 0
    with pytest.raises(export.OnnxFileError, match="does not exist"):  # refused before a subprocess starts
        export.session_peak_ram_mb(str(tmp_path / "missing.onnx"), (1, 1, 2048))
    (tmp_path / "corrupt.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(RuntimeError, match="memory probe failed"):
        export.session_peak_ram_mb(str(tmp_path / "corrupt.onnx"), (1, 1, 2048))


def test_onnx_size_breakdown_separates_the_fixed_front_end_from_learned_weights(tmp_path):
    """The DFT basis (127 x 128 floats) and the band-pass taps are the front end; the rest of the constants are learned."""
    signals = vibration.make_dataset(4, seed=0).signals
    student = vibration.create("vib-student", seed=0).eval()
    fp32 = export.export_onnx(student, tmp_path / "student.onnx", signals[:2])
    int8 = export.quantize_after_front_end(fp32, tmp_path / "student_int8.onnx", signals)
    basis_and_taps = (127 * 128 + 31) * 4
    assert sum(b.numel() * b.element_size() for b in student.frontend.buffers()) == basis_and_taps
    sizes = {path: export.onnx_size_breakdown(path) for path in (fp32, int8)}
    for path, size in sizes.items():
        assert size["file_bytes"] == export.model_size(path)
        assert size["front_end_bytes"] + size["learned_bytes"] + size["graph_bytes"] == size["file_bytes"]
        assert basis_and_taps <= size["front_end_bytes"] < basis_and_taps + 256  # plus the exporter's small constants
        assert size["front_end_tensors"]["frontend.basis"] == 127 * 128 * 4
        assert size["graph_bytes"] > 0
    parameters = sum(p.numel() for p in student.parameters())
    assert abs(sizes[fp32]["learned_bytes"] - 4 * parameters) < 0.05 * 4 * parameters  # FP32: 4 bytes a parameter
    assert sizes[int8]["learned_bytes"] < 0.4 * sizes[fp32]["learned_bytes"]  # INT8 weights: about a quarter
    assert sizes[int8]["front_end_bytes"] == sizes[fp32]["front_end_bytes"]  # the front end stays FP32
    with pytest.raises(FileNotFoundError, match="export the model"):
        export.onnx_size_breakdown(tmp_path / "missing.onnx")
