"""
Data for nanoDiCoDe: the synthetic "shapes" text-video set and the readers that feed
the tokenizer and the AR model from any `path,caption` manifest.

    python data.py shapes --out data/shapes --num_videos 1000 --size 32 --num_frames 33 --seed 0
    python data.py motion --manifest data/shapes/videos.csv     # (re)compute motion scores
    python data.py msrvtt --annotations MSRVTT/test_videodatainfo.json --videos MSRVTT/TestVideo --out data/msrvtt

A manifest is a CSV with columns `path,caption` (paths relative to the manifest) and an
optional `motion` column (see `motion_score`). Your own clips (e.g. WebVid exported as
`path,caption`) go through exactly the same code as the shapes set.
"""
import argparse
import csv
import json
import logging
import math
import os
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor

import imageio
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

log = logging.getLogger("data")
# read_frames asks ffmpeg to scale; imageio_ffmpeg would warn that the frames differ from the source size
logging.getLogger("imageio_ffmpeg").addFilter(lambda record: not record.getMessage().startswith("The frame size for"))

# -----------------------------------------------------------------------------
# The shapes set: one object per video on black, 7 colors x 3 shapes x 5 motions, bouncing off the edges

COLORS = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "cyan": (0, 255, 255), "magenta": (255, 0, 255), "white": (255, 255, 255),
}
SHAPES = ("circle", "square", "triangle")
RADIUS = (0.20, 0.26)  # object radius / frame size: against 0.12-0.18, reconstructions' shape 35 -> 58% (NOTES.md)
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
FPS = 8


def caption_for(color, shape, direction):
    if direction == "still":
        return f"a {color} {shape} standing still"
    return f"a {color} {shape} moving {direction}"


def shape_mask(shape, cx, cy, radius, size, supersample=4):
    """Coverage in [0, 1] of a shape centred at (cx, cy) (pixel units), shape (size, size).

    With supersample > 1 each pixel is the mean of supersample^2 sub-pixel tests
    (anti-aliasing); supersample = 1 gives hard edges.
    """
    s = supersample
    coords = (np.arange(size * s) + 0.5) / s  # sub-pixel centres in pixel units
    x, y = np.meshgrid(coords, coords)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = dx ** 2 + dy ** 2 <= radius ** 2
    elif shape == "square":
        half = radius * 0.85  # same visual area class as the circle
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    elif shape == "triangle":  # upward-pointing, apex at cy - radius, base at cy + radius
        inside = (dy <= radius) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return inside.reshape(size, s, size, s).mean(axis=(1, 3))


def object_track(direction, num_frames, size, radius, speed, rng, clear_frames=8):
    """Centre positions (num_frames, 2) of an object moving `speed` px/frame, bouncing off the edges.

    Moving objects start anywhere they reach no wall within their first `clear_frames` frames (the
    first clip shows the caption's direction). Starting them in the first third of their range, as
    this set once did, let the AR model read the direction off keyframe 0's position and ignore the
    caption (NOTES.md, 2026-11-29).
    """
    lo, hi = radius + 0.5, size - radius - 0.5
    pos = rng.uniform(lo, hi, size=2)
    vel = np.array(DIRECTIONS[direction], dtype=np.float64) * speed
    reach = min(clear_frames * speed, (hi - lo) / 2)
    for axis in range(2):
        if vel[axis] > 0:
            pos[axis] = rng.uniform(lo, hi - reach)
        elif vel[axis] < 0:
            pos[axis] = rng.uniform(lo + reach, hi)
    track = np.empty((num_frames, 2))
    for i in range(num_frames):
        track[i] = pos
        pos = pos + vel
        for axis in range(2):  # reflect at the walls
            if pos[axis] > hi:
                pos[axis], vel[axis] = 2 * hi - pos[axis], -vel[axis]
            elif pos[axis] < lo:
                pos[axis], vel[axis] = 2 * lo - pos[axis], -vel[axis]
    return track


def draw_video(shape, color, track, size, radius, antialias=True):
    """Frames (T, H, W, 3) uint8 of one colored shape following `track` on black."""
    rgb = np.array(COLORS[color], dtype=np.float64)
    frames = [shape_mask(shape, cx, cy, radius, size, 4 if antialias else 1)[..., None] * rgb
              for cx, cy in track]
    return np.round(np.stack(frames)).astype(np.uint8)


def write_mp4(path, frames, fps=FPS):
    """Write uint8 frames (T, H, W, 3) as H.264 (4:4:4, near lossless: tiny shapes keep their color)."""
    with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", quality=None,
                            pixelformat="yuv444p", macro_block_size=1, ffmpeg_log_level="error",
                            output_params=["-crf", "4"]) as writer:
        for frame in frames:
            writer.append_data(frame)


