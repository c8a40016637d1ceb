"""A `/cache_tree` document drawn as a standalone SVG (`radixgen cache-tree --out tree.svg`).

The same picture as the dashboard's tree, without a browser: one column per level, leaves on
successive rows, each node a bar whose width grows with the log of its token count, coloured by
its last use (orange: now, grey: ten minutes or more), outlined red while running requests lock
it; folded subtrees are dashed summaries. Every string is XML-escaped.
"""

from __future__ import annotations

import math
import re
from typing import Any
from xml.sax.saxutils import escape as _xml_escape
from xml.sax.saxutils import quoteattr

COLUMN = 170
ROW = 22
NODE_H = 14
_RECENCY_STOPS = ((18, 85, 55), (45, 75, 55), (170, 45, 50), (215, 15, 72))
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # no XML 1.0 char


def escape(text: str) -> str:
    """`text` as XML character data: escaped, and without characters XML cannot carry."""
    return _xml_escape(_NOT_XML.sub("\ufffd", text))


def recency_colour(idle_s: float | None) -> str:
    """hsl() from orange (just used) to grey (ten minutes or more), on a log scale."""
    x = min(math.log10(1 + (idle_s or 0.0)) / math.log10(601), 1.0)
    pos = x * (len(_RECENCY_STOPS) - 1)
    i = min(int(pos), len(_RECENCY_STOPS) - 2)
    f = pos - i
    low, high = _RECENCY_STOPS[i], _RECENCY_STOPS[i + 1]
    h, s, lum = (a + f * (b - a) for a, b in zip(low, high, strict=True))
    return f"hsl({h:.0f},{s:.0f}%,{lum:.0f}%)"


def node_width(tokens: int) -> float:
    return min(12 + 14 * math.log2(1 + tokens), COLUMN - 40)


def _short(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}k" if n >= 10_000 else str(n)


def _layout(root: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """Items {kind, node, depth, y, parent}: leaves and summaries take rows in order; a parent
    sits beside the middle of its children. Iterative (post-order), for deep trees."""
    items: list[dict[str, Any]] = []
    row = 0
    root_item = {"kind": "root", "node": root, "depth": 0, "parent": None}
    stack: list[tuple[dict[str, Any], bool]] = [(root_item, False)]
    kids_of: dict[int, list[dict[str, Any]]] = {}
    while stack:
        item, done = stack.pop()
        node = item["node"]
        if done:
            kids = kids_of.pop(id(item))
            if node.get("hidden"):
                summary = {"kind": "summary", "node": node["hidden"], "depth": item["depth"] + 1}
                summary |= {"parent": item, "y": row}
                row += 1
                items.append(summary)
                kids.append(summary)
            if kids:
                item["y"] = (kids[0]["y"] + kids[-1]["y"]) / 2
            else:
                item["y"] = row
                row += 1
            continue
        items.append(item)
        kids_of[id(item)] = []
        if item["parent"] is not None:
            kids_of[id(item["parent"])].append(item)
        stack.append((item, True))
        for child in reversed(node["children"]):
            stack.append(
                ({"kind": "node", "node": child, "depth": item["depth"] + 1, "parent": item}, False)
            )
    return items, row


def render_tree_svg(doc: dict[str, Any]) -> str:
    """The SVG text for a `/cache_tree` document."""
    items, rows = _layout(doc["root"])
    depth = max(item["depth"] for item in items)
    width, height = (depth + 1) * COLUMN + 200, max(rows, 1) * ROW + 50
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#fbfcfd"/>',
        f'<text x="10" y="16" font-size="12">{escape(_caption(doc))}</text>',
    ]

    def x_of(item: dict[str, Any]) -> float:
        return 20 + item["depth"] * COLUMN

    def y_of(item: dict[str, Any]) -> float:
        return 36 + item["y"] * ROW + ROW / 2

    for item in items:
        parent = item["parent"]
        if parent is None:
            continue
        right = 6 if parent["kind"] == "root" else node_width(parent["node"]["tokens"])
        px = x_of(parent) + right
        py, x, y = y_of(parent), x_of(item), y_of(item)
        mx = (px + x) / 2
        out.append(
            f'<path d="M{px:.1f} {py:.1f} C{mx:.1f} {py:.1f} {mx:.1f} {y:.1f} {x:.1f} {y:.1f}" '
            'fill="none" stroke="#b8bfcc" stroke-width="1.2"/>'
        )
    for item in items:
        out.append(_item_svg(item, x_of(item), y_of(item)))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _caption(doc: dict[str, Any]) -> str:
    return (
        f"radix tree: {doc['nodes']} nodes, {doc['tokens']} tokens "
        f"({doc['evictable_tokens']} evictable, {doc['protected_tokens']} protected); "
        f"showing {doc['shown_nodes']}"
    )


def _item_svg(item: dict[str, Any], x: float, y: float) -> str:
    node = item["node"]
    top = y - NODE_H / 2
    if item["kind"] == "root":
        return f'<circle cx="{x}" cy="{y}" r="6" fill="#1d2433"/>'
    if item["kind"] == "summary":
        label = f"+{_short(node['nodes'])} nodes, {_short(node['tokens'])} tokens"
        return (
            f'<g><rect x="{x}" y="{top}" width="24" height="{NODE_H}" rx="3" fill="#eef0f4" '
            f'stroke="#aab1be" stroke-dasharray="2 2"/>'
            f'<text x="{x + 30}" y="{y + 4}">{escape(label)}</text></g>'
        )
    w = node_width(node["tokens"])
    stroke = 'stroke="#d64545" stroke-width="2.4"' if node["locks"] else 'stroke="#5b6475"'
    tip = f"{node['id']}: {node['tokens']} tokens, {node['hits']} hits, {node['locks']} locks"
    label = _short(node["tokens"])
    if "text" in node:
        tip += f"\n{node['text']}"
        label += "  " + (node["text"][:24] + ("…" if len(node["text"]) > 24 else ""))
    return (
        f"<g><title>{escape(tip)}</title>"
        f'<rect x="{x}" y="{top}" width="{w:.1f}" height="{NODE_H}" rx="3" '
        f"fill={quoteattr(recency_colour(node['idle_s']))} {stroke}/>"
        f'<text x="{x + w + 4:.1f}" y="{y + 4}">{escape(label)}</text></g>'
    )
