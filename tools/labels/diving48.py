"""Diving-48: ``vid_name`` is the video id; the class name joins the four vocabulary words of
``Diving48_vocab.json`` with ``_`` (in its order); the test list is ``val`` (as published numbers use it).
"""
from __future__ import annotations

import re
from pathlib import Path

from data.labels import LabelError, Sample, check_name
from tools.labels.common import find_file, json_entries, load_json

__all__ = ["read_diving48_vocab", "diving48_samples"]


def read_diving48_vocab(path: Path) -> list[str]:
    """``Diving48_vocab.json`` (lists of takeoff, somersault, twist, flight) -> class names, words joined by ``_``."""
    vocab = load_json(path)
    if not isinstance(vocab, list) or not vocab:
        raise LabelError(f"{path}: expected a JSON list of [takeoff, somersault, twist, flight] lists")
    classes: list[str] = []
    for i, words in enumerate(vocab):
        where = f"{path}: entry {i}"
        if not isinstance(words, list) or len(words) != 4 or not all(isinstance(w, str) and w.strip() for w in words):
            raise LabelError(f"{where}: expected 4 words (takeoff, somersault, twist, flight), got {words!r}")
        name = check_name("_".join(re.sub(r"\s+", "-", w.strip()) for w in words), "class", where)
        if name in classes:
            raise LabelError(f"{where}: class {name!r} repeats entry {classes.index(name)}")
        classes.append(name)
    return classes


def diving48_samples(annotations: str | Path, test_as: str = "val") -> tuple[list[Sample], list[str]]:
    """Samples of ``Diving48_V2_train.json`` (train) and ``Diving48_V2_test.json`` (`test_as`)."""
    annotations = Path(annotations)
    classes = read_diving48_vocab(find_file(annotations, "Diving48_vocab.json"))
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    for name, split in (("Diving48_V2_train.json", "train"), ("Diving48_V2_test.json", test_as)):
        for where, e in json_entries(find_file(annotations, name), "{vid_name, label, start_frame, end_frame}"):
            if not isinstance(e, dict) or "vid_name" not in e or "label" not in e:
                raise LabelError(f"{where}: expected an object with vid_name and label, got {e!r}"[:300])
            video_id = check_name(str(e["vid_name"]).strip(), "video id", where)
            index = e["label"]
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(classes):
                raise LabelError(f"{where} ({video_id}): label {index!r} is not a class index 0..{len(classes) - 1} "
                                 "of Diving48_vocab.json")
            if video_id in seen:
                raise LabelError(f"{where}: video {video_id} already listed at {seen[video_id]}")
            seen[video_id] = where
            samples.append(Sample(video_id, classes[index], split))
    return samples, classes
