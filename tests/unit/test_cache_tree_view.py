"""The cache tree's snapshot, its bounded JSON view (/cache_tree) and its SVG drawing.

Trees are real `RadixCache`s; hypothesis builds random ones and random limits, and the view
must account for every node and token of the tree whatever it shows.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from radixgen.runtime.cache.kv_pool import SlotAllocator
from radixgen.runtime.cache.radix_cache import RadixCache
from radixgen.runtime.cache.tree_snapshot import take_snapshot
from radixgen.server.dashboard.tree_svg import render_tree_svg
from radixgen.server.dashboard.tree_view import TreeLimits, build_tree_view

SALT = b"0123456789abcdef"
SVG = "{http://www.w3.org/2000/svg}"

sequences = st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=0, max_size=25)


def _tree(keys: list[list[int]]) -> RadixCache:
    tree = RadixCache(SlotAllocator(4096))
    for key in keys:
        inserted = tree.insert(key, tree.allocator.alloc(len(key)))
        assert inserted.node is not None
    return tree


def _paths(tree: RadixCache) -> dict[tuple[int, ...], int]:
    """Every node's whole prefix -> its edge length, walking the tree itself."""
    found, stack = {}, [((), tree.root)]
    while stack:
        prefix, node = stack.pop()
        for child in node.children.values():
            path = prefix + tuple(child.key)
            found[path] = len(child.key)
            stack.append((path, child))
    return found


def _view_nodes(node: dict, depth: int = 0):
    yield node, depth
    for child in node["children"]:
        yield from _view_nodes(child, depth + 1)


@settings(max_examples=60, deadline=None)
@given(sequences)
def test_snapshot_rows_rebuild_the_tree(keys):
    tree = _tree(keys)
    snap = take_snapshot(tree)
    parents, ends = snap.structure()
    assert parents[0] == -1 and snap.keys[0] == [] and ends[0] == len(snap.keys)
    prefixes: list[tuple[int, ...]] = [()]
    for index in range(1, len(snap.keys)):
        assert parents[index] < index  # preorder: a parent comes before its children
        assert index < ends[index] <= ends[parents[index]]  # a subtree nests in its parent's
        prefixes.append(prefixes[parents[index]] + tuple(snap.keys[index]))
    rebuilt = {p: len(snap.keys[i]) for i, p in enumerate(prefixes) if i}
    assert rebuilt == _paths(tree)
    assert snap.evictable_tokens == tree.evictable_size and snap.protected_tokens == 0


@settings(max_examples=80, deadline=None)
@given(
    sequences,
    st.integers(0, 4),
    st.integers(0, 12),
    st.integers(0, 12),
)
def test_view_accounts_for_every_node_and_token_within_its_limits(keys, depth, min_tokens, most):
    tree = _tree(keys)
    limits = TreeLimits(depth=depth, min_tokens=min_tokens, max_nodes=most)
    doc = build_tree_view(take_snapshot(tree), limits, SALT)
    json.dumps(doc)  # plain JSON
    all_nodes = len(_paths(tree))
    assert doc["nodes"] == all_nodes and doc["tokens"] == tree.total_size
    shown = [(n, d) for n, d in _view_nodes(doc["root"]) if d]
    assert doc["shown_nodes"] == len(shown) <= most
    tokens = sum(n["tokens"] for n, _ in shown)
    nodes = len(shown)
    for node, _ in _view_nodes(doc["root"]):
        if node["hidden"]:
            tokens += node["hidden"]["tokens"]
            nodes += node["hidden"]["nodes"]
        sizes = [c["subtree_tokens"] for c in node["children"]]
        assert sizes == sorted(sizes, reverse=True)  # heaviest first
    assert (tokens, nodes) == (tree.total_size, all_nodes)  # nothing lost, nothing twice
    for node, level in shown:
        assert level <= depth and node["subtree_tokens"] >= min_tokens
        assert "text" not in node and len(node["id"]) == 8


def test_heaviest_subtrees_are_shown_first_and_small_ones_summarised():
    big = [1] * 50
    keys = [big + [2, 2], big + [3, 3]] + [[9 + k] for k in range(40)]
    doc = build_tree_view(take_snapshot(_tree(keys)), TreeLimits(max_nodes=3), SALT)
    root = doc["root"]
    assert root["children"][0]["prefix_tokens"] == 50  # the shared prefix first
    assert [c["tokens"] for c in root["children"][0]["children"]] == [2, 2]
    assert root["hidden"] == {"nodes": 40, "tokens": 40, "locked_tokens": 0} | {
        "idle_s": root["hidden"]["idle_s"]
    }


