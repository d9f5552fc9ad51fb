"""UCF-101: ``classInd.txt`` and the official ``trainlist0N.txt`` / ``testlist0N.txt`` splits into samples.

The training list is ``train``, the test list ``val`` by default (what the published numbers use); class order is
sorted (not ``classInd.txt``'s 1-based order). `ucf_group` names the long video a clip was cut from (``_gNN_``),
so that a held-out val never straddles one.
"""
from __future__ import annotations

import re
from pathlib import Path

from data.labels import LabelError, Sample, check_name
from tools.labels.common import find_file, text_lines

__all__ = ["read_ucf_class_index", "ucf101_samples", "ucf_group"]


def read_ucf_class_index(path: Path) -> dict[str, int]:
    """``classInd.txt`` ("1 ApplyEyeMakeup" per line) -> {class: 1-based index}; indices must be 1..N."""
    classes: dict[str, int] = {}
    for number, text in text_lines(path):
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise LabelError(f"{path}:{number}: expected '<index> <class>', got {text!r}")
        index, name = int(parts[0]), parts[1]
        check_name(name, "class", f"{path}:{number}")
        if name in classes:
            raise LabelError(f"{path}:{number}: class {name!r} listed twice")
        classes[name] = index
    if not classes:
        raise LabelError(f"{path}: no classes")
    if sorted(classes.values()) != list(range(1, len(classes) + 1)):
        raise LabelError(f"{path}: class indices are not 1..{len(classes)}")
    return classes


def _ucf_entry(path: Path, number: int, text: str, class_index: dict[str, int], with_label: bool) -> Sample | str:
    parts = text.split()
    if len(parts) not in ((1, 2) if with_label else (1,)):
        expected = "'<class>/<video>.avi [<index>]'" if with_label else "'<class>/<video>.avi'"
        raise LabelError(f"{path}:{number}: expected {expected}, got {text!r}")
    where = f"{path}:{number}"
    pieces = parts[0].replace("\\", "/").split("/")
    if len(pieces) != 2:
        raise LabelError(f"{where}: expected '<class>/<video file>', got {parts[0]!r}")
    label, filename = pieces
    check_name(label, "label", where)
    check_name(filename, "video file", where)
    video_id = Path(filename).stem
    check_name(video_id, "video id", where)
    if label not in class_index:
        raise LabelError(f"{where}: unknown class {label!r} (not in classInd.txt)")
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise LabelError(f"{where}: class index {parts[1]!r} is not a number")
        if int(parts[1]) != class_index[label]:
            raise LabelError(f"{where}: class index {parts[1]} does not match {label!r} "
                             f"(classInd.txt says {class_index[label]})")
    return Sample(video_id=video_id, label=label, split="train")


def ucf101_samples(splits_dir: str | Path, split: int, test_as: str = "val") -> tuple[list[Sample], list[str]]:
    """Samples of official split `split` (1-3): ``trainlist0N.txt`` -> train, ``testlist0N.txt`` -> `test_as`."""
    splits_dir = Path(splits_dir)
    class_file = find_file(splits_dir, "classInd.txt")
    class_index = read_ucf_class_index(class_file)
    samples: list[Sample] = []
    seen: dict[tuple[str, str], str] = {}
    for kind, split_name in (("train", "train"), ("test", test_as)):
        path = find_file(splits_dir, f"{kind}list{split:02d}.txt")
        for number, text in text_lines(path):
            s = _ucf_entry(path, number, text, class_index, with_label=(kind == "train"))
            key = (s.label, s.video_id)
            if key in seen:
                raise LabelError(f"{path}:{number}: video {s.label}/{s.video_id} already listed at {seen[key]}")
            seen[key] = f"{path.name}:{number}"
            samples.append(Sample(s.video_id, s.label, split_name))
    return samples, sorted(class_index)


def ucf_group(sample: Sample) -> str:
    """UCF-101 group (``v_Class_g08_c01`` -> ``g08``): clips of one group come from one long video."""
    match = re.search(r"_(g\d+)_c\d+$", sample.video_id)
    return match.group(1) if match else sample.video_id
