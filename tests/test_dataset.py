"""VideoDataset and build_loader on tiny generated frame stores.

Frame ``t`` of every test video is a flat grey image of level ``10 + 5*t``, and the tests read clips through an
identity normalisation, so the frame indices a clip was made of can be read back from its pixels.
"""
import numpy as np
import pytest
import torch

import data.store
from data.dataset import VideoDataset
from data.labels import Sample, write_classes, write_labels
from data.loader import build_loader, collate_clips
from data.sampling import UniformClipSampler
from data.store import FrameStoreError, encode_jpeg, write_frames_db
from data.transforms import Compose, ToTensorNormalize, train_transform

H, W = 24, 32
RAW = Compose([ToTensorNormalize(mean=(0, 0, 0), std=(1 / 255,) * 3)])  # float pixel values 0..255


def frame_level(t: int) -> int:  # fits in uint8 for up to 49 frames
    return 10 + 5 * t


def make_video(root, label, video_id, n_frames, size=(H, W)):
    frames = (encode_jpeg(np.full((*size, 3), frame_level(t), np.uint8)) for t in range(n_frames))
    write_frames_db(root / "jpg" / label / video_id, frames, {"fps": 25})


def make_root(tmp_path, videos, classes=None, extra_rows=()):
    """videos: [(label, video_id, n_frames, split)]; writes frame stores, labels/all.csv and classes.txt."""
    root = tmp_path / "ds"
    for label, video_id, n, _ in videos:
        make_video(root, label, video_id, n)
    samples = [Sample(video_id=v, label=lb, split=s) for lb, v, _, s in videos] + list(extra_rows)
    write_labels(root / "labels" / "all.csv", samples)
    if classes is not None:
        write_classes(root / "classes.txt", classes)
    return root


def frame_indices_of(clip: torch.Tensor) -> list[int]:
    levels = clip.mean(dim=(0, 2, 3))  # one value per frame
    return [round((float(v) - 10) / 5) for v in levels]


@pytest.fixture
def root(tmp_path):
    return make_root(tmp_path, [
        ("walk", "w1", 40, "train"), ("walk", "w2", 5, "train"),
        ("run", "r1", 30, "train"), ("run", "r2", 33, "val"), ("walk", "w3", 41, "val"),
    ], classes=["walk", "run"])  # deliberately not sorted: the class file must win


def test_train_item_shapes_labels_and_frames(root):
    ds = VideoDataset(root, split="train", clip_length=8, frame_interval=[1, 2], transform=RAW)
    assert len(ds) == 3 and ds.classes == ["walk", "run"] and ds.n_frames == [40, 5, 30]
    clip, label, video = ds[0]
    assert clip.shape == (3, 8, H, W) and clip.dtype == torch.float32
    assert (label, video) == (0, 0) and isinstance(label, int) and isinstance(video, int)
    assert ds[2][1] == 1  # "run" is class 1 through classes.txt
    idx = frame_indices_of(clip)
    step = idx[1] - idx[0]
    assert step in (1, 2) and idx == [idx[0] + step * k for k in range(8)]


def test_short_video_loops_with_repeats(root):
    ds = VideoDataset(root, split="train", clip_length=8, frame_interval=2, transform=RAW)
    for _ in range(5):
        idx = frame_indices_of(ds[1][0])  # w2 has 5 frames
        assert idx == [(idx[0] + 2 * k) % 5 for k in range(8)]


def test_val_clips_are_deterministic_and_evenly_spaced(root):
    ds = VideoDataset(root, split="val", clip_length=4, frame_interval=[2, 3, 4], transform=RAW, clips_per_video=3)
    assert not ds.train and len(ds) == 6 and ds.eval_interval() == 3
    sampler = UniformClipSampler(4, 3, 3)
    for i in range(len(ds)):
        clip, label, video = ds[i]
        assert video == i // 3 and label == [1, 0][video]
        assert frame_indices_of(clip) == sampler(ds.n_frames[video], i % 3).tolist()
        assert torch.equal(clip, ds[i][0])


def test_classes_default_to_sorted_labels_of_all_splits(tmp_path):
    root = make_root(tmp_path, [("b", "x", 4, "train"), ("a", "y", 4, "val")])
    ds = VideoDataset(root, split="train", clip_length=2, transform=RAW)
    assert ds.classes == ["a", "b"] and ds[0][1] == 1


def test_missing_video_is_an_error_listing_it(tmp_path):
    root = make_root(tmp_path, [("a", "v1", 4, "train")],
                     extra_rows=[Sample("gone1", "a", "train"), Sample("gone2", "a", "train")])
    with pytest.raises(FrameStoreError, match=r"2 of 3 videos.*a/gone1, a/gone2"):
        VideoDataset(root, split="train", transform=RAW)


def test_video_id_escaping_root_is_rejected(tmp_path):
    root = make_root(tmp_path, [("a", "v1", 4, "train")])
    csv = root / "labels" / "all.csv"
    csv.write_text(csv.read_text() + "a,../../etc,,,train\n")
    with pytest.raises(ValueError, match="escape"):
        VideoDataset(root, split="train", transform=RAW)


def test_corrupt_database_raises_naming_the_file(root):
    bad = root / "jpg" / "walk" / "w1" / "frames.db"
    bad.write_bytes(b"this is not an sqlite database" * 100)
    ds = VideoDataset(root, split="train", clip_length=4, transform=RAW)  # only n_frames files are read here
    with pytest.raises(FrameStoreError, match=str(bad)):
        ds[0]


