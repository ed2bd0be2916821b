"""The console's charts as server-rendered SVG (pygal), readable without JavaScript.

pygal draws the SVG on the server. Its tooltips need a script, which the
shop's CSP does not allow inline and which pygal would fetch from a CDN, so the
script is dropped (`js=[]` and the config <script> removed): the charts stay
plain SVG, and each has its numbers as a table beside it. The view box is
narrow with large type, so the text stays legible when a phone scales it down.
"""
from __future__ import annotations

import re

import pygal
from babel.numbers import get_currency_precision
from markupsafe import Markup
from pygal.style import Style

_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
STYLE = Style(font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
              background="white", plot_background="white", foreground="#333",
              foreground_strong="#111", foreground_subtle="#888", opacity=".85",
              colors=("#2f7d32", "#c62828", "#1565c0", "#ef6c00", "#6a1b9a", "#00838f"),
              label_font_size=15, major_label_font_size=15, legend_font_size=15,
              title_font_size=18, value_font_size=13, tooltip_font_size=13)
SIZE = {"width": 520, "height": 340}


def _svg(chart) -> Markup:
    return Markup(_SCRIPT.sub("", chart.render(is_unicode=True)))


def _chart(kind, labels: list[str], series: dict, *, every: int, short=lambda s: s):
    chart = kind(js=[], disable_xml_declaration=True, style=STYLE,  # the caption is the title
                 x_label_rotation=35, show_minor_x_labels=False, legend_at_bottom=True,
                 legend_at_bottom_columns=2, truncate_legend=-1, margin=8, **SIZE)
    chart.x_labels = [short(label) for label in labels]
    chart.x_labels_major = [short(label) for label in labels[::every]]
    for name, values in series.items():
        chart.add(name, values)
    return chart


def _table(labels, series: dict) -> dict:
    names = list(series)
    rows = [[label] + [series[n][i] for n in names] for i, label in enumerate(labels)
            if any(series[n][i] for n in names)]
    return {"headers": names, "rows": rows}


def render_charts(data: dict) -> list[dict]:
    """Each chart as {title, svg, table}, in the order the page shows them."""
    days, hours = data["days"], data["hours"]
    day = lambda label: label[5:]  # noqa: E731 - "MM-DD"
    hour = lambda label: label[5:13] + "h"  # noqa: E731 - "MM-DD HH"
    revenue = {f"{c} (major units)": [v / 10 ** get_currency_precision(c) for v in values]
               for c, values in data["revenue_per_day"].items()} or {"revenue": [0] * len(days)}
    specs = [
        ("Paid orders per day (30 days, UTC)", pygal.Bar, days,
         {"paid orders": data["orders_per_day"]}, 7, day),
        ("Revenue per day, gross (30 days)", pygal.Line, days, revenue, 7, day),
        ("Renewals paid vs failed per day", pygal.StackedBar, days,
         {"paid": data["renewals_paid"], "failed": data["renewals_failed"]}, 7, day),
        ("Webhook deliveries per hour by outcome (48 h)", pygal.StackedBar, hours,
         data["deliveries"] or {"none": [0] * len(hours)}, 8, hour),
        ("Webhook processing latency, mean ms per hour", pygal.Line, hours,
         {"latency ms": data["latency_ms"]}, 8, hour),
        ("Refunds and disputes per day", pygal.Bar, days,
         {"refunds": data["refunds"], "disputes": data["disputes"]}, 7, day),
    ]
    return [{"title": title, "svg": _svg(_chart(kind, labels, series, every=every, short=short)),
             "table": _table(labels, series)}
            for title, kind, labels, series, every, short in specs]
