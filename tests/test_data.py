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
    ds = data.ClipDataset(os.path.join(shapes_dir, "videos.csv"), size=32, clip_frames=8, max_stride=4, cache=True)
    strides = []  # (read from RAM: the seeks into files are test_clip_frames_are_the_strided_frames')
    for i in range(40):
        item = ds[i % len(ds)]
        assert item["frames"].shape == (9, 3, 32, 32) and item["frames"].dtype == torch.float32
        assert item["frames"].min() >= -1 and item["frames"].max() <= 1
        assert item["frames"].min() == -1  # black background
        strides.append(item["frame_stride"])
    assert set(strides) == {1, 2, 3, 4}  # 33 frames fit 8 x 4 + 1
    ds_long = data.ClipDataset(os.path.join(shapes_dir, "videos.csv"), size=32, clip_frames=8, max_stride=10, cache=True)
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


# -----------------------------------------------------------------------------
# videos as people bring them: other codecs, containers, sizes and frame rates


@pytest.fixture(scope="module")
def real_videos(tmp_path_factory):
    """{name: path}: H.264 mp4 at 30 fps, VP9 webm at 25 fps (portrait), MPEG-4 avi at 24 fps, H.264 mkv and mov
    at 60 and 15 fps, a gif (12.5 fps), and the mp4's content at 8 fps."""
    out = tmp_path_factory.mktemp("real_videos")
    h264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")
    return {
        "mp4_30": data.write_test_pattern(out / "a.mp4", 30, codec=h264),
        "webm_25": data.write_test_pattern(out / "b.webm", 25, size="64x96", codec=("-c:v", "libvpx-vp9")),
        "avi_24": data.write_test_pattern(out / "c.avi", 24, codec=("-c:v", "mpeg4", "-q:v", "3")),
        "mkv_60": data.write_test_pattern(out / "d.mkv", 60, codec=h264),
        "mov_15": data.write_test_pattern(out / "e.mov", 15, codec=h264),
        "gif": data.write_test_pattern(out / "f.gif", 12, seconds=2),
        "mp4_8": data.write_test_pattern(out / "g.mp4", 8, codec=h264),
    }


def every_frame(path):
    """The reference: every frame as stored, decoded front to back by imageio-ffmpeg, and the file's rate."""
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    width, height = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]), meta["fps"]