def write_manifest(path, rows, columns):
    """Write a CSV manifest atomically (temp file + rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def generate_shapes(out, num_videos, size=32, num_frames=33, seed=0, speed=0.75,
                    still_fraction=0.2, antialias=True, workers=2, radius_range=RADIUS):
    """Draw `num_videos` one-object videos into `out`: mp4s + videos.csv, head-frame pngs + images.csv.

    Same arguments, same files. The image-text set holds the head frame of every video
    with the caption "a {color} {shape}". radius_range: (low, high) object radius as fractions of size.
    """
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    rng = np.random.default_rng(seed)
    moving = [d for d in DIRECTIONS if d != "still"]
    jobs = []
    for i in range(num_videos):  # all random draws happen here, in order, so the set is reproducible
        color = list(COLORS)[rng.integers(len(COLORS))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        direction = "still" if rng.random() < still_fraction else moving[rng.integers(len(moving))]
        radius = rng.uniform(size * radius_range[0], size * radius_range[1])
        track = object_track(direction, num_frames, size, radius, speed, rng)
        jobs.append((i, color, shape, direction, radius, track))

    def render(job):
        i, color, shape, direction, radius, track = job
        frames = draw_video(shape, color, track, size, radius, antialias)
        video_path, image_path = f"videos/{i:06d}.mp4", f"images/{i:06d}.png"
        write_mp4(os.path.join(out, video_path), frames)
        imageio.imwrite(os.path.join(out, image_path), frames[0])
        video_row = {"path": video_path, "caption": caption_for(color, shape, direction),
                     "motion": f"{motion_score(frames):.5f}"}
        return video_row, {"path": image_path, "caption": f"a {color} {shape}"}

    with ThreadPoolExecutor(workers) as pool:  # encoding runs in ffmpeg subprocesses
        rows = list(tqdm(pool.map(render, jobs), total=len(jobs), desc="drawing shapes videos"))
    write_manifest(os.path.join(out, "videos.csv"), [r[0] for r in rows], ["path", "caption", "motion"])
    write_manifest(os.path.join(out, "images.csv"), [r[1] for r in rows], ["path", "caption"])
    return rows


def analyze_frame(frame, threshold=96, min_pixels=3):
    """Deterministic read-out of a shapes frame (H, W, 3) uint8: what object is where.

    Object pixels are those whose brightest channel exceeds `threshold`; 4-connected
    groups of at least `min_pixels` count as objects. Returns {'num_objects', 'color'
    (nearest palette color to the mean object color), 'centroid' (x, y) in pixels,
    'fill' (object pixels / bounding-box pixels: about 0.79 circle, 1 square, 0.5
    triangle)}; color, centroid and fill are None when no object is found.
    """
    mask = frame.max(axis=-1) > threshold
    labels, num_objects = np.zeros(mask.shape, np.int32), 0
    for y0, x0 in zip(*np.nonzero(mask)):  # flood fill each unlabelled object pixel
        if labels[y0, x0]:
            continue
        num_objects += 1
        stack, members = [(y0, x0)], []
        labels[y0, x0] = num_objects
        while stack:
            y, x = stack.pop()
            members.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = num_objects
                    stack.append((ny, nx))
        if len(members) < min_pixels:  # specks do not count as objects
            num_objects -= 1
            for y, x in members:
                labels[y, x], mask[y, x] = -1, False
    if not mask.any():
        return {"num_objects": 0, "color": None, "centroid": None, "fill": None}
    ys, xs = np.nonzero(mask)
    mean_rgb = frame[mask].astype(np.float64).mean(axis=0)
    names = list(COLORS)
    color = names[int(np.argmin([np.square(mean_rgb - np.array(COLORS[n])).sum() for n in names]))]
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    return {"num_objects": num_objects, "color": color, "centroid": (float(xs.mean() + 0.5), float(ys.mean() + 0.5)),
            "fill": float(mask.sum() / box)}


def to_uint8(frames):
    """float frames (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)."""
    x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


# -----------------------------------------------------------------------------
# Videos to watch (sample.py): upscaled, in a format every player reads

def upscale(frames, min_size=128):
    """Nearest-neighbour upscaling (..., H, W, 3) by the smallest integer factor making both sides >= min_size."""
    scale = max(1, math.ceil(min_size / min(frames.shape[-3:-1])))
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def write_video(path, frames, fps=FPS, min_size=128):
    """uint8 frames (F, H, W, 3) -> .mp4 (H.264, yuv420p: plays everywhere) or .gif, chosen by the extension.

    Frames are upscaled (nearest neighbour) to >= min_size px so a 32 px video is viewable, and
    padded with black to even sides, which yuv420p needs.
    """
    frames = upscale(np.asarray(frames, dtype=np.uint8), min_size)
    H, W = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".mp4"):
        with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                                macro_block_size=2, ffmpeg_log_level="error", quality=None,
                                output_params=["-crf", "18"]) as writer:
            for frame in frames:
                writer.append_data(frame)
    elif path.endswith(".gif"):
        imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)
    else:
        raise ValueError(f"unknown video extension in {path}; expected .mp4 or .gif")


def write_test_pattern(path, fps, size="96x64", seconds=3, codec=()):
    """ffmpeg's testsrc2 pattern (it changes with time, not frame count) as a video at `fps`, encoded with the
    ffmpeg arguments `codec` (default: the container's): videos of any kind to try the readers on."""
    import imageio_ffmpeg
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate={fps}:duration={seconds}", *codec, str(path)], check=True)
    return str(path)


def side_by_side(*videos, gap=1):
    """uint8 videos (F, H, W, 3) of the same shape -> one (F, H, n W + gaps, 3), with gray separators."""
    sep = np.full((*videos[0].shape[:2], gap, 3), 128, np.uint8)  # (F, H, gap, 3)
    parts = [videos[0]]
    for v in videos[1:]:
        parts += [sep, v]
    return np.concatenate(parts, axis=2)


# -----------------------------------------------------------------------------
# Reading any manifest

def motion_score(frames, fps=FPS):
    """Mean absolute change of gray-scale frames one second apart, in [0, 1] (0 = still).

    A cheap stand-in for the paper's optical-flow motion score at 1 fps (supp. 6), used
    the same way: keep videos whose score lies between a minimum and a maximum.
    frames: (T, H, W, 3) uint8.
    """
    gray = frames.astype(np.float32).mean(axis=-1) / 255.0  # (T, H, W)
    keyframes = gray[::fps]
    if len(keyframes) < 2:  # shorter than a second: compare the ends
        keyframes = gray[[0, -1]]
    return float(np.abs(np.diff(keyframes, axis=0)).mean())


def read_manifest(path, min_motion=None, max_motion=None):
    """Rows [{'path': absolute path, 'caption': str, ...}] of a `path,caption` CSV.

    Rows with an empty caption are skipped with a warning; `min_motion`/`max_motion`
    keep rows whose `motion` column lies in the bounds. Raises ValueError when the
    columns are missing or no listed file exists.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest {path} does not exist")
    root = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"manifest {path} lacks column(s) {sorted(missing)}; "
                             f"found {reader.fieldnames}, expected at least path,caption")
        if (min_motion is not None or max_motion is not None) and "motion" not in reader.fieldnames:
            raise ValueError(f"manifest {path} has no motion column; run `python data.py motion --manifest {path}`")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not (row["caption"] or "").strip():
                log.warning("skipping %s (line %d of %s): empty caption", row["path"], line, path)
                continue
            if min_motion is not None and float(row["motion"]) < min_motion:
                continue
            if max_motion is not None and float(row["motion"]) > max_motion:
                continue
            rows.append({**row, "path": os.path.join(root, row["path"])})
    if not any(os.path.isfile(r["path"]) for r in rows):
        raise ValueError(f"manifest {path} names no existing file ({len(rows)} usable rows)")
    return rows


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def video_info(path):
    """{'fps', 'num_frames', 'size': (W, H)} of a video file from its header (ffmpeg starts, decodes nothing).
    num_frames is duration x fps, an estimate: `read_frames` says when a file holds fewer."""
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(path, output_params=["-frames:v", "1", "-vf", "scale=2:2"])  # not decode ahead
    try:
        meta = next(reader)
    finally:
        reader.close()
    if not meta.get("fps") or not meta.get("duration"):
        raise ValueError(f"no frame rate or duration in the header (fps {meta.get('fps')}, duration {meta.get('duration')})")
    return {"fps": float(meta["fps"]), "num_frames": max(1, round(meta["duration"] * meta["fps"])),
            "size": tuple(meta["source_size"])}


def frames_at(num_frames, fps, native_fps):
    """How many frames a video of num_frames at native_fps has when read at `fps` (frame k: the one shown at k / fps;
    None: as stored)."""
    return num_frames if fps is None else math.ceil((num_frames - 0.5) * fps / native_fps)


def seek_params(first, native_fps):
    """ffmpeg input options that land on native frame `first` (half a frame early, so rounding cannot skip it)."""
    return ["-ss", f"{(first - 0.5) / native_fps:.6f}"] if first > 0 else []


def shown_frames(k, fps, native_fps):
    """The stored frames (indices at native_fps) shown at times k / fps, the nearest in time (fps None: k itself)."""
    if fps is None:
        return np.asarray(k, dtype=np.int64)
    return np.floor(np.asarray(k, dtype=np.float64) * native_fps / fps + 0.5).astype(np.int64)


def read_frames(path, size=None, fps=None, indices=None, info=None):
    """uint8 frames (T, H, W, 3) of a video (any container/codec ffmpeg reads, gif included) or an image.

    fps: read the video at this rate, whatever the file's own (frame k is the one shown at time k / fps;
    None: every frame as stored). indices: only these frames (at `fps`): ffmpeg seeks to the first and
    decoding stops after the last; indices past the file's end are left out (a shorter result).
    size: scale the short side to `size` and center-crop size x size inside ffmpeg (None: as stored).
    info: `video_info(path)`, when the caller has it (a seek needs the file's rate before it starts).
    """
    if path.lower().endswith(IMAGE_EXTENSIONS):
        image = np.asarray(imageio.v2.imread(path))
        image = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
        return image[None, ..., :3]
    import imageio_ffmpeg
    indices = None if indices is None else np.asarray(indices, dtype=np.int64)
    native = info["fps"] if info else None
    if indices is not None and len(indices) and indices.min() > 0 and native is None:
        native = video_info(path)["fps"]
    seek = native is not None and indices is not None and len(indices) > 0
    wanted = shown_frames(indices, fps, native) if seek else None  # native frames, known before ffmpeg starts
    first = int(wanted.min()) if seek else 0
    input_params = seek_params(first, native)
    output_params = ["-fps_mode", "passthrough"]  # each stored frame once (ffmpeg may repeat one after a seek)
    scale = f"scale='if(lt(iw,ih),{size},-2)':'if(lt(iw,ih),-2,{size})':flags=bilinear,crop={size}:{size}"
    if seek and size:  # rate and frame size known: ffmpeg straight into a pipe (no header to wait for, ~35 ms less)
        kept = np.unique(wanted - first)  # frames past the seek point; only these are scaled and piped
        select = "select='" + "+".join(f"eq(n,{k})" for k in kept) + "'"
        run = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", *input_params, "-i",
                              path, *output_params, "-frames:v", str(len(kept)), "-vf", f"{select},{scale}",
                              "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True)
        if run.returncode:
            raise ValueError((run.stderr.decode(errors="replace").strip().splitlines() or ["ffmpeg failed"])[-1])
        frames = np.frombuffer(run.stdout, np.uint8).reshape(-1, size, size, 3)  # the kept frames, in order
        read = np.isin(wanted - first, kept[:len(frames)])  # the file may end before the last of them
        return frames[np.searchsorted(kept, wanted[read] - first)]
    if seek:  # stop decoding after the last frame needed (ffmpeg would decode ahead and queue frames meanwhile)
        output_params += ["-frames:v", str(int(wanted.max()) - first + 1)]
    elif indices is not None and fps:
        output_params += ["-t", f"{(indices.max() + 1) / fps:.6f}" if len(indices) else "0"]
    if size:  # short side -> size (antialiased bilinear, as to_tensor), then the center square, before piping
        output_params += ["-vf", scale]
    reader = imageio_ffmpeg.read_frames(path, input_params=input_params, output_params=output_params)
    try:
        meta = next(reader)
        width, height = meta["size"]
        if fps and not meta.get("fps"):
            raise ValueError("no frame rate in the header")
        native = native or meta["fps"]
        if indices is not None and not seek:  # from frame 0: the file's rate came with its header
            wanted = shown_frames(indices, fps, native)
        needed = None if wanted is None else int(wanted.max()) + 1 - first if len(wanted) else 0
        frames = []
        for frame in reader if needed != 0 else ():  # native frames first, first + 1, ...; stop after the last needed
            frames.append(np.frombuffer(frame, np.uint8).reshape(height, width, 3))
            if len(frames) == needed:
                break
    finally:
        reader.close()
    frames = np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)
    if wanted is not None:
        return frames[wanted[wanted - first < len(frames)] - first]
    if not len(frames):
        raise ValueError("no frames decoded")
    return frames[shown_frames(np.arange(frames_at(len(frames), fps, native)), fps, native)] if fps else frames


def decoded_mib(paths, size, fps=FPS, sample=16):
    """Estimated RAM (MiB) of all `paths` decoded at size x size and `fps`, from the headers of up to `sample`
    of them spread over the list (unreadable ones are left out of the estimate)."""
    paths = sorted(set(paths))
    picked = paths[::max(1, len(paths) // sample)][:sample]
    frames = []
    for path in picked:
        try:
            info = {"fps": fps or 1, "num_frames": 1} if path.lower().endswith(IMAGE_EXTENSIONS) else video_info(path)
            frames.append(frames_at(info["num_frames"], fps, info["fps"]))
        except Exception:
            continue
    return (np.mean(frames) if frames else 0.0) * len(paths) * size * size * 3 / 2 ** 20


def to_tensor(frames, size):
    """uint8 (T, H, W, 3) -> float (T, 3, size, size) in [-1, 1]: resize the short side, center-crop."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (T, 3, H, W)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top:top + size, left:left + size]
    return x.clamp(-1.0, 1.0)


def in_split(path, split, val_fraction):
    """Deterministic train/val split by a hash of the file name (stable when rows are added)."""
    if split == "all":
        return True
    is_val = zlib.crc32(os.path.basename(path).encode()) % 10000 < val_fraction * 10000
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}; expected 'train', 'val' or 'all'")
    return is_val == (split == "val")


