import csv
import filecmp
import logging
import os
import shutil

import numpy as np
import pytest
import torch

import data


def rows_of(manifest):
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


def centroid(frame):
    """(x, y) of the non-black pixels of a (H, W, 3) uint8 frame."""
    mass = frame.astype(np.float64).max(axis=-1)
    ys, xs = np.mgrid[:frame.shape[0], :frame.shape[1]]
    return np.array([(xs * mass).sum(), (ys * mass).sum()]) / mass.sum()


def test_generator_is_deterministic(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    data.generate_shapes(a, num_videos=6, seed=3)
    data.generate_shapes(b, num_videos=6, seed=3)
    names = ["videos.csv", "images.csv"] + [f"videos/{i:06d}.mp4" for i in range(6)] + [f"images/{i:06d}.png" for i in range(6)]
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == []
    data.generate_shapes(str(tmp_path / "c"), num_videos=6, seed=4)
    assert rows_of(os.path.join(a, "videos.csv")) != rows_of(str(tmp_path / "c" / "videos.csv"))


def test_manifests_and_captions(shapes_dir):
    videos = rows_of(os.path.join(shapes_dir, "videos.csv"))
    images = rows_of(os.path.join(shapes_dir, "images.csv"))
    assert len(videos) == len(images) == 24
    for v, im in zip(videos, images):
        words = v["caption"].split()
        assert words[0] == "a" and words[1] in data.COLORS and words[2] in data.SHAPES
        assert " ".join(words[3:]) in {"standing still"} | {f"moving {d}" for d in data.DIRECTIONS if d != "still"}
        assert im["caption"] == " ".join(words[:3])
        assert os.path.isfile(os.path.join(shapes_dir, v["path"])) and os.path.isfile(os.path.join(shapes_dir, im["path"]))


def test_mp4_round_trip_matches_drawn_frames(tmp_path):
    rng = np.random.default_rng(0)
    track = data.object_track("right", 17, 32, 5.0, 0.75, rng)
    frames = data.draw_video("circle", "magenta", track, 32, 5.0)
    path = str(tmp_path / "v.mp4")
    data.write_mp4(path, frames)
    back = data.read_frames(path)
    assert back.shape == frames.shape == (17, 32, 32, 3)
    err = np.abs(back.astype(int) - frames.astype(int))
    assert err.max() <= 24 and err.mean() < 0.5  # H.264 at crf 4, 4:4:4 chroma: small errors on edges only


def test_moving_right_moves_right_and_still_stays(shapes_dir):
    videos = rows_of(os.path.join(shapes_dir, "videos.csv"))
    checked = set()
    for row in videos:
        direction = row["caption"].split()[-1]
        frames = data.read_frames(os.path.join(shapes_dir, row["path"]))
        c0, c1 = centroid(frames[0]), centroid(frames[8])  # first two keyframes at interval 8
        step = c1 - c0
        expected = {"right": (6, 0), "left": (-6, 0), "up": (0, -6), "down": (0, 6), "still": (0, 0)}[direction]
        assert np.allclose(step, expected, atol=0.6), (row, step)
        checked.add(direction)
    assert {"right", "still"} <= checked


def test_bounce_keeps_object_inside():
    track = data.object_track("left", 200, 32, 5.0, 1.3, np.random.default_rng(0))
    assert track.min() >= 5.0 and track.max() <= 27.0
    assert (np.diff(track[:, 0]) > 0).any() and (np.diff(track[:, 0]) < 0).any()  # it turned around


def test_clip_dataset_shapes_strides_values(shapes_dir):
    torch.manual_seed(0)
    ds = data.ClipDataset(os.path.join(shapes_dir, "videos.csv"), size=32, clip_frames=8, max_stride=4)
    strides = []
    for i in range(40):
        item = ds[i % len(ds)]
        assert item["frames"].shape == (9, 3, 32, 32) and item["frames"].dtype == torch.float32
        assert item["frames"].min() >= -1 and item["frames"].max() <= 1
        assert item["frames"].min() == -1  # black background
        strides.append(item["frame_stride"])
    assert set(strides) == {1, 2, 3, 4}  # 33 frames fit 8 x 4 + 1
    ds_long = data.ClipDataset(os.path.join(shapes_dir, "videos.csv"), size=32, clip_frames=8, max_stride=10)
    assert max(ds_long[i % 24]["frame_stride"] for i in range(60)) == 4  # longer strides don't fit


def test_clip_frames_are_the_strided_frames(shapes_dir):
    ds = data.ClipDataset(os.path.join(shapes_dir, "videos.csv"), size=32, clip_frames=4, max_stride=1)
    torch.manual_seed(0)
    item = ds[0]
    full = data.to_tensor(data.read_frames(ds.rows[0]["path"]), 32)
    matches = [s for s in range(33 - 4) if torch.equal(full[s:s + 5], item["frames"])]
    assert matches, "clip is not a run of consecutive frames of the video"


def test_resize_short_side_and_center_crop():
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 38:42] = 255  # a white bar in the middle of a wide frame
    x = data.to_tensor(frames, 20)
    assert x.shape == (2, 3, 20, 20)
    assert x[0, 0, 10, 10] > 0.5 and x[0, 0, 10, 0] == -1 and x[0, 0, 10, 19] == -1


