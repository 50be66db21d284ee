"""One PNG of one or more eval reports: the mean recall@k curve (per report, and per query kind) beside the
histogram of the top moment's temporal IoU. Needs matplotlib (``pip install 'moments-client[eval]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_plot"]


def write_plot(path: str | Path, reports: Sequence[tuple[str, dict[str, Any]]], title: str = "") -> Path:
    """``reports``: (label, report) pairs, e.g. [("unmerged", r1), ("merged", r2)]; returns the path written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, (ax_recall, ax_iou) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, report) in enumerate(reports):
        color = colors[i % len(colors)]
        for kind, style in (("all", "-"), ("text", "--"), ("image", ":")):
            agg = report["aggregate"].get(kind, {})
            curve = agg.get("recall_curve") or []
            if not curve or (kind != "all" and agg["queries"] == report["aggregate"]["all"]["queries"]):
                continue
            ks = list(range(1, len(curve) + 1))
            name = f"{label} ({kind}, n={agg['queries']})" if label else f"{kind} (n={agg['queries']})"
            ax_recall.plot(ks, curve, style, color=color, marker="o" if kind == "all" else None, ms=3, label=name)
    ax_recall.set_xlabel("k (moments returned)")
    ax_recall.set_ylabel("mean recall@k (fraction of relevant ranges found)")
    ax_recall.set_ylim(0, 1.02)
    ax_recall.grid(alpha=0.3)
    ax_recall.legend(fontsize=7, loc="lower right")
    ax_recall.set_title("recall@k")

    bins = [i / 10 for i in range(11)]
    ious = [[q["metrics"]["iou@1"] for q in report["queries"]] for _, report in reports]
    labels = [label or "all" for label, _ in reports]
    ax_iou.hist(ious, bins=bins, label=labels, color=colors[: len(reports)])
    ax_iou.set_xlabel("temporal IoU of the top moment with its best matching relevant range")
    ax_iou.set_ylabel("queries")
    ax_iou.set_title("IoU@1")
    ax_iou.grid(alpha=0.3, axis="y")
    if len(reports) > 1:
        ax_iou.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