def test_corrupt_frame_raises_not_a_zero_clip(tmp_path):
    root = tmp_path / "ds"
    frames = [encode_jpeg(np.full((H, W, 3), 50, np.uint8))] * 3 + [b"\xff\xd8 broken jpeg"]
    write_frames_db(root / "jpg" / "a" / "v", frames, {})
    write_labels(root / "labels" / "all.csv", [Sample("v", "a", "val")])
    ds = VideoDataset(root, split="val", clip_length=4, frame_interval=1, transform=RAW)
    with pytest.raises(FrameStoreError, match="frame 3"):
        ds[0]


def test_short_cycle_items_and_reduced_decode(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    make_video(root, "a", "v", 6, size=(48, 64))
    write_labels(root / "labels" / "all.csv", [Sample("v", "a", "train")])
    reduces = []
    original = data.store.VideoReader.read
    monkeypatch.setattr(data.store.VideoReader, "read",
                        lambda self, idx, reduce=1: reduces.append(reduce) or original(self, idx, reduce))
    ds = VideoDataset(root, clip_length=4, transform=train_transform(16, resize_short=18))
    assert ds[0][0].shape == (3, 4, 16, 16)
    ds.short_cycle_sizes = [8, 12, 16]
    assert ds[(0, 0)][0].shape == (3, 4, 8, 8)
    assert ds[(0, 1)][0].shape == (3, 4, 12, 12)
    # Stored short side 48: crop 16 needs 18 -> 1/2 scale (24); crop 8 needs 9 -> 1/4 (12); crop 12 needs 14 -> 1/2.
    assert reduces == [2, 4, 2]


def test_loader_batches_and_seeded_workers(root):
    ds = VideoDataset(root, split="train", clip_length=4, frame_interval=[1, 2, 3], transform=RAW)

    def starts(loader, epochs=2):
        out = []
        for _ in range(epochs):
            for clips, labels, videos in loader:
                assert clips.shape == (1, 3, 4, H, W) and labels.dtype == videos.dtype == torch.int64
                out.append((int(videos[0]), tuple(frame_indices_of(clips[0]))))
        return out

    run1 = starts(build_loader(ds, 1, train=True, workers=2, seed=5))
    run2 = starts(build_loader(ds, 1, train=True, workers=2, seed=5))
    other = starts(build_loader(ds, 1, train=True, workers=2, seed=6))
    assert run1 == run2  # a fixed seed reproduces the run, shuffle order and clips
    assert run1 != other
    # Persistent workers must not replay an epoch: the same videos get new clips in epoch 2.
    epoch1, epoch2 = dict(run1[:3]), dict(run1[3:])
    assert epoch1 != epoch2


def test_set_epoch_makes_a_resumed_run_draw_the_same(root):
    def epoch_items(loader, ds, epoch):
        loader.sampler.set_epoch(epoch)
        ds.set_epoch(epoch)
        return [(int(v[0]), tuple(frame_indices_of(c[0]))) for c, _, v in loader]

    def make():
        ds = VideoDataset(root, split="train", clip_length=4, frame_interval=[1, 2, 3], transform=RAW)
        return ds, build_loader(ds, 1, train=True, workers=2, seed=3)

    ds, loader = make()
    uninterrupted = [epoch_items(loader, ds, e) for e in (1, 2, 3)]
    ds, loader = make()  # "resume" at epoch 3: fresh workers, nothing drawn before
    assert epoch_items(loader, ds, 3) == uninterrupted[2]
    assert uninterrupted[1] != uninterrupted[2]


def test_workers_do_not_replay_each_others_offsets(tmp_path):
    root = make_root(tmp_path, [("a", f"v{i}", 45, "train") for i in range(4)])
    ds = VideoDataset(root, split="train", clip_length=4, frame_interval=[1, 2, 3, 4], transform=RAW)
    batches = [[tuple(frame_indices_of(c)) for c in clips] for clips, _, _ in build_loader(ds, 2, True, workers=2)]
    assert len(batches) == 2  # batch 0 came from worker 0, batch 1 from worker 1
    assert batches[0] != batches[1] and len(set(batches[0] + batches[1])) == 4


def test_main_process_draws_differ_per_access(root):
    ds = VideoDataset(root, split="train", clip_length=4, frame_interval=[1, 2, 3], transform=RAW)
    torch.manual_seed(0)
    first = [tuple(frame_indices_of(ds[0][0])) for _ in range(6)]
    torch.manual_seed(0)
    ds2 = VideoDataset(root, split="train", clip_length=4, frame_interval=[1, 2, 3], transform=RAW)
    again = [tuple(frame_indices_of(ds2[0][0])) for _ in range(6)]
    assert first == again and len(set(first)) > 1


def test_collate_clips_rejects_mixed_shapes():
    clips, labels, videos = collate_clips([(torch.zeros(3, 2, 4, 4), 1, 7), (torch.ones(3, 2, 4, 4), 0, 8)])
    assert clips.shape == (2, 3, 2, 4, 4) and labels.tolist() == [1, 0] and videos.tolist() == [7, 8]
    with pytest.raises(ValueError, match="differ in shape"):
        collate_clips([(torch.zeros(3, 2, 4, 4), 1, 7), (torch.zeros(3, 2, 8, 8), 0, 8)])