class ManifestDataset(torch.utils.data.Dataset):
    """Base class: reads rows of a manifest, skips unreadable files with one warning each.

    Videos are read at `fps` (time, not the file's frame count, sets what a frame index means; None: as stored)
    and `size`, scaled inside ffmpeg. With `cache`, each video is decoded whole once and kept;
    without, each sample seeks and decodes only the stretch it needs. Subclasses implement
    `load(row, generator)`, which raises on bad input (corrupt, too short, missing); `get` then
    logs the file once, counts it in `num_skipped` and returns the next readable sample instead.
    """

    def __init__(self, manifest, size, min_motion=None, max_motion=None, split="all", val_fraction=0.05,
                 cache=False, fps=FPS):
        self.manifest, self.size, self.fps = manifest, size, fps
        self.rate = f"{fps:g} fps" if fps else "the file's rate"  # for messages
        self.rows = [r for r in read_manifest(manifest, min_motion, max_motion) if in_split(r["path"], split, val_fraction)]
        if not self.rows:
            raise ValueError(f"manifest {manifest} has no rows in split {split!r} (val_fraction {val_fraction})")
        self.bad_paths = set()
        self.infos, self.lengths = {}, {}  # video_info and frames at self.fps by path, read once
        # whole videos decoded at (size, fps) by path, for sets that fit in RAM; pass one dict to several datasets to share it
        self.cache = cache if isinstance(cache, dict) else {} if cache else None

    def num_frames(self, path):
        """Frames of the video at self.fps: counted when cached (or once a clip found fewer), else from its header."""
        if self.cache is not None:
            return len(self.read(path))
        if path not in self.lengths:
            self.infos[path] = video_info(path)
            self.lengths[path] = frames_at(self.infos[path]["num_frames"], self.fps, self.infos[path]["fps"])
        return self.lengths[path]

    def read(self, path, indices=None):
        """Frames `indices` (all if None) of the video read at (self.size, self.fps), uint8 (T, size, size, 3);
        indices past its end are left out."""
        if self.cache is None:
            return read_frames(path, self.size, self.fps, indices, self.infos.get(path))
        if path not in self.cache:
            self.cache[path] = read_frames(path, self.size, self.fps)
        frames = self.cache[path]
        indices = None if indices is None else np.asarray(indices)
        return frames if indices is None else frames[indices[indices < len(frames)]]

    def preload(self, workers=4):
        """Decode every file into the cache up front, `workers` files at a time (each decode is
        mostly an ffmpeg subprocess, so threads overlap them). Unreadable files are left for
        __getitem__ to log and skip. Returns the number of files decoded."""
        if self.cache is None:
            raise ValueError("preload needs a dataset built with cache=True (or a shared cache dict)")
        todo = sorted({r["path"] for r in self.rows} - set(self.cache) - self.bad_paths)

        def decode(path):
            try:
                return path, read_frames(path, self.size, self.fps)
            except Exception:  # logged when a sample asks for it
                return path, None
        with ThreadPoolExecutor(workers) as pool:
            for path, frames in tqdm(pool.map(decode, todo), total=len(todo), desc=f"decoding {os.path.basename(self.manifest)}",
                                     mininterval=2.0, disable=len(todo) < 64):
                if frames is not None:
                    self.cache[path] = frames
        return len(todo)

    @property
    def num_skipped(self):
        return len(self.bad_paths)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.get(index)

    def get(self, index, seed=None):
        """self[index], its random draws from a generator seeded with `seed` (None: torch's global RNG): items
        read in parallel threads, each with a seed drawn up front, do not depend on the threads' timing."""
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        for attempt in range(len(self.rows)):
            row = self.rows[(index + attempt) % len(self.rows)]
            if row["path"] in self.bad_paths:
                continue
            try:
                return self.load(row, generator)
            except Exception as e:  # bad input never kills a run
                self.bad_paths.add(row["path"])
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0]  # ffmpeg errors run over many lines
                log.warning("skipping %s: %s (%d skipped so far)", row["path"], reason, self.num_skipped)
        raise RuntimeError(f"no readable sample left in {self.manifest} ({self.num_skipped} files skipped)")


