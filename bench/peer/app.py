#!/usr/bin/env python3
"""The Python peer of `darkroom serve`: the same API over the same model files,
built the way a typical engineer would build it in Python.

FastAPI + uvicorn (N worker processes), Pillow for decoding and resizing,
ONNX Runtime (CPU, the same 1.32.0 Darkroom links) for EfficientNet-Lite0 and
BlazeFace, numpy for the post-processing, and OpenCV's BRISQUE for quality.
All images of one request are prepared, then run through each model as one
batch; there is no batching across requests.

    var/peer-venv/bin/python bench/peer/app.py --home var --port 8090 --workers 2 --threads 1

API (the contract Darkroom serves):
    POST /v1/analyze  {"images": [{"id": "a", "data": "<base64>"}], "topK": 10}
      -> {"results": [{"photoId", "concepts", "confidence", "quality", "brisque",
                       "faces", "modelReleaseRequired", "size"} | {"photoId", "error"}]}
    GET /healthz      -> 200 once this worker's models are loaded
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
import sys
import threading
import tomllib
from contextlib import asynccontextmanager
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field

# One thread per worker process: OpenCV's own pool would spin beside ONNX
# Runtime's (bench/compare.py also caps OMP/OpenBLAS/MKL through the environment).
cv2.setNumThreads(1)

# Settings travel to uvicorn's worker processes through the environment,
# since each worker imports this module afresh from "app:app".
ENV_HOME = "DARKROOM_PEER_HOME"
ENV_THREADS = "DARKROOM_PEER_THREADS"
ENV_DRAFT = "DARKROOM_PEER_DRAFT"

CLASSIFIER = "efficientnet-lite0"
FACES = "blazeface-short-range"
QUALITY = "brisque"

# Darkroom's default limit (--max-pixels): refuse decompression bombs early.
Image.MAX_IMAGE_PIXELS = 100_000_000
MIN_CONFIDENCE = 0.1
EFFNET_SHORT_SIDE = 256


# --------------------------------------------------------------------------
# Models


class Models:
    """Every model one worker needs, loaded once at start-up."""

    def __init__(self, home: Path, threads: int, draft: bool):
        self.draft = draft
        models = home / "models"

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        def session(name: str) -> tuple[ort.InferenceSession, dict]:
            folder = models / name
            config = tomllib.loads((folder / "model.toml").read_text())
            path = folder / config["onnx"]["file"]
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            return sess, config

        # Classifier: EfficientNet-Lite0 and its labels / broad concepts.
        self.classifier, ccfg = session(CLASSIFIER)
        self.classifier_input = ccfg["onnx"]["input"]
        self.logits_name = ccfg["onnx"]["outputs"]["logits"]
        self.crop = int(ccfg["preprocess"]["width"])
        cnorm = ccfg["preprocess"]["normalize"]
        self.c_scale, self.c_offset = float(cnorm["scale"]), float(cnorm["offset"])
        self.short_side = int(ccfg["preprocess"]["resize"].get("short_side", EFFNET_SHORT_SIDE))
        concepts = json.loads((models / CLASSIFIER / ccfg["classifier"]["concepts"]).read_text())
        self.concepts = ConceptMap(concepts["labels"], concepts.get("concepts", []))

        # Face detector: BlazeFace short range.
        self.faces, fcfg = session(FACES)
        self.faces_input = fcfg["onnx"]["input"]
        self.regressors_name = fcfg["onnx"]["outputs"]["regressors"]
        self.classificators_name = fcfg["onnx"]["outputs"]["classificators"]
        self.face_side = int(fcfg["preprocess"]["width"])
        fnorm = fcfg["preprocess"]["normalize"]
        self.f_scale, self.f_offset = float(fnorm["scale"]), float(fnorm["offset"])
        fd = fcfg["face_detector"]
        self.score_threshold = float(fd["score_threshold"])
        self.iou_threshold = float(fd["iou_threshold"])
        self.release_threshold = float(fd["release_threshold"])
        self.anchors = short_range_anchors()

        # Quality: OpenCV's BRISQUE with the LIVE model files. The model is
        # parsed once per thread (requests run on FastAPI's thread pool);
        # QualityBRISQUE_compute(img, model, range) would re-read both YAML
        # files for every photo (+5 ms) and give the same score.
        qdir = models / QUALITY
        qcfg = tomllib.loads((qdir / "model.toml").read_text()) if (qdir / "model.toml").exists() else {}
        b = qcfg.get("brisque", {})
        self.brisque_model = str(qdir / b.get("model", "brisque_model_live.yml"))
        self.brisque_range = str(qdir / b.get("range", "brisque_range_live.yml"))
        self.brisque_max_side = int(b.get("max_side", 640))
        self._local = threading.local()
        self.brisque()

    def brisque(self):
        q = getattr(self._local, "brisque", None)
        if q is None:
            q = self._local.brisque = cv2.quality.QualityBRISQUE_create(self.brisque_model, self.brisque_range)
        return q


# --------------------------------------------------------------------------
# Preprocessing (Pillow)


class BadImage(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def decode(data: bytes, draft: bool) -> Image.Image:
    """Bytes to an EXIF-oriented RGB image."""
    try:
        im = Image.open(io.BytesIO(data))
        if draft and im.format == "JPEG":
            # Let libjpeg scale the DCT down to no less than twice what the
            # classifier resizes to (short side 512).
            w, h = im.size
            s = 2 * EFFNET_SHORT_SIDE / min(w, h)
            if s < 1:
                im.draft("RGB", (max(1, int(w * s)), max(1, int(h * s))))
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise BadImage("too_many_pixels", str(e)) from e
    except UnidentifiedImageError as e:
        raise BadImage("unsupported_format", "not a JPEG, PNG or WebP image") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        code = "truncated_image" if "truncated" in msg.lower() else "corrupt_image"
        raise BadImage(code, msg) from e


def effnet_input(im: Image.Image, m: Models) -> np.ndarray:
    """As trained: bicubic so the short side is 256, centre crop 224, (x - 127) / 128."""
    w, h = im.size
    s = m.short_side
    size = (s, round(s * h / w)) if w <= h else (round(s * w / h), s)
    im = im.resize(size, Image.BICUBIC)
    left, top = (size[0] - m.crop) // 2, (size[1] - m.crop) // 2
    im = im.crop((left, top, left + m.crop, top + m.crop))
    x = np.asarray(im, dtype=np.float32) * m.c_scale + m.c_offset
    return x.transpose(2, 0, 1)


def blazeface_input(im: Image.Image, m: Models) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Letterbox into 128x128 on black, bilinear, scaled to [-1, 1]. Also returns
    (pad_x, pad_y, sx, sy): model pixel -> photo pixel is (v - pad) * s."""
    side = m.face_side
    w, h = im.size
    scale = min(side / w, side / h)
    nw, nh = max(1, min(side, round(w * scale))), max(1, min(side, round(h * scale)))
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    px, py = (side - nw) // 2, (side - nh) // 2
    canvas.paste(im.resize((nw, nh), Image.BILINEAR), (px, py))
    x = np.asarray(canvas, dtype=np.float32) * m.f_scale + m.f_offset
    return x.transpose(2, 0, 1), (px, py, w / nw, h / nh)