@pytest.mark.parametrize("name", ["mp4_30", "webm_25", "avi_24", "mkv_60", "mov_15", "gif"])
def test_read_frames_seeks_to_the_frames_shown_at_those_times(real_videos, name):
    """Frame k at 8 fps is the stored frame shown at k / 8 s (nearest); seeking decodes the same pixels."""
    path = real_videos[name]
    ref, native = every_frame(path)
    at8 = data.read_frames(path, fps=8)
    assert len(at8) == data.frames_at(len(ref), 8, native) and len(at8) >= int(8 * len(ref) / native)
    shown = np.floor(np.arange(len(at8)) * native / 8 + 0.5).astype(int)
    assert np.array_equal(at8, ref[shown])
    for start, stride in [(0, 1), (3, (len(at8) - 4) // 8), (len(at8) - 9, 1), (1, (len(at8) - 2) // 8)]:
        indices = start + stride * np.arange(9)
        assert np.array_equal(data.read_frames(path, fps=8, indices=indices), at8[indices]), (start, stride)
    assert len(data.read_frames(path, fps=8, indices=[len(at8) - 1, len(at8) + 5])) == 1  # past the end: left out
    small = data.read_frames(path, 32, fps=8, indices=[len(at8) - 1, len(at8) + 5, len(at8) - 1])  # selected in ffmpeg
    assert len(small) == 2 and np.array_equal(small[0], small[1])


def test_read_frames_scales_and_crops_inside_ffmpeg_like_to_tensor(tmp_path):
    """A disc moving over a wide 96 x 64 video, read at 32 x 32: where to_tensor (torch) puts it, within 0.1 px."""
    frames = np.zeros((4, 64, 96, 3), np.uint8)
    ys, xs = np.mgrid[:64, :96]
    for i, frame in enumerate(frames):
        frame[(xs - 38 - 4 * i) ** 2 + (ys - 30) ** 2 <= 12 ** 2] = (250, 200, 60)
    path = str(tmp_path / "wide.mp4")
    data.write_mp4(path, frames)
    small = data.read_frames(path, size=32, indices=[1, 3], fps=8)
    want = data.to_uint8(data.to_tensor(data.read_frames(path)[[1, 3]], 32))
    assert small.shape == want.shape == (2, 32, 32, 3)
    for got, ref in zip(small, want):
        assert np.abs(centroid(got) - centroid(ref)).max() < 0.1
    assert np.abs(small.astype(float) - want).mean() < 2  # the filters differ at the disc's edge only


def test_clip_and_keyframe_datasets_read_time_not_frame_counts(real_videos, tmp_path):
    """One manifest of mixed files: every clip is 9 frames 1/8 s x stride apart in time, cached or seeked alike;
    keyframes are 1 s apart whatever the file's rate, and a header that overstates the length costs nothing."""
    names = ["mp4_30", "webm_25", "avi_24", "mkv_60", "mov_15", "gif", "mp4_8"]
    manifest = str(tmp_path / "m.csv")
    data.write_manifest(manifest, [{"path": real_videos[n], "caption": n} for n in names], ["path", "caption"])
    cached = data.ClipDataset(manifest, 32, 8, 2, cache=True)
    seeked = data.ClipDataset(manifest, 32, 8, 2)
    for seed in range(3):
        torch.manual_seed(seed)
        a = [cached[i] for i in range(len(names))]
        torch.manual_seed(seed)
        b = [seeked[i] for i in range(len(names))]
        for x, y in zip(a, b):
            assert x["caption"] == y["caption"] and x["frame_stride"] == y["frame_stride"]
            assert torch.equal(x["frames"], y["frames"]), x["caption"]
    assert seeked.num_skipped == cached.num_skipped == 0
    keyframes = data.KeyframeDataset(manifest, 32, 8, 3)
    for i, name in enumerate(names):
        ref, native = every_frame(real_videos[name])
        got = keyframes[i]["frames"]
        shown = [i for i in np.floor(np.array([0, 8, 16]) * native / 8 + 0.5).astype(int) if i < len(ref)]
        want = data.to_tensor(data.read_frames(real_videos[name], 32)[shown], 32)  # native frames, then picked
        assert got.shape[0] == (2 if name == "gif" else 3) and torch.equal(got, want), name


def test_motion_score_counts_seconds_not_frames(real_videos):
    """The same motion at 30 and at 8 fps scores the same: frames one second apart, whatever the rate."""
    def score(path):
        return data.motion_score(data.read_frames(path, fps=1), fps=1)
    fast, slow = score(real_videos["mp4_30"]), score(real_videos["mp4_8"])
    per_frame = data.motion_score(data.read_frames(real_videos["mp4_30"]), fps=8)  # 8 frames of 30 fps: 0.27 s
    assert fast > 0.01 and abs(fast - slow) < 0.12 * slow, (fast, slow)  # 6% apart: the codec's own noise
    assert abs(per_frame - slow) > 0.25 * slow, (per_frame, slow)  # 34% off: what counting frames got wrong


def test_a_header_that_overstates_the_length_is_corrected_not_skipped(tmp_path, caplog):
    """2 s of video under 4 s of audio: the header says 4 s; clips still come from the 2 s that exist."""
    import subprocess
    import imageio_ffmpeg
    path = tmp_path / "long_audio.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=64x64:rate=30:duration=2", "-f", "lavfi", "-i", "sine=duration=4",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)], check=True)
    assert data.video_info(str(path))["num_frames"] == 120  # 4 s x 30 fps, from the header
    truth = data.read_frames(str(path), 32, fps=8)
    assert len(truth) == 16
    manifest = str(tmp_path / "m.csv")
    data.write_manifest(manifest, [{"path": path.name, "caption": "x"}], ["path", "caption"])
    ds = data.ClipDataset(manifest, 32, 4, 3)
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="data"):
        items = [ds[0] for _ in range(12)]
    assert ds.num_skipped == 0 and "skipping" not in caplog.text and ds.num_frames(str(path)) == 16
    whole = data.to_tensor(truth, 32)
    for item in items:  # each clip is 5 frames of the 16, stride apart
        s = item["frame_stride"]
        assert any(torch.equal(whole[i:i + 4 * s + 1:s], item["frames"]) for i in range(16 - 4 * s))


def rss_anon_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


