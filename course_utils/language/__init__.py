"""The language domain of notebook 08: a character-level GPT, its shipped teacher, and the text it reads.

``cu.language.create(name)`` builds a model of :data:`CONFIGS` (``lm-teacher``, ``lm-student-s`` ... ``lm-student-xl``),
``cu.language.load_teacher()`` loads the shipped teacher (checked against its model card) and
``cu.language.load_transfer_set()`` the text that teacher wrote, ``cu.language.load_ladder()`` the precomputed size
ladder of students (``results/lm_ladder.json``); ``models`` holds the transformer, generation and the
metrics, ``text`` the docstring corpus, the 96-character vocabulary, the addition probe and the data set of
training windows, :class:`WindowSet` (with ``.loader(...)``).
"""

from . import models, text
from .models import (
    CONFIGS,
    GPT,
    LADDER_COMMAND,
    LADDER_FILE,
    LADDER_METHODS,
    TEACHER_CARD,
    GPTConfig,
    addition_accuracy,
    addition_answers,
    bits_per_char,
    complete,
    config_dict,
    create,
    generate,
    ladder_cells,
    load_ladder,
    load_teacher,
    load_transfer_set,
    student_from_teacher,
    teacher_card,
    transfer_windows,
)
from .text import (
    CORPUS_FILE,
    CORPUS_SHA256,
    VOCAB,
    CorpusError,
    WindowSet,
    addition_text,
    corpus_path,
    decode,
    encode,
    format_addition,
    is_held_out,
    load_corpus,
    mixed_windows,
    random_windows,
    read_answer,
    sample_additions,
    split_corpus,
)

__all__ = ["CONFIGS", "CORPUS_FILE", "CORPUS_SHA256", "GPT", "LADDER_COMMAND", "LADDER_FILE", "LADDER_METHODS",
           "TEACHER_CARD", "VOCAB", "CorpusError", "WindowSet", "GPTConfig", "addition_accuracy", "addition_answers",
           "addition_text", "bits_per_char", "complete", "config_dict", "corpus_path", "create", "decode", "encode",
           "format_addition", "generate", "is_held_out", "ladder_cells", "load_corpus", "load_ladder",
           "load_teacher", "load_transfer_set", "mixed_windows", "models", "random_windows", "read_answer",
           "sample_additions", "split_corpus", "student_from_teacher", "teacher_card", "text", "transfer_windows"]