def brisque_score(im: Image.Image, m: Models) -> float:
    """OpenCV BRISQUE on the photo downscaled (bilinear) to at most 640 px long."""
    w, h = im.size
    long = max(w, h)
    if long > m.brisque_max_side:
        s = m.brisque_max_side / long
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    bgr = np.ascontiguousarray(np.asarray(im)[:, :, ::-1])
    return float(m.brisque().compute(bgr)[0])


# --------------------------------------------------------------------------
# Post-processing (numpy)


class ConceptMap:
    """Class names (equal names merged) plus broad concepts scored as the
    summed probability of their classes, as Darkroom's concepts.rs does."""

    def __init__(self, labels: list[str], concepts: list[dict]):
        names: list[str] = []
        index: dict[str, int] = {}
        name_of_class = []
        for label in labels:
            at = index.setdefault(label, len(names))
            if at == len(names):
                names.append(label)
            name_of_class.append(at)
        self.num_classes = len(labels)
        self.names = names
        # (num_names, num_classes) 0/1 matrix: one matmul merges equal names.
        self.merge = np.zeros((len(names), len(labels)), dtype=np.float32)
        self.merge[name_of_class, np.arange(len(labels))] = 1.0
        self.name_breadth = self.merge.sum(axis=1).astype(int)
        self.broad = [(c["name"], np.asarray(sorted(set(c["classes"])), dtype=np.int64)) for c in concepts]

    def score(self, probs: np.ndarray, top_k: int, min_confidence: float) -> list[list]:
        best: dict[str, tuple[float, int]] = {}

        def offer(name: str, score: float, breadth: int) -> None:
            if score >= min_confidence:
                kept = best.get(name)
                if kept is None or score > kept[0]:
                    best[name] = (score, breadth)

        by_name = self.merge @ probs
        for i in np.flatnonzero(by_name >= min_confidence):
            offer(self.names[i], float(by_name[i]), int(self.name_breadth[i]))
        for name, classes in self.broad:
            offer(name, float(probs[classes].sum()), len(classes))
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[1][1], kv[0]))[:top_k]
        return [[name, round(score, 6)] for name, (score, _) in ranked]


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def short_range_anchors() -> np.ndarray:
    """896 (cx, cy) anchor centres in 0..1: 16x16 grid x 2, then 8x8 grid x 6."""
    out = []
    for grid, per_cell in ((16, 2), (8, 6)):
        for y in range(grid):
            for x in range(grid):
                out.extend([((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell)
    return np.asarray(out, dtype=np.float32)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def decode_faces(reg: np.ndarray, cls: np.ndarray, m: Models) -> list[tuple[np.ndarray, float]]:
    """One photo's raw outputs (896x16, 896x1) to (box in 0..1 of the input, score),
    after MediaPipe's weighted non-maximum suppression."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(cls.reshape(-1), -100, 100)))
    keep = np.flatnonzero(scores >= m.score_threshold)
    if keep.size == 0:
        return []
    side = float(m.face_side)
    r = reg[keep, :4] / side
    cx, cy = r[:, 0] + m.anchors[keep, 0], r[:, 1] + m.anchors[keep, 1]
    w, h = r[:, 2], r[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    scores = scores[keep]
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    kept = []
    while len(scores):
        overlap = iou(boxes[0], boxes) > m.iou_threshold
        overlap[0] = True
        weights = scores[overlap]
        box = (boxes[overlap] * weights[:, None]).sum(axis=0) / weights.sum()
        kept.append((box, float(scores[0])))
        boxes, scores = boxes[~overlap], scores[~overlap]
    return kept


# --------------------------------------------------------------------------
# The service


class ImageIn(BaseModel):
    id: str | None = None  # defaults to the image's index
    data: str  # base64; a data:image/...;base64, prefix is accepted


class AnalyzeRequest(BaseModel):
    images: list[ImageIn] = Field(min_length=1)
    topK: int = Field(default=10, ge=1, le=100)
    minConfidence: float = Field(default=MIN_CONFIDENCE, ge=0.0, le=1.0)


MODELS: Models | None = None


@asynccontextmanager
async def lifespan(_app: FastAPI):
    global MODELS
    MODELS = Models(
        Path(os.environ.get(ENV_HOME, "var")),
        int(os.environ.get(ENV_THREADS, "1")),
        os.environ.get(ENV_DRAFT, "0") == "1",
    )
    yield


app = FastAPI(title="Darkroom peer", lifespan=lifespan)


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/v1/analyze")
def analyze(req: AnalyzeRequest):
    # A plain `def`: FastAPI runs it on its thread pool, so the event loop stays free.
    m = MODELS
    results: list[dict | None] = [None] * len(req.images)
    ok: list[tuple[int, str, Image.Image]] = []
    for i, item in enumerate(req.images):
        photo_id = item.id if item.id is not None else str(i)
        try:
            text = item.data
            if text.startswith("data:") and ";base64," in text[:100]:
                text = text.split(",", 1)[1]
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as e:
                raise BadImage("invalid_base64", f"data is not base64: {e}") from e
            ok.append((i, photo_id, decode(data, m.draft)))
        except BadImage as e:
            results[i] = {"photoId": photo_id, "error": {"code": e.code, "message": e.message}}

    if ok:
        images = [im for _, _, im in ok]
        c_batch = np.stack([effnet_input(im, m) for im in images])
        f_inputs = [blazeface_input(im, m) for im in images]
        f_batch = np.stack([x for x, _ in f_inputs])
        quality = [brisque_score(im, m) for im in images]

        (logits,) = m.classifier.run([m.logits_name], {m.classifier_input: c_batch})
        regressors, classificators = m.faces.run(
            [m.regressors_name, m.classificators_name], {m.faces_input: f_batch}
        )
        probs = softmax(logits.astype(np.float32))

        for j, (i, photo_id, im) in enumerate(ok):
            w, h = im.size
            px, py, sx, sy = f_inputs[j][1]
            side = m.face_side
            faces = []
            for box, score in decode_faces(regressors[j], classificators[j], m):
                x1, y1, x2, y2 = (float(v) * side for v in box)

                def to_px(v: float, pad: float, s: float, limit: int) -> int:
                    return int(np.floor(min(max((v - pad) * s, 0.0), limit) + 0.5))

                faces.append({
                    "box": [to_px(x1, px, sx, w), to_px(y1, py, sy, h), to_px(x2, px, sx, w), to_px(y2, py, sy, h)],
                    "score": round(score, 6),
                })
            b = quality[j]
            results[i] = {
                "photoId": photo_id,
                "concepts": m.concepts.score(probs[j], req.topK, req.minConfidence),
                "confidence": round(float(probs[j].max()), 6),
                "quality": round(min(max(1.0 - b / 100.0, 0.0), 1.0), 6),
                "brisque": round(b, 4),
                "faces": faces,
                "modelReleaseRequired": any(f["score"] >= m.release_threshold for f in faces),
                "size": [w, h],
            }
    return {"results": results}


# --------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", default=os.environ.get("DARKROOM_HOME", "var"), help="Darkroom home (holds models/)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="uvicorn worker processes (default: CPU count)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per session (default 1)")
    p.add_argument("--draft", action="store_true", help="let libjpeg scale JPEGs down on load (Image.draft); off by default")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)

    home = Path(args.home).resolve()
    for name in (CLASSIFIER, FACES, QUALITY):
        if not (home / "models" / name).is_dir():
            print(f"error: {home / 'models' / name} is missing; run ./scripts/setup.sh first", file=sys.stderr)
            return 1
    os.environ[ENV_HOME] = str(home)
    os.environ[ENV_THREADS] = str(args.threads)
    os.environ[ENV_DRAFT] = "1" if args.draft else "0"

    import uvicorn

    uvicorn.run(
        "app:app",
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
