"""Something-Something v2: video id = ``id``; the class is the template without ``[`` and ``]``; class order
follows ``something-something-v2-labels.json``.
"""
from __future__ import annotations

from pathlib import Path

from data.labels import LabelError, Sample, check_name
from tools.labels.common import find_file, json_entries, load_json

__all__ = ["sthv2_class", "read_sthv2_labels", "sthv2_samples"]


def sthv2_class(template: str) -> str:
    """A template without its brackets: ``Holding [something] next to [something]`` -> ``Holding something next to
    something``."""
    return template.replace("[", "").replace("]", "").strip()


def read_sthv2_labels(path: Path) -> list[str]:
    """``something-something-v2-labels.json`` ({template: "index"}) -> class names in index order."""
    table = load_json(path)
    if not isinstance(table, dict) or not table:
        raise LabelError(f"{path}: expected a JSON object {{template: index}}")
    by_index: dict[int, str] = {}
    for template, index in table.items():
        where = f"{path}: {template!r}"
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise LabelError(f"{where}: index {index!r} is not a number") from None
        name = check_name(sthv2_class(template), "class", where)
        if i in by_index:
            raise LabelError(f"{where}: index {i} already used by {by_index[i]!r}")
        by_index[i] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise LabelError(f"{path}: class indices are not 0..{len(by_index) - 1}")
    classes = [by_index[i] for i in range(len(by_index))]
    if len(set(classes)) != len(classes):
        raise LabelError(f"{path}: two templates give the same class name")
    return classes


def sthv2_samples(annotations: str | Path) -> tuple[list[Sample], list[str]]:
    """Samples of ``something-something-v2-train.json`` (train) and ``-validation.json`` (val)."""
    annotations = Path(annotations)
    classes = read_sthv2_labels(find_file(annotations, "something-something-v2-labels.json"))
    known = set(classes)
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    for name, split in (("something-something-v2-train.json", "train"),
                        ("something-something-v2-validation.json", "val")):
        for where, e in json_entries(find_file(annotations, name), "{id, label, template, placeholders}"):
            if not isinstance(e, dict) or "id" not in e or not isinstance(e.get("template"), str):
                raise LabelError(f"{where}: expected an object with id and template, got {e!r}"[:300])
            video_id = check_name(str(e["id"]).strip(), "video id", where)
            label = sthv2_class(e["template"])
            if label not in known:
                raise LabelError(f"{where} (id {video_id}): class {label!r} is not in "
                                 "something-something-v2-labels.json")
            if video_id in seen:
                raise LabelError(f"{where}: id {video_id} already listed at {seen[video_id]}")
            seen[video_id] = where
            samples.append(Sample(video_id, label, split))
    return samples, classes