class ClipDataset(ManifestDataset):
    """Tokenizer clips: `clip_frames + 1` frames (head, in-between, rear) at a random frame stride
    (in frames at `fps`: the stride of a clip means the same time whatever the file's own rate).

    Returns {'frames': (clip_frames + 1, 3, size, size) in [-1, 1], 'frame_stride': int,
    'caption': str}. The stride is drawn uniformly from [1, max_stride] among the
    strides the video is long enough for; the start frame is uniform too. Randomness
    comes from torch's global RNG (or `get`'s seed), so runs are reproducible under
    torch.manual_seed.
    """

    def __init__(self, manifest, size, clip_frames, max_stride, **kw):
        super().__init__(manifest, size, **kw)
        self.clip_frames, self.max_stride = clip_frames, max_stride

    def load(self, row, generator=None):
        for attempt in range(2):  # a second draw once the file is counted, when it ended sooner than its header said
            n = self.num_frames(row["path"])
            strides = [s for s in range(1, self.max_stride + 1) if self.clip_frames * s < n]
            if not strides:
                raise ValueError(f"too short: {n} frames at {self.rate}, a clip needs {self.clip_frames + 1}")
            stride = strides[torch.randint(len(strides), (), generator=generator).item()]
            start = torch.randint(n - self.clip_frames * stride, (), generator=generator).item()
            frames = self.read(row["path"], start + stride * np.arange(self.clip_frames + 1))
            if len(frames) == self.clip_frames + 1:
                return {"frames": to_tensor(frames, self.size), "frame_stride": stride, "caption": row["caption"]}
            self.lengths[row["path"]] = len(self.read(row["path"]))  # shorter than its header says (a longer audio track)
        raise ValueError(f"decoded {len(frames)} of {self.clip_frames + 1} frames twice")


