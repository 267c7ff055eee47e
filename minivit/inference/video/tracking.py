"""Face ids that stay with a face while it moves, from frame to frame (the rule: __init__.py)."""

from __future__ import annotations

MIN_IOU = 0.3  # a box continues a face when it overlaps the face's last box at least this much
MAX_GAP = 1.0  # seconds a face may go undetected and keep its id


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes: 1 for the same box, 0 when they do not touch.

    >>> iou((0, 0, 10, 10), (5, 0, 10, 10))
    0.3333333333333333
    """
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    inter = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Face ids that stay with a face while it moves (the rule is in this module's docstring)."""

    def __init__(self, min_iou: float = MIN_IOU, max_gap: float = MAX_GAP):
        self.min_iou, self.max_gap = min_iou, max_gap
        self.faces: dict[int, tuple[tuple, float]] = {}  # id -> (last box, last time seen)
        self.next_id = 1

    def update(self, boxes, time: float) -> list[int]:
        """The id of each (x, y, w, h) box found in the frame at ``time`` (seconds, not decreasing)."""
        self.faces = {i: f for i, f in self.faces.items() if time - f[1] <= self.max_gap + 1e-9}
        pairs = sorted(((iou(box, last), j, i) for j, box in enumerate(boxes) for i, (last, _) in self.faces.items()),
                       key=lambda p: (-p[0], p[1], p[2]))
        ids: list[int | None] = [None] * len(boxes)
        for overlap, j, i in pairs:
            if overlap < self.min_iou:
                break
            if ids[j] is None and i not in ids:
                ids[j] = i
        for j, box in enumerate(boxes):
            if ids[j] is None:
                ids[j], self.next_id = self.next_id, self.next_id + 1
            self.faces[ids[j]] = (tuple(box), time)
        return ids


__all__ = ["MIN_IOU", "MAX_GAP", "iou", "FaceTracker"]
