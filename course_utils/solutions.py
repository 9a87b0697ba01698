"""The answer key: one reference solution per exercise, written as a learner would write it in the notebook.

``cu.exercises.get("02.kd_loss").solution()`` prints the function's source from here; the unit tests
prove that every solution passes its check. The checks themselves compare against the package's own
implementations (``cu.losses.kd_loss`` and friends), never against this file.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

import course_utils as cu

# --- 01 · soft targets and temperature -----------------------------------------------------------------------------


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    scaled = logits / temperature  # (N, C): divide every logit by T
    scaled = scaled - scaled.max(dim=-1, keepdim=True).values  # subtracting the max changes nothing, avoids overflow
    weights = scaled.exp()
    return weights / weights.sum(dim=-1, keepdim=True)  # (N, C), each row sums to 1


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    # xlogy(p, p) = p log p, and exactly 0 where p = 0 (the limit), where p * p.log() would give 0 * -inf = nan
    return -torch.special.xlogy(probabilities, probabilities).sum(dim=-1)  # natural log: nats


def soft_target_gradient(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    p = torch.softmax(teacher_logits / temperature, dim=-1)  # teacher, softened
    q = torch.softmax(student_logits / temperature, dim=-1)  # student, softened
    return (q - p) / temperature  # d KL(p || q) / dz: the chain rule through z / T brings out 1 / T


def high_temperature_limit() -> str:
    # With T^2, the gradient T (q - p) tends to (z - v) / C once both logit vectors are centred: the soft term
    # becomes logit matching (Ba and Caruana 2014), blind to a constant added to all of an example's logits.
    answer = "b"
    return answer


# --- 02 · the distillation loss ------------------------------------------------------------------------------------


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    hard = F.cross_entropy(student_logits, targets)  # mean over the batch, T = 1
    log_q = F.log_softmax(student_logits / temperature, dim=-1)  # (B, C) student, softened
    log_p = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)  # (B, C) teacher, softened, no gradient
    soft = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)  # KL(p || q): sum over classes, mean over batch
    return (1 - alpha) * hard + alpha * temperature**2 * soft


def best_bias_shift(logits: torch.Tensor, labels: torch.Tensor, class_index: int, shifts: list[float]) -> float:
    best_shift, best_accuracy = None, -1.0
    for shift in sorted(shifts):  # smallest first: a tie keeps the smaller shift
        shifted = logits.clone()  # never edit the caller's logits
        shifted[:, class_index] += shift  # raise only the omitted class's logit
        accuracy = (shifted.argmax(dim=1) == labels).float().mean().item()  # overall accuracy, every class
        if accuracy > best_accuracy:
            best_shift, best_accuracy = shift, accuracy
    return best_shift


def gap_closed(student_accuracy: float, scratch_accuracy: float, teacher_accuracy: float) -> float:
    return (student_accuracy - scratch_accuracy) / (teacher_accuracy - scratch_accuracy)  # negative if worse; no clipping


def largest_distillation_gain(rows: list[dict]) -> str:
    # the gain is distilled minus scratch for the same student; the most accurate student is another question
    return max(rows, key=lambda row: row["kd"]["mean"] - row["scratch"]["mean"])["student"]


# --- 03 · feature distillation (FitNets) ---------------------------------------------------------------------------


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, adapter: torch.nn.Module) -> torch.Tensor:
    predicted = adapter(student_features)  # (B, C_s, H, W) -> (B, C_t, H, W): the regressor r(v)
    return (predicted - teacher_features.detach()).pow(2).mean()  # mean over batch, channels and positions


def align_spatial(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    if features.shape[-2] >= size[0] and features.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(features, size)  # shrink: average the positions each output cell covers
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)  # grow


def progressive_mapping(n_student: int, n_teacher: int) -> list[int]:
    # student stage i covers the fraction (i + 1) / n_student of the depth; round down (rounding up is fine too)
    return [(i + 1) * n_teacher // n_student - 1 for i in range(n_student)]


def adapter_parameters(student_channels: int = 16, teacher_channels: int = 64) -> int:
    convolution = student_channels * teacher_channels  # a 1x1 kernel per (input, output) pair, no bias
    batch_norm = 2 * teacher_channels  # a scale and a shift per output channel (running statistics are buffers)
    return convolution + batch_norm


# --- 04 · attention transfer ---------------------------------------------------------------------------------------


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    energy = features.abs().pow(p).mean(dim=1)  # (B, C, H, W) -> (B, H, W): channel mean of |A|^p
    flat = energy.flatten(1)  # (B, H*W)
    return flat / flat.norm(dim=1, keepdim=True)  # each row of unit L2 length


def at_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    # attention_map: the function of the exercise above
    difference = attention_map(student_features, p) - attention_map(teacher_features.detach(), p)  # (B, H*W)
    return difference.pow(2).mean()  # mean over batch and positions


def sharpest_p(features: torch.Tensor) -> int:
    peaks = {p: cu.losses.attention_map(features, p=p).max(dim=1).values.mean().item() for p in (1, 2, 4)}
    return max(peaks, key=peaks.get)  # the largest peak of a unit-length map: the most concentrated attention


def multi_at_loss(student_features: dict, teacher_features: dict, pairs: list, beta: float) -> torch.Tensor:
    return beta / 2 * sum(cu.losses.at_loss(student_features[s], teacher_features[t]) for s, t in pairs)


# --- 05 · the training schedule ------------------------------------------------------------------------------------


def phase_boundaries(fractions: list[float], total_steps: int) -> list[tuple[int, int]]:
    ends, running = [], 0.0
    for fraction in fractions:
        running += fraction  # c_i = f_1 + ... + f_i: round the running sum, not each phase's length
        ends.append(math.floor(total_steps * running + 0.5))  # round half up
    ends[-1] = total_steps  # the last phase ends exactly at N
    starts = [0, *ends[:-1]]  # each phase starts where the previous one ended: end is exclusive
    return list(zip(starts, ends))


def phase_index(step: int, boundaries: list[tuple[int, int]]) -> int:
    for index, (start, end) in enumerate(boundaries):
        if start <= step < end:  # the end step already belongs to the next phase
            return index
    raise IndexError(f"step {step} is outside the schedule")


def margin(teacher_logits: torch.Tensor) -> torch.Tensor:
    probabilities = torch.softmax(teacher_logits, dim=1)  # (N, C)
    top2 = probabilities.topk(2, dim=1).values  # (N, 2): largest and second-largest
    return top2[:, 0] - top2[:, 1]


# --- 06 · edge export ----------------------------------------------------------------------------------------------


def affine_parameters(low: float, high: float, q_min: int, q_max: int) -> tuple[float, float]:
    low, high = min(low, 0.0), max(high, 0.0)  # the range must contain 0, so that 0 is exactly representable
    scale = (high - low) / (q_max - q_min)  # q_max - q_min steps between the two ends
    zero_point = q_min - round(low / scale)  # the integer that represents x = 0
    return scale, zero_point


def fake_quantize(x: torch.Tensor, scale: float, zero_point: float, q_min: int, q_max: int) -> torch.Tensor:
    quantized = torch.clamp(torch.round(x / scale) + zero_point, q_min, q_max)  # quantize: integers in range
    x_hat = (quantized - zero_point) * scale  # dequantize: back to float
    return x + (x_hat - x).detach()  # straight-through estimator: the value of x_hat, the gradient of x


def per_channel_scales(weight: torch.Tensor) -> torch.Tensor:
    max_abs = weight.abs().amax(dim=tuple(range(1, weight.ndim)))  # (C_out,): one max |w| per output channel
    return max_abs / 127  # symmetric int8: [-max|w|, max|w|] onto [-127, 127]


def budget_choice(entries: list[dict], budget: dict) -> str:
    passing = [e for e in entries if e["size_kb"] <= budget["max_kb"] and e["latency_ms"] <= budget["max_ms"]
               and e["accuracy"] >= budget["min_accuracy"]]  # all three limits first
    return max(passing, key=lambda e: e["accuracy"])["name"]  # then the most accurate


# --- 07 · capstone: predictive maintenance -------------------------------------------------------------------------


def envelope_spectrum(signal: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    n = len(signal)
    gain = np.zeros(n)
    gain[np.fft.fftfreq(n) > 0] = 2.0  # analytic signal: double the positive frequencies, drop the negative ones
    gain[0] = 1.0  # keep DC as it is
    envelope = np.abs(np.fft.ifft(np.fft.fft(signal) * gain)) ** 2  # squared envelope |x + i H[x]|^2
    envelope = envelope - envelope.mean()  # remove the mean, or DC dwarfs every line
    return np.fft.rfftfreq(n, 1 / sample_rate), np.abs(np.fft.rfft(envelope)) / n


def ftf_bsf(shaft_hz: float) -> list[float]:
    geometry = cu.vibration.BearingGeometry()  # the SKF 6205: d = 7.94 mm, D = 39.04 mm, contact angle 0
    d, pitch = geometry.ball_diameter_mm, geometry.pitch_diameter_mm
    ratio = d / pitch * math.cos(math.radians(geometry.contact_angle_deg))
    ftf = shaft_hz / 2 * (1 - ratio)  # the cage turns a little slower than half the shaft
    bsf = pitch / (2 * d) * shaft_hz * (1 - ratio**2)  # a ball's spin about its own axis
    return [ftf, bsf]


def ram_headroom(peak_ram_mb: float) -> float:
    return 64 / peak_ram_mb  # how many times the session's peak RAM fits into the controller's 64 MB


# --- 08 · language-model distillation ------------------------------------------------------------------------------


def kl_per_position(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)  # (B, T, V) teacher
    log_q = F.log_softmax(student_logits / temperature, dim=-1)  # (B, T, V) student
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (B, T): KL(p || q) summed over the vocabulary only


def greedy_continuation(model: torch.nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    ids = prompt_ids  # (B, T0)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(ids[:, -model.cfg.block_size:])  # (B, T, V): crop to the context the model reads
            next_id = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1): the last position predicts the next
            ids = torch.cat([ids, next_id], dim=1)  # feed it back
    return ids[:, prompt_ids.shape[1]:]  # (B, max_new_tokens): only the new tokens


def bits_per_char_from_nats(loss: torch.Tensor) -> torch.Tensor:
    return loss / math.log(2)  # one bit is ln 2 nats


def uniform_bits(vocabulary_size: int = 96) -> float:
    return math.log2(vocabulary_size)  # -log2(1 / 96): every character has probability 1 / 96