class KeyframeDataset(ManifestDataset):
    """AR-model videos: keyframes every `keyframe_interval` frames at `fps`, at most `max_keyframes`.

    Returns {'frames': (K, 3, size, size), 'caption': str}, min_keyframes <= K <= max_keyframes.
    """

    def __init__(self, manifest, size, keyframe_interval, max_keyframes, min_keyframes=2, **kw):
        super().__init__(manifest, size, **kw)
        self.keyframe_interval, self.max_keyframes, self.min_keyframes = keyframe_interval, max_keyframes, min_keyframes

    def load(self, row, generator=None):
        frames = self.read(row["path"], self.keyframe_interval * np.arange(self.max_keyframes))  # from the start: no seek
        if len(frames) < self.min_keyframes:
            raise ValueError(f"too short: needs at least {self.keyframe_interval * (self.min_keyframes - 1) + 1} "
                             f"frames at {self.rate} for {self.min_keyframes} keyframes")
        return {"frames": to_tensor(frames, self.size), "caption": row["caption"]}


class ImageTextDataset(ManifestDataset):
    """Image-text pairs as single keyframes: {'frames': (1, 3, size, size), 'caption': str}."""

    def load(self, row, generator=None):
        if not os.path.isfile(row["path"]):
            raise FileNotFoundError("missing file")
        return {"frames": to_tensor(self.read(row["path"])[:1], self.size), "caption": row["caption"]}