def test_keyframe_and_image_datasets(shapes_dir):
    kf = data.KeyframeDataset(os.path.join(shapes_dir, "videos.csv"), size=32, keyframe_interval=8, max_keyframes=3)
    item = kf[0]
    assert item["frames"].shape == (3, 3, 32, 32)
    full = data.to_tensor(data.read_frames(kf.rows[0]["path"]), 32)
    assert torch.equal(item["frames"], full[[0, 8, 16]])
    kf_all = data.KeyframeDataset(os.path.join(shapes_dir, "videos.csv"), size=32, keyframe_interval=8, max_keyframes=100)
    assert kf_all[0]["frames"].shape[0] == 5  # 33 frames: keyframes 0, 8, 16, 24, 32
    im = data.ImageTextDataset(os.path.join(shapes_dir, "images.csv"), size=16)
    item = im[0]
    assert item["frames"].shape == (1, 3, 16, 16) and item["caption"] == rows_of(os.path.join(shapes_dir, "images.csv"))[0]["caption"]


def test_bad_files_are_skipped_and_counted(shapes_dir, tmp_path, caplog):
    good = rows_of(os.path.join(shapes_dir, "videos.csv"))[:2]
    shutil.copy(os.path.join(shapes_dir, good[0]["path"]), tmp_path / "good0.mp4")
    shutil.copy(os.path.join(shapes_dir, good[1]["path"]), tmp_path / "good1.mp4")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01 this is not a video" * 50)
    (tmp_path / "empty.mp4").write_bytes(b"")
    data.write_mp4(str(tmp_path / "short.mp4"), np.zeros((3, 32, 32, 3), np.uint8))
    manifest = str(tmp_path / "m.csv")
    data.write_manifest(manifest, [
        {"path": "corrupt.mp4", "caption": "x"}, {"path": "good0.mp4", "caption": good[0]["caption"]},
        {"path": "empty.mp4", "caption": "x"}, {"path": "short.mp4", "caption": "x"},
        {"path": "missing.mp4", "caption": "x"}, {"path": "good1.mp4", "caption": good[1]["caption"]},
        {"path": "good0.mp4", "caption": ""},  # missing caption: dropped when reading the manifest
    ], ["path", "caption"])
    with caplog.at_level(logging.WARNING, logger="data"):
        ds = data.ClipDataset(manifest, size=32, clip_frames=8, max_stride=2)
        assert len(ds) == 6
        captions = [ds[i]["caption"] for i in range(len(ds))]
    assert ds.num_skipped == 4
    assert sorted(os.path.basename(p) for p in ds.bad_paths) == ["corrupt.mp4", "empty.mp4", "missing.mp4", "short.mp4"]
    assert set(captions) == {good[0]["caption"], good[1]["caption"]}
    lines = caplog.text.splitlines()
    for name in ["corrupt.mp4", "empty.mp4", "missing.mp4", "short.mp4"]:
        assert sum(name in line for line in lines) == 1, name  # one warning line per bad file
    assert "too short" in caplog.text and "empty caption" in caplog.text