def test_locks_hits_and_recency_are_reported():
    tree = _tree([[1, 2, 3, 4], [1, 2, 5, 6]])
    node = tree.match_prefix([1, 2, 3, 4]).node
    tree.lock(node)
    tree.record_hit(node)
    tree.record_hit(tree.match_prefix([1, 2]).node)
    doc = build_tree_view(take_snapshot(tree), TreeLimits(), SALT)
    shared = doc["root"]["children"][0]
    assert (shared["tokens"], shared["locks"], shared["hits"]) == (2, 1, 2)
    locked, other = sorted(shared["children"], key=lambda c: -c["locks"])
    assert (locked["locks"], locked["hits"], other["locks"], other["hits"]) == (1, 1, 0, 0)
    assert doc["protected_tokens"] == 4 and doc["evictable_tokens"] == 2
    assert all(n["idle_s"] >= 0 for n, d in _view_nodes(doc["root"]) if d)
    tree.unlock(node)


def test_ids_are_salted_prefix_hashes():
    keys = [[1, 2, 3], [1, 2, 4]]
    snap = take_snapshot(_tree(keys))
    first = build_tree_view(snap, TreeLimits(), SALT)
    again = build_tree_view(take_snapshot(_tree(keys)), TreeLimits(), SALT)
    other = build_tree_view(snap, TreeLimits(), b"another salt....")
    ids = [n["id"] for n, d in _view_nodes(first["root"]) if d]
    assert ids == [n["id"] for n, d in _view_nodes(again["root"]) if d]  # same prefix, same id
    assert len(set(ids)) == len(ids)
    assert not set(ids) & {n["id"] for n, d in _view_nodes(other["root"]) if d}


def test_text_only_with_a_decoder_and_long_edges_shortened():
    long_edge = list(range(100))
    tree = _tree([long_edge, [7, 7]])
    plain = build_tree_view(take_snapshot(tree), TreeLimits(), SALT)
    assert plain["text"] is False and "text" not in json.dumps(plain["root"])

    def decode(ids: list[int]) -> str:
        return "".join(f"<{i}>" for i in ids)

    shown = build_tree_view(take_snapshot(tree), TreeLimits(), SALT, decode)
    texts = sorted(c["text"] for c in shown["root"]["children"])
    assert texts[1] == "<7><7>"
    assert texts[0].startswith("<0><1>") and texts[0].endswith("<98><99>") and " … " in texts[0]
    assert "<50>" not in texts[0]


def test_svg_is_valid_escaped_xml_with_one_bar_per_node():
    tree = _tree([[1] * 30 + [2], [1] * 30 + [3], [5, 6]])
    tree.lock(tree.match_prefix([5, 6]).node)
    doc = build_tree_view(take_snapshot(tree), TreeLimits(), SALT, lambda ids: '<b>&"x"\x01</b>')
    svg = render_tree_svg(doc)
    root = ET.fromstring(svg)
    bars = [g for g in root.iter(f"{SVG}g") if g.find(f"{SVG}title") is not None]
    assert len(bars) == doc["shown_nodes"] == 4
    assert any('<b>&"x"\ufffd</b>' in g.find(f"{SVG}title").text for g in bars)
    assert sum(r.get("stroke") == "#d64545" for r in root.iter(f"{SVG}rect")) == 1  # locked
    summary_doc = build_tree_view(take_snapshot(tree), TreeLimits(max_nodes=1), SALT)
    texts = [t.text for t in ET.fromstring(render_tree_svg(summary_doc)).iter(f"{SVG}text")]
    assert any(t and t.startswith("+") and "nodes" in t for t in texts)


def test_snapshot_of_an_empty_tree():
    doc = build_tree_view(take_snapshot(RadixCache(SlotAllocator(8))), TreeLimits(), SALT)
    assert (doc["nodes"], doc["tokens"], doc["root"]["children"]) == (0, 0, [])
    assert ET.fromstring(render_tree_svg(doc)).tag == f"{SVG}svg"


def test_the_text_option_is_off_unless_given():
    from radixgen.cli import build_parser

    assert build_parser().parse_args(["serve"]).dashboard_show_text is False
    assert build_parser().parse_args(["serve", "--dashboard-show-text"]).dashboard_show_text