# -----------------------------------------------------------------------------
# Deep-token files: what `tokenizer.py encode` writes and the AR model reads

def save_token_shard(path, deep_tokens, num_keyframes, captions, motion=None, dtype=torch.float32):
    """Write one shard atomically as safetensors, the tokens as `dtype` (float32 or float16).

    deep_tokens: (N, K, N_q, C) float, keyframes past num_keyframes[i] are zero padding;
    num_keyframes: (N,) int; captions: N strings (kept in the file's metadata);
    motion: (N,) float motion scores (NaN where unknown).
    """
    from safetensors.torch import save_file
    n = deep_tokens.shape[0]
    if not (len(num_keyframes) == len(captions) == n):
        raise ValueError(f"{path}: {n} token rows, {len(num_keyframes)} lengths, {len(captions)} captions")
    motion = torch.full((n,), float("nan")) if motion is None else torch.as_tensor(motion, dtype=torch.float32)
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"{path}: deep tokens are stored as float32 or float16, not {dtype}")
    tensors = {"deep_tokens": deep_tokens.to(dtype).contiguous(),
               "num_keyframes": torch.as_tensor(num_keyframes, dtype=torch.int64),
               "motion": motion.contiguous()}
    bad = (~torch.isfinite(tensors["deep_tokens"]).flatten(1).all(1)).nonzero().flatten().tolist()
    tmp = path + ".tmp"  # the rows with NaN / inf tokens are listed, so a reader need not scan the tokens for them
    save_file(tensors, tmp, metadata={"captions": json.dumps(list(captions)), "nonfinite_rows": json.dumps(bad)})
    os.replace(tmp, path)