def test_missing_image_is_skipped(shapes_dir, tmp_path):
    shutil.copy(os.path.join(shapes_dir, "images", "000000.png"), tmp_path / "a.png")
    manifest = str(tmp_path / "images.csv")
    data.write_manifest(manifest, [{"path": "gone.png", "caption": "a red circle"},
                                   {"path": "a.png", "caption": "a blue square"}], ["path", "caption"])
    ds = data.ImageTextDataset(manifest, size=32)
    assert ds[0]["caption"] == "a blue square" and ds.num_skipped == 1


def test_bad_manifests_fail_at_start(tmp_path):
    bad_columns = tmp_path / "cols.csv"
    bad_columns.write_text("file,text\na.mp4,hello\n")
    with pytest.raises(ValueError, match=r"lacks column.*caption.*path"):
        data.ClipDataset(str(bad_columns), 32, 8, 2)
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("path,caption\nnope.mp4,a red circle moving left\n")
    with pytest.raises(ValueError, match="names no existing file"):
        data.KeyframeDataset(str(nothing), 32, 8, 4)
    all_bad = tmp_path / "all_bad.csv"
    (tmp_path / "junk.mp4").write_bytes(b"junk")
    all_bad.write_text("path,caption\njunk.mp4,a red circle moving left\n")
    ds = data.ClipDataset(str(all_bad), 32, 8, 2)
    with pytest.raises(RuntimeError, match="no readable sample"):
        ds[0]


def test_motion_score_ranks_still_below_moving(shapes_dir, tmp_path):
    manifest = os.path.join(shapes_dir, "videos.csv")
    rows = rows_of(manifest)
    still = [float(r["motion"]) for r in rows if r["caption"].endswith("still")]
    moving = [float(r["motion"]) for r in rows if "moving" in r["caption"]]
    assert still and moving and max(still) < min(moving)
    # recomputing from the mp4 files agrees with the scores written at generation time
    copy = tmp_path / "videos.csv"
    shutil.copytree(os.path.join(shapes_dir, "videos"), tmp_path / "videos")
    copy.write_text("path,caption\n" + "".join(f"{r['path']},{r['caption']}\n" for r in rows))
    data.add_motion_scores(str(copy))
    recomputed = [float(r["motion"]) for r in rows_of(str(copy))]
    assert np.allclose(recomputed, [float(r["motion"]) for r in rows], atol=2e-3)
    threshold = (max(still) + min(moving)) / 2
    kept = data.read_manifest(manifest, min_motion=threshold)
    assert len(kept) == len(moving) and all("moving" in r["caption"] for r in kept)
    assert len(data.read_manifest(manifest, max_motion=threshold)) == len(still)
    with pytest.raises(ValueError, match="no motion column"):
        data.read_manifest(os.path.join(shapes_dir, "images.csv"), min_motion=0.1)


def test_cli_writes_a_set(tmp_path):
    data.main(["shapes", "--out", str(tmp_path / "s"), "--num_videos", "3", "--size", "24", "--num_frames", "9", "--seed", "5"])
    rows = rows_of(str(tmp_path / "s" / "videos.csv"))
    assert len(rows) == 3
    assert data.read_frames(str(tmp_path / "s" / rows[0]["path"])).shape == (9, 24, 24, 3)


def test_token_shard_round_trip(tmp_path):
    tokens = torch.randn(3, 4, 16, 8)
    path = str(tmp_path / "videos_00000.safetensors")
    data.save_token_shard(path, tokens, [4, 2, 3], ["a red circle moving up", "a blue square", ""], [0.1, 0.0, 0.3])
    back, lengths, captions, motion = data.load_token_shard(path)
    assert torch.equal(back, tokens) and lengths.tolist() == [4, 2, 3]
    assert captions == ["a red circle moving up", "a blue square", ""]
    assert torch.allclose(motion, torch.tensor([0.1, 0.0, 0.3]))
    assert not os.path.exists(path + ".tmp")
    with pytest.raises(ValueError, match="3 token rows, 2 lengths"):
        data.save_token_shard(path, tokens, [4, 2], ["a", "b", "c"])


