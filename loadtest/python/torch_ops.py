"""The worker's analysis written in PyTorch, as a user would write it, on the same staged
frames and batch sizes as `framefleet-ops-check`: the comparison of the device check
(scripts/device-check.sh).

Input: the folder `framefleet-ops-check --dump-reference DIR` writes, per frame size
`<W>x<H>.planes.f32` (N x h x w little-endian f32 luma at the analysis size) and
`<W>x<H>.reference.json` (channels, settings, tolerance, the CPU reference's analyses).

Per batch size it times, with torch.cuda.synchronize() around each step: the upload from
pageable memory, the upload from pinned memory (the timed path), the ops, and the results
back; checks every score and motion box against the reference within the reference's
tolerance; and measures raw 1080p RGB host-to-device bandwidth, pinned and pageable. The ops
are those of worker/src/ops: 5x5 Gaussian blur [1 4 6 4 1]/16 with replicated borders, 3x3
Sobel magnitude of the blurred plane, mean blurred luma, luma standard deviation, mean
|luma - blurred|, and per channel a running-average background (rate r), a mask of
|blurred - background| >= threshold, its fraction and bounding box.

    python torch_ops.py --reference DIR [--device cuda] [--batch-sizes 1,8,32] [--json OUT]
Exit code: 0 when every frame agrees, 1 when not, 2 on bad input.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

GAUSSIAN_5 = [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16]


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def kernels(device):
    gaussian = torch.tensor(GAUSSIAN_5, dtype=torch.float32, device=device)
    sobel_x = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float32, device=device)
    return {
        "blur_x": gaussian.view(1, 1, 1, 5),
        "blur_y": gaussian.view(1, 1, 5, 1),
        "sobel_x": sobel_x.view(1, 1, 3, 3),
        "sobel_y": sobel_x.t().contiguous().view(1, 1, 3, 3),
    }


def filters(luma, k):
    """luma: (N, 1, h, w) -> blurred plane and (N, 4) scores: mean luma, contrast, sharpness, edges."""
    blurred = F.conv2d(F.pad(luma, (2, 2, 0, 0), mode="replicate"), k["blur_x"])
    blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="replicate"), k["blur_y"])
    padded = F.pad(blurred, (1, 1, 1, 1), mode="replicate")
    magnitude = torch.sqrt(F.conv2d(padded, k["sobel_x"]) ** 2 + F.conv2d(padded, k["sobel_y"]) ** 2)
    flat = luma.flatten(1)
    mean = flat.double().mean(1)
    variance = (flat.double().square().mean(1) - mean * mean).clamp(min=0)
    scores = torch.stack(
        [
            blurred.flatten(1).double().mean(1),
            variance.sqrt(),
            (luma - blurred).abs().flatten(1).double().mean(1),
            magnitude.flatten(1).double().mean(1),
        ],
        dim=1,
    )
    return blurred, scores


def motion(blurred, channels, backgrounds, threshold, rate):
    """Per frame: moving fraction, and the moving rows / columns (to the host); updates each
    channel's background. A channel's frames go in stream order, one round per position."""
    n = blurred.shape[0]
    rounds, seen = [], {}
    for index, channel in enumerate(channels):
        position = seen.get(channel, 0)
        seen[channel] = position + 1
        if position == len(rounds):
            rounds.append([])
        rounds[position].append(index)
    fractions = [None] * n
    rows = [None] * n
    columns = [None] * n
    for members in rounds:
        current = blurred[members]
        models = torch.cat(
            [backgrounds.get(channels[i], current[slot : slot + 1]) for slot, i in enumerate(members)]
        )
        mask = (current - models).abs() >= threshold
        fraction = mask.flatten(1).float().mean(1)
        moving_rows = mask.any(dim=3).flatten(1)
        moving_columns = mask.any(dim=2).flatten(1)
        updated = models * (1 - rate) + current * rate
        for slot, i in enumerate(members):
            backgrounds[channels[i]] = updated[slot : slot + 1]
            fractions[i], rows[i], columns[i] = fraction[slot], moving_rows[slot], moving_columns[slot]
    return torch.stack(fractions), torch.stack(rows), torch.stack(columns)


def box(columns, rows, factor, full_size):
    """As motion_box_from_profiles in worker/src/ops/motion.rs: [x, y, width, height] in frame pixels."""
    moving_columns, moving_rows = np.flatnonzero(columns), np.flatnonzero(rows)
    if moving_columns.size == 0 or moving_rows.size == 0:
        return None
    left, right = moving_columns[0] * factor, (moving_columns[-1] + 1) * factor
    top, bottom = moving_rows[0] * factor, (moving_rows[-1] + 1) * factor
    return [int(left), int(top), int(min(right, full_size[0]) - left), int(min(bottom, full_size[1]) - top)]


def compare(reference, got, factor, tolerance):
    worst = {"score": 0.0, "motion": 0.0, "boxes_differing": 0}
    for expected, analysis in zip(reference, got):
        for name in ("mean_luma", "contrast", "sharpness", "edge_strength"):
            worst["score"] = max(worst["score"], abs(expected[name] - analysis[name]))
        worst["motion"] = max(worst["motion"], abs(expected["motion"] - analysis["motion"]))
        a, b = expected["motion_box"], analysis["motion_box"]
        if (a is None) != (b is None):
            worst["boxes_differing"] += 1
        elif a is not None:
            edges = lambda r: (r[0], r[1], r[0] + r[2], r[1] + r[3])  # noqa: E731
            shift = max(-(-abs(p - q) // factor) for p, q in zip(edges(a), edges(b)))
            worst["boxes_differing"] += shift > tolerance["box_pixels"]
    worst["agrees"] = (
        worst["score"] <= tolerance["score"]
        and worst["motion"] <= tolerance["motion"]
        and worst["boxes_differing"] == 0
        and len(reference) == len(got)
    )
    return worst


def run_size(reference_path, device, batch_sizes, passes):
    reference = json.loads(reference_path.read_text())
    width, height = reference["analysis_size"]
    planes = np.fromfile(reference_path.with_name(reference_path.name.replace(".reference.json", ".planes.f32")), dtype="<f4")
    planes = planes.reshape(reference["frames"], 1, height, width)
    channels, factor = reference["channels"], reference["factor"]
    full_size = reference["full_size"]
    k = kernels(device)
    rows_out = []
    for batch in batch_sizes:
        totals = {"pageable_upload": 0.0, "upload": 0.0, "ops": 0.0, "results": 0.0}
        batches, analyses = 0, []
        for repeat in range(passes):
            backgrounds = {}
            for start in range(0, len(planes), batch):
                host = torch.from_numpy(planes[start : start + batch])
                pinned = host.pin_memory() if device.type == "cuda" else host
                synchronize(device)
                t0 = time.perf_counter()
                host.to(device)
                synchronize(device)
                t1 = time.perf_counter()
                luma = pinned.to(device, non_blocking=True)
                synchronize(device)
                t2 = time.perf_counter()
                blurred, scores = filters(luma, k)
                fractions, moving_rows, moving_columns = motion(
                    blurred, channels[start : start + batch], backgrounds,
                    reference["motion_threshold"], reference["background_rate"],
                )
                synchronize(device)
                t3 = time.perf_counter()
                scores, fractions = scores.cpu().numpy(), fractions.cpu().numpy()
                moving_rows, moving_columns = moving_rows.cpu().numpy(), moving_columns.cpu().numpy()
                t4 = time.perf_counter()
                totals["pageable_upload"] += t1 - t0
                totals["upload"] += t2 - t1
                totals["ops"] += t3 - t2
                totals["results"] += t4 - t3
                batches += 1
                if repeat == 0:
                    for i in range(len(scores)):
                        analyses.append({
                            "mean_luma": float(scores[i][0]), "contrast": float(scores[i][1]),
                            "sharpness": float(scores[i][2]), "edge_strength": float(scores[i][3]),
                            "motion": float(fractions[i]),
                            "motion_box": box(moving_columns[i], moving_rows[i], factor, full_size),
                        })
        frames = passes * len(planes)
        elapsed = totals["upload"] + totals["ops"] + totals["results"]
        row = {
            "batch": batch,
            **{f"{name}_ms_per_batch": 1e3 * value / batches for name, value in totals.items()},
            "frames_per_second": frames / elapsed if elapsed else None,
            **compare(reference["analyses"], analyses, factor, reference["tolerance"]),
        }
        rows_out.append(row)
    return {"full_size": full_size, "analysis_size": [width, height], "frames": len(planes), "batches": rows_out}


def bandwidth(device, frames=32, repeats=5):
    """Raw 1080p RGB frames host to device, pinned and pageable: GB/s and frames/s."""
    if device.type != "cuda":
        return None
    host = torch.empty((frames, 1080, 1920, 3), dtype=torch.uint8)
    pinned = host.pin_memory()
    result = {}
    for name, source in (("pageable", host), ("pinned", pinned)):
        source.to(device)
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            source.to(device, non_blocking=True)
        synchronize(device)
        seconds = (time.perf_counter() - t0) / repeats
        result[name] = {"gb_per_second": host.numel() / seconds / 1e9, "frames_per_second": frames / seconds}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, type=pathlib.Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    references = sorted(args.reference.glob("*.reference.json"))
    if not references:
        print(f"torch_ops: no *.reference.json in {args.reference}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    sizes = [run_size(path, device, batch_sizes, args.passes) for path in references]
    document = {
        "device": str(device),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "sizes": sizes,
        "host_to_device_1080p_rgb": bandwidth(device),
    }
    print(f"{'frame':<10} {'batch':>6} {'pageable ms':>12} {'pinned ms':>10} {'ops ms':>8} {'back ms':>8} {'frames/s':>10} {'agree':>6}")
    for size in sizes:
        for row in size["batches"]:
            print(
                f"{size['full_size'][0]}x{size['full_size'][1]:<5} {row['batch']:>6} {row['pageable_upload_ms_per_batch']:>12.3f} "
                f"{row['upload_ms_per_batch']:>10.3f} {row['ops_ms_per_batch']:>8.3f} {row['results_ms_per_batch']:>8.3f} "
                f"{row['frames_per_second'] or 0:>10.1f} {'yes' if row['agrees'] else 'NO':>6}"
            )
    if document["host_to_device_1080p_rgb"]:
        for name, figures in document["host_to_device_1080p_rgb"].items():
            print(f"1080p RGB upload, {name}: {figures['gb_per_second']:.1f} GB/s = {figures['frames_per_second']:.0f} frames/s")
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if all(row["agrees"] for size in sizes for row in size["batches"]) else 1


if __name__ == "__main__":
    sys.exit(main())