def shard_nonfinite_rows(path):
    """The rows of a shard whose tokens hold NaN or inf, as save_token_shard listed them; None for a shard
    written without the list (the reader then has to look at the tokens)."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        listed = f.metadata().get("nonfinite_rows")
    return None if listed is None else json.loads(listed)


def load_token_shard(path, with_tokens=True):
    """(deep_tokens (N, K, N_q, C) float32, num_keyframes (N,), captions [N], motion (N,)) of one shard
    (deep_tokens None without with_tokens: `map_token_shard` leaves them on disk)."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        captions = json.loads(f.metadata()["captions"])
        tokens = f.get_tensor("deep_tokens").float() if with_tokens else None
        return tokens, f.get_tensor("num_keyframes"), captions, f.get_tensor("motion")


def map_token_shard(path):
    """A shard's deep tokens (N, K, N_q, C) as a read-only np.memmap of the file: rows are read from disk when
    indexed, so memory does not grow with the data (nanoGPT reads train.bin this way)."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")  # safetensors: u64 header size, JSON header, then the data
        entry = json.loads(f.read(header_len))["deep_tokens"]
    dtype = {"F32": np.float32, "F16": np.float16}.get(entry["dtype"])
    if dtype is None:
        raise ValueError(f"{path}: deep_tokens stored as {entry['dtype']}, expected F32 or F16")
    begin, end = entry["data_offsets"]
    if begin == end:  # no rows: nothing to map
        return np.zeros(entry["shape"], dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + header_len + begin, shape=tuple(entry["shape"]))


class TokenRows:
    """Rows of deep-token shards, left on disk: rows[index] -> (n, T, N_q, C) float32, zero-padded to T keyframes.

    rows: (path, row numbers in that shard) per shard. At most `max_open` shards stay mapped at once (each
    map holds a file descriptor); the rest are mapped again when a batch needs them.
    """

    def __init__(self, rows, num_keyframes, max_open=64):
        self.paths = [path for path, _ in rows]
        self.shard = torch.cat([torch.full((len(r),), i, dtype=torch.int32) for i, (_, r) in enumerate(rows)])
        self.row = torch.cat([torch.as_tensor(r, dtype=torch.int64) for _, r in rows])  # (M,) each
        self.maps, self.max_open = {}, max_open
        first = self.map(0) if rows else np.zeros((0, 0, 0, 0))
        self.shape = (len(self.row), int(num_keyframes.max()) if len(num_keyframes) else 0, *first.shape[2:])

    def map(self, shard):
        if shard not in self.maps:
            if len(self.maps) >= self.max_open:
                self.maps.pop(next(iter(self.maps)))  # the oldest
            self.maps[shard] = map_token_shard(self.paths[shard])
        return self.maps[shard]

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        shard, row = self.shard[index].reshape(-1), self.row[index].reshape(-1)
        out = torch.zeros(len(row), *self.shape[1:])
        for s in shard.unique().tolist():
            picked = (shard == s).nonzero().flatten()
            tokens = torch.from_numpy(np.asarray(self.map(s)[row[picked].numpy()], dtype=np.float32))  # a copy
            T = min(self.shape[1], tokens.shape[1])
            out[picked, :T] = tokens[:, :T]
        return out


# -----------------------------------------------------------------------------

def add_motion_scores(manifest):
    """Compute `motion_score` for every readable video of a manifest and rewrite it with a motion column."""
    root = os.path.dirname(os.path.abspath(manifest))
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames) + ([] if "motion" in reader.fieldnames else ["motion"])
        rows = list(reader)
    for row in tqdm(rows, desc="motion scores"):
        try:
            row["motion"] = f"{motion_score(read_frames(os.path.join(root, row['path']), fps=1), fps=1):.5f}"
        except Exception as e:
            log.warning("skipping %s: %s", row["path"], e)
            row["motion"] = "nan"  # NaN fails every bound, so a filtered run skips it
    write_manifest(manifest, rows, columns)


def msrvtt_test_set(annotations, video_dir, out, seed=0):
    """The paper's zero-shot evaluation set (Sec. 4.2): MSR-VTT's test split (2,990 videos, video7010-video9999)
    with one of each video's 20 captions drawn at random (seeded). `annotations`: MSR-VTT's JSON (e.g.
    test_videodatainfo.json or MSRVTT_data.json: "videos" with video_id and split, "sentences" with video_id and
    caption); `video_dir`: the {video_id}.mp4 files. Writes out/videos.csv (path,caption: FVD's real videos and
    CLIPSIM's prompts) and out/prompts.txt (sample.py --prompts_file); a missing file is one warning and left out.
    Returns the number of rows written."""
    with open(annotations) as f:
        meta = json.load(f)
    test = sorted((v["video_id"] for v in meta["videos"] if v.get("split") == "test"), key=lambda v: int(v[5:]))
    captions = {}
    for sentence in meta["sentences"]:
        captions.setdefault(sentence["video_id"], []).append(sentence["caption"].strip())
    rng, rows, missing = np.random.default_rng(seed), [], 0
    os.makedirs(out, exist_ok=True)
    for video_id in test:
        path = os.path.join(video_dir, f"{video_id}.mp4")
        options = sorted(captions.get(video_id, []))
        caption = options[rng.integers(len(options))] if options else None  # one draw per video, found or not
        if caption is None or not os.path.isfile(path):
            missing += 1
            log.warning("skipping %s: %s", video_id, "no caption" if caption is None else f"no file {path}")
            continue
        rows.append({"path": os.path.relpath(os.path.abspath(path), os.path.abspath(out)), "caption": caption})
    if not rows:
        raise ValueError(f"{annotations}: none of its {len(test)} test videos has a caption and a file in {video_dir}")
    write_manifest(os.path.join(out, "videos.csv"), rows, ["path", "caption"])
    with open(os.path.join(out, "prompts.txt"), "w") as f:
        f.write("".join(row["caption"] + "\n" for row in rows))
    log.info("MSR-VTT test split: %d videos with one caption each -> %s (%d left out)", len(rows), out, missing)
    return len(rows)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    shapes = sub.add_parser("shapes", help="draw the synthetic shapes text-video set")
    shapes.add_argument("--out", default="data/shapes")
    shapes.add_argument("--num_videos", type=int, default=1000)
    shapes.add_argument("--size", type=int, default=32)
    shapes.add_argument("--num_frames", type=int, default=33)
    shapes.add_argument("--speed", type=float, default=0.75, help="pixels per frame")
    shapes.add_argument("--still_fraction", type=float, default=0.2)
    shapes.add_argument("--radius", type=float, nargs=2, default=RADIUS, help="object radius range / frame size")
    shapes.add_argument("--no_antialias", action="store_true")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--workers", type=int, default=2)
    motion = sub.add_parser("motion", help="add a motion column to a video manifest")
    motion.add_argument("--manifest", required=True)
    msrvtt = sub.add_parser("msrvtt", help="MSR-VTT's test split with one random caption per video (zero-shot eval)")
    msrvtt.add_argument("--annotations", required=True, help="MSR-VTT JSON: videos (video_id, split) + sentences")
    msrvtt.add_argument("--videos", required=True, help="folder of the {video_id}.mp4 files")
    msrvtt.add_argument("--out", default="data/msrvtt")
    msrvtt.add_argument("--seed", type=int, default=0, help="which caption of each video")
    args = parser.parse_args(argv)
    if args.command == "msrvtt":
        try:
            msrvtt_test_set(args.annotations, args.videos, args.out, args.seed)
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"error: {e}")
    elif args.command == "shapes":
        generate_shapes(args.out, args.num_videos, args.size, args.num_frames, args.seed, args.speed,
                        args.still_fraction, not args.no_antialias, args.workers, tuple(args.radius))
        log.info("wrote %d videos to %s (videos.csv, images.csv)", args.num_videos, args.out)
    else:
        add_motion_scores(args.manifest)


if __name__ == "__main__":
    main()