def test_analyze_frame_reads_color_position_shape_count():
    rng = np.random.default_rng(0)
    for color in data.COLORS:
        for shape, fill_range in [("circle", (0.7, 0.88)), ("square", (0.95, 1.0)), ("triangle", (0.45, 0.65))]:
            frame = data.draw_video(shape, color, np.array([[12.3, 20.7]]), 32, 5.0)[0]
            info = data.analyze_frame(frame)
            assert info["num_objects"] == 1 and info["color"] == color
            assert abs(info["centroid"][0] - 12.3) < 0.6, (shape, info)
            assert fill_range[0] <= info["fill"] <= fill_range[1], (shape, info["fill"])
    two = data.draw_video("square", "red", np.array([[8.0, 8.0]]), 32, 4.0)[0] | data.draw_video("circle", "blue", np.array([[24.0, 24.0]]), 32, 4.0)[0]
    assert data.analyze_frame(two)["num_objects"] == 2
    speck = np.zeros((32, 32, 3), np.uint8)
    speck[3, 3] = 255
    assert data.analyze_frame(speck)["num_objects"] == 0
    noisy = (rng.random((32, 32, 3)) * 60).astype(np.uint8)  # dim noise is background
    assert data.analyze_frame(noisy)["num_objects"] == 0


def test_train_val_split_is_disjoint_and_cached_reads_match(shapes_dir):
    manifest = os.path.join(shapes_dir, "videos.csv")
    train = data.KeyframeDataset(manifest, 32, 8, 3, split="train", val_fraction=0.25)
    val = data.KeyframeDataset(manifest, 32, 8, 3, split="val", val_fraction=0.25, cache=True)
    assert len(train) + len(val) == 24 and 0 < len(val) < 12
    assert not {r["path"] for r in train.rows} & {r["path"] for r in val.rows}
    first = val[0]["frames"]
    assert torch.equal(val[0]["frames"], first) and len(val.cache) == 1
    with pytest.raises(ValueError, match="unknown split"):
        data.KeyframeDataset(manifest, 32, 8, 3, split="test")


def test_preload_fills_one_shared_cache_and_leaves_bad_files_to_skip(shapes_dir, tmp_path, caplog):
    manifest = os.path.join(shapes_dir, "videos.csv")
    cache = {}
    train = data.ClipDataset(manifest, 32, 8, 2, split="train", val_fraction=0.25, cache=cache)
    val = data.KeyframeDataset(manifest, 32, 8, 3, split="val", val_fraction=0.25, cache=cache)
    assert train.preload() == len(train) and len(cache) == len(train)
    assert val.preload() == len(val) and len(cache) == 24 and val.preload() == 0
    for row in val.rows:
        assert np.array_equal(cache[row["path"]], data.read_frames(row["path"]))
    with pytest.raises(ValueError, match="cache=True"):
        data.ClipDataset(manifest, 32, 8, 2).preload()
    good = rows_of(manifest)[0]
    shutil.copy(os.path.join(shapes_dir, good["path"]), tmp_path / "good.mp4")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01 this is not a video" * 50)
    bad_manifest = str(tmp_path / "m.csv")
    data.write_manifest(bad_manifest, [{"path": "corrupt.mp4", "caption": "x"}, {"path": "good.mp4", "caption": "y"}],
                        ["path", "caption"])
    ds = data.ClipDataset(bad_manifest, 32, 8, 2, cache=True)
    assert ds.preload() == 2 and list(ds.cache) == [str(tmp_path / "good.mp4")]
    with caplog.at_level(logging.WARNING, logger="data"):
        assert ds[0]["caption"] == "y"  # the corrupt file is logged and skipped when sampled
    assert "corrupt.mp4" in caplog.text and ds.num_skipped == 1