def test_token_rows_read_the_shards_rows_and_stay_on_disk(tmp_path):
    """TokenRows gives back exactly the rows load_token_shard reads (any order, repeats, shards of other lengths,
    zero padding past a shard's keyframes), with 2 of 5 shards mapped at a time; 80 MiB of shards read in
    batches add ~nothing to this process's anonymous memory (the rows are file pages, not copies)."""
    rng = torch.Generator().manual_seed(0)
    rows, loaded = [], []
    for s in range(5):
        k = 3 + s % 2  # shards padded to 3 or 4 keyframes
        tokens = torch.randn(64, k, 16, 256, generator=rng)  # 3 or 4 MiB
        path = str(tmp_path / f"videos_{s:03d}.safetensors")
        data.save_token_shard(path, tokens, torch.full((64,), k), [f"c{s}-{i}" for i in range(64)])
        keep = torch.arange(64)[torch.arange(64) % (s + 2) != 0]  # a filter, as load_tokens applies
        rows.append((path, keep))
        loaded.append(data.load_token_shard(path)[0][keep])
    half = str(tmp_path / "videos_005.safetensors")  # float16 on disk, float32 back, rounded once
    data.save_token_shard(half, torch.randn(64, 4, 16, 256, generator=rng), torch.full((64,), 4), ["h"] * 64,
                          dtype=torch.float16)
    rows.append((half, torch.arange(64)))
    loaded.append(data.load_token_shard(half)[0])
    assert loaded[-1].dtype == torch.float32 and torch.equal(loaded[-1], loaded[-1].half().float())
    table = data.TokenRows(rows, torch.full((sum(len(k) for _, k in rows),), 4), max_open=2)
    want = torch.cat([torch.nn.functional.pad(t, (0, 0, 0, 0, 0, 4 - t.shape[1])) for t in loaded])  # (M, 4, 16, 256)
    assert table.shape == want.shape and len(table) == len(want)
    pick = torch.randint(len(want), (200,), generator=rng)
    assert torch.equal(table[pick], want[pick]) and torch.equal(table[7][0], want[7])
    assert len(table.maps) <= 2
    big = []  # 20 shards of 4 MiB: 80 MiB on disk
    for s in range(20):
        path = str(tmp_path / f"big_{s:03d}.safetensors")
        data.save_token_shard(path, torch.randn(64, 4, 16, 256, generator=rng), torch.full((64,), 4), ["x"] * 64)
        big.append((path, torch.arange(64)))
    before = rss_anon_kib()
    table = data.TokenRows(big, torch.full((20 * 64,), 4))
    for _ in range(100):
        batch = table[torch.randint(len(table), (16,), generator=rng)]  # 4 MiB per batch, freed after
    del batch
    assert rss_anon_kib() - before < 16 * 1024  # KiB: 16 MiB at most, against 80 MiB of tokens read


def test_msrvtt_test_split_with_one_seeded_caption_each(tmp_path, caplog):
    """data.py msrvtt: the test split's videos only (in id order), each with one of its own captions drawn by the
    seed, as a path,caption manifest every reader takes and a prompts file; a video without a file is one warning."""
    import json
    videos = tmp_path / "TestVideo"
    videos.mkdir()
    meta = {"videos": [{"video_id": f"video{i}", "split": "test" if i >= 7010 else "train"} for i in
                       (7009, 7011, 7010, 9999, 7012)],
            "sentences": [{"video_id": f"video{i}", "caption": f"clip {i} caption {j} ", "sen_id": 100 * i + j}
                          for i in (7009, 7010, 7011, 7012, 9999) for j in range(20)]}
    for i in (7009, 7010, 7011, 9999):  # video7012 has no file
        data.write_test_pattern(str(videos / f"video{i}.mp4"), fps=10, size="48x32", seconds=2)
    (tmp_path / "test_videodatainfo.json").write_text(json.dumps(meta))
    picks = {}
    for seed in (0, 1):
        out = tmp_path / f"msrvtt{seed}"
        with caplog.at_level(logging.WARNING, logger="data"):
            data.main(["msrvtt", "--annotations", str(tmp_path / "test_videodatainfo.json"), "--videos", str(videos),
                       "--out", str(out), "--seed", str(seed)])
        rows = data.read_manifest(str(out / "videos.csv"))
        assert [os.path.basename(r["path"]) for r in rows] == ["video7010.mp4", "video7011.mp4", "video9999.mp4"]
        assert all(r["caption"].startswith(f"clip {os.path.basename(r['path'])[5:9]} caption ") for r in rows)
        assert (out / "prompts.txt").read_text().splitlines() == [r["caption"] for r in rows]
        assert data.KeyframeDataset(str(out / "videos.csv"), 16, 4, 3, fps=8)[0]["frames"].shape == (3, 3, 16, 16)
        picks[seed] = [r["caption"] for r in rows]
    assert sum("video7012" in r.getMessage() for r in caplog.records) == 2  # once per run
    data.main(["msrvtt", "--annotations", str(tmp_path / "test_videodatainfo.json"), "--videos", str(videos),
               "--out", str(tmp_path / "again"), "--seed", "0"])
    assert [r["caption"] for r in data.read_manifest(str(tmp_path / "again" / "videos.csv"))] == picks[0]
    assert picks[0] != picks[1]  # the seed picks the caption
    with pytest.raises(SystemExit, match="none of its 4 test videos has a caption and a file"):
        data.main(["msrvtt", "--annotations", str(tmp_path / "test_videodatainfo.json"), "--videos",
                   str(tmp_path), "--out", str(tmp_path / "none")])
