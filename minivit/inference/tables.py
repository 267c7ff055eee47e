"""Predictions as text: the table and CSV the predict command prints, for photos and for a video's timeline.

The JSON form is the data's own plain dict (ImageResult.to_dict, Timeline.to_dict).

Example:
    >>> records = [{"source": "a.jpg", "error": "a.jpg: not an image"}]
    >>> print(records_csv(records, top_k=1))
    image,detection,face,x,y,w,h,label,probability,top1,top1_probability,error
    a.jpg,,,,,,,,,,,a.jpg: not an image
"""

from __future__ import annotations

import csv
import io


def _box_text(box) -> str:
    return "(" + ", ".join(map(str, box)) + ")"


def records_table(records: list[dict], top_k: int) -> str:
    """The readable table of photos' records (ImageResult.to_dict, error records skipped): one line per face
    (or whole image)."""
    rows = [("image", "region", "expression", f"top {top_k}")]
    for r in records:
        if r.get("error"):
            continue
        n = len(r["predictions"])
        for i, p in enumerate(r["predictions"]):
            where = (f"face {i + 1}/{n} at {_box_text(p['box'])}" if p["box"] else r["note"])
            rows.append((r["source"], where, f"{p['label']} {p['probabilities'][p['label']]:.2f}",
                         ", ".join(f"{t['label']} {t['probability']:.2f}" for t in p["top_k"])))
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row[:3], widths)) + "  " + row[3] for row in rows)


def records_csv(records: list[dict], top_k: int) -> str:
    """CSV of photos' records: one row per face (or whole image, or error) with the box, the label and the top k."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "detection", "face", "x", "y", "w", "h", "label", "probability"]
                    + [c for i in range(1, top_k + 1) for c in (f"top{i}", f"top{i}_probability")] + ["error"])
    for r in records:
        if r.get("error"):
            writer.writerow([r["source"], "", "", "", "", "", "", "", ""] + [""] * 2 * top_k + [r["error"]])
            continue
        for i, p in enumerate(r["predictions"]):
            box = p["box"] or [""] * 4
            tops = [v for t in p["top_k"] for v in (t["label"], f"{t['probability']:.6f}")]
            tops += [""] * (2 * top_k - len(tops))
            writer.writerow([r["source"], r["detection"], i + 1 if p["box"] else "", *box, p["label"],
                             f"{p['probabilities'][p['label']]:.6f}", *tops, ""])
    return buf.getvalue().rstrip("\n")


def timeline_csv(timeline) -> str:
    """A video's Timeline as CSV, one row per face per kept frame: time, frame, face, box, label, its
    probability, then one ``p_<class>`` column per class."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["time", "frame", "face", "x", "y", "w", "h", "label", "probability"]
                    + [f"p_{c}" for c in timeline.classes])
    for r in timeline.rows:
        writer.writerow([f"{r.time:.3f}", r.frame, "" if r.face is None else r.face, *(r.box or [""] * 4),
                         r.label, f"{r.probabilities[r.label]:.6f}",
                         *(f"{r.probabilities[c]:.6f}" for c in timeline.classes)])
    return buf.getvalue().rstrip("\n")

def timeline_table(timeline, top_k: int = 3) -> str:
    """A video's Timeline as a readable table: one line per face per kept frame."""
    lines = [("time", "face", "box", "expression", f"top {top_k}")]
    for r in timeline.rows:
        top = sorted(r.probabilities.items(), key=lambda kv: -kv[1])[:top_k]
        lines.append((f"{r.time:.2f}s", "-" if r.face is None else str(r.face),
                      "(" + ", ".join(map(str, r.box)) + ")" if r.box else r.note,
                      f"{r.label} {r.probabilities[r.label]:.2f}", ", ".join(f"{k} {v:.2f}" for k, v in top)))
    widths = [max(len(line[c]) for line in lines) for c in range(4)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line[:4], widths)) + "  " + line[4] for line in lines)


__all__ = ["records_table", "records_csv", "timeline_table", "timeline_csv"]
