"""Server-rendered SVG charts for the TA dashboard (no script, no CDN): a score histogram
with labelled axes and a bin of its own for full marks, the pass rate of each test over
the class's final submissions, and submissions over time against the deadline.

Every function returns markup (`markupsafe.Markup`); every text in it is escaped."""

from __future__ import annotations

from datetime import datetime, timedelta

from markupsafe import Markup
from markupsafe import escape as escape_html

from autograder.text import visible

FONT = 'font-family="system-ui, sans-serif"'
BAR = "#4a78c2"
BAD = "#c2504a"


def escape(text) -> Markup:
    """A label for the SVG: control characters and bidi overrides shown, then HTML-escaped."""
    return escape_html(visible(text))


def _svg(width: int, height: int, label: str, body: list[str], ident: str) -> Markup:
    return Markup(f'<svg id="{ident}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
                  f'role="img" aria-label="{escape(label)}" {FONT} font-size="11">' + "".join(body) + "</svg>")


def score_bins(scores: list[float], points: float) -> list[dict]:
    """Ten bins of a tenth of the points each ([0, 10%), ..., [90%, 100%)) and one for
    full marks, so that 100s do not sit under '90'."""
    bins = [{"lo": i * points / 10, "hi": (i + 1) * points / 10, "count": 0, "label": f"{i * 10}-{i * 10 + 9}%"}
            for i in range(10)]
    bins.append({"lo": points, "hi": points, "count": 0, "label": "100%"})
    for s in scores:
        if points > 0 and s >= points - 1e-9:
            bins[10]["count"] += 1
        else:
            bins[min(9, max(0, int(10 * s / points))) if points > 0 else 0]["count"] += 1
    return bins


def histogram(scores: list[float], points: float) -> Markup:
    bins = score_bins(scores, points)
    peak = max(b["count"] for b in bins) or 1
    left, top, width, height, step = 46, 14, 11 * 48, 150, 48
    body = [f'<text x="{left + width / 2}" y="{top + height + 34}" text-anchor="middle">final score '
            f'(% of {points:g} points)</text>',
            f'<text x="12" y="{top + height / 2}" text-anchor="middle" transform="rotate(-90 12 {top + height / 2})">'
            'students</text>',
            f'<line x1="{left}" y1="{top + height}" x2="{left + width}" y2="{top + height}" stroke="#888"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + height}" stroke="#888"/>']
    for tick in sorted({0, peak // 2, peak}):
        y = top + height - height * tick / peak
        body.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{tick}</text>')
    for i, b in enumerate(bins):
        h = height * b["count"] / peak
        x = left + 4 + i * step
        color = "#2e8540" if i == 10 else BAR
        body.append(f'<rect x="{x}" y="{top + height - h:.1f}" width="{step - 8}" height="{h:.1f}" fill="{color}">'
                    f'<title>{escape(b["label"])}: {b["count"]} student(s)</title></rect>')
        if b["count"]:
            body.append(f'<text x="{x + (step - 8) / 2}" y="{top + height - h - 3:.1f}" text-anchor="middle">'
                        f'{b["count"]}</text>')
        body.append(f'<text x="{x + (step - 8) / 2}" y="{top + height + 14}" text-anchor="middle" font-size="9">'
                    f'{escape(b["label"])}</text>')
    return _svg(left + width + 10, top + height + 44, "histogram of final scores", body, "histogram")


def pass_rates(rates: list[dict], link=None) -> Markup:
    """rates: [{"name", "passed", "total", "mean"}] (mean: the mean fraction of the test's
    points), sorted with the tests the class fails most first. `link(name)`: where a test's
    row leads (the students who fail it)."""
    row, left, bar = 18, 330, 300
    body = [f'<text x="{left}" y="12">share of final submissions that pass (bar), mean points (number)</text>']
    for i, r in enumerate(rates):
        y = 22 + i * row
        share = r["passed"] / r["total"] if r["total"] else 0.0
        name = r["name"] if len(r["name"]) <= 52 else r["name"][:50] + "…"
        if link:
            body.append(f'<a href="{escape(link(r["name"]))}" class="drill">')
        body.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(name)}'
                    f'<title>{escape(r["name"])}</title></text>')
        body.append(f'<rect x="{left}" y="{y + 2}" width="{bar}" height="{row - 5}" fill="#eee"/>')
        body.append(f'<rect x="{left}" y="{y + 2}" width="{bar * share:.1f}" height="{row - 5}" '
                    f'fill="{BAD if share < 0.5 else BAR}"><title>{r["passed"]} of {r["total"]} pass</title></rect>')
        body.append(f'<text x="{left + bar + 6}" y="{y + 12}">{100 * share:.0f}% pass · mean '
                    f'{100 * r["mean"]:.0f}%</text>')
        if link:
            body.append("</a>")
    if not rates:
        body.append(f'<text x="{left}" y="36">no graded submissions yet</text>')
    return _svg(left + bar + 150, 30 + max(1, len(rates)) * row, "pass rate of each test", body, "pass-rates")


def timeline(times: list[datetime], deadline: datetime | None, now: datetime) -> Markup:
    """Submissions per hour (per day when the span is over four days), with the deadline."""
    left, top, width, height = 46, 14, 600, 120
    if not times:
        return _svg(width + left + 10, 40, "submissions over time", [f'<text x="{left}" y="24">no submissions yet'
                                                                       '</text>'], "timeline")
    start, end = min(times), max(max(times), deadline or now, now if deadline is None else min(now, deadline))
    span = max(end - start, timedelta(hours=1))
    unit = timedelta(days=1) if span > timedelta(days=4) else timedelta(hours=1)
    n = int(span / unit) + 1
    counts = [0] * n
    for t in times:
        counts[min(n - 1, int((t - start) / unit))] += 1
    peak = max(counts) or 1
    step = width / n
    body = [f'<line x1="{left}" y1="{top + height}" x2="{left + width}" y2="{top + height}" stroke="#888"/>',
            f'<text x="{left + width / 2}" y="{top + height + 30}" text-anchor="middle">submissions per '
            f'{"day" if unit.days else "hour"} (UTC), from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}</text>',
            f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak}</text>',
            f'<text x="{left - 6}" y="{top + height}" text-anchor="end">0</text>']
    for i, c in enumerate(counts):
        if c:
            h = height * c / peak
            body.append(f'<rect x="{left + i * step:.1f}" y="{top + height - h:.1f}" width="{max(1.0, step - 1):.1f}" '
                        f'height="{h:.1f}" fill="{BAR}"><title>{start + i * unit:%Y-%m-%d %H:%M}: {c}</title></rect>')
    if deadline is not None and start <= deadline <= end + unit:
        x = left + width * ((deadline - start) / (n * unit))
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + height}" stroke="{BAD}" '
                    'stroke-width="2" stroke-dasharray="4 3"/>')
        near_end = x > left + width - 70
        body.append(f'<text x="{x - 4 if near_end else x + 4:.1f}" y="{top + 6}" fill="{BAD}" '
                    f'text-anchor="{"end" if near_end else "start"}">deadline</text>')
    return _svg(left + width + 10, top + height + 40, "submissions over time against the deadline", body, "timeline")
