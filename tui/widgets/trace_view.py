"""The trace tree of one command (a node per trace record, under its parent) and a pane with the
selected node's details: prompt, tool input, result, pretty-printed.

Records arrive in any order and more than once (a tool call, then its end), live from the stream or
all at once from REST. :meth:`TraceView.merge` folds them in as the hub stores them (a value left
out never erases one already known) and touches only the nodes that changed, so expansion and the
cursor survive. A record whose parent is not known yet hangs under its agent until the parent comes;
then it moves there with its subtree. Trace ids are unique per agent only, so a node's key is
(agent id, trace id) and every agent of the command has its own top node.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from shared.api import TraceEventRecord
from shared.enums import TraceType
from tui import format as fmt
from tui.state import merge_record

#: (agent id, trace id); an agent's top node has the trace id "".
Key = tuple[str, str]

#: At this width and more the detail pane sits right of the tree, below it otherwise.
SIDE_BY_SIDE_WIDTH = 110
#: Bigger contents are cut in the detail pane (a whole file read by a tool can be megabytes).
MAX_DETAIL_CHARS = 100_000

ICONS: dict[TraceType, tuple[str, str]] = {
    TraceType.LLM_PROMPT: ("▸", "bold blue"),
    TraceType.TOOL_CALL: ("λ", "bold yellow"),
    TraceType.RESPONSE: ("◂", "green"),
}
HEADINGS = {TraceType.LLM_PROMPT: "Prompt", TraceType.TOOL_CALL: "Input", TraceType.RESPONSE: "Content"}
#: Keys of a tool input that say best what the call does, for the one-line preview.
_PREVIEW_KEYS = ("command", "file_path", "path", "pattern", "query", "url", "description", "prompt")


def preview(content: object, limit: int = 60) -> str:
    """One short line saying what a content is (the command a Bash call runs, a reply's first line)."""
    if isinstance(content, dict):
        for name in _PREVIEW_KEYS:
            value = content.get(name)
            if isinstance(value, str) and value.strip():
                return _first_line(value, limit)
        text = content.get("text")
        if isinstance(text, str):
            return _first_line(text, limit)
        return ""
    if isinstance(content, str):
        return _first_line(content, limit)
    if isinstance(content, list):
        texts = _text_blocks(content)
        return _first_line(texts, limit) if texts is not None else ""
    return ""


def _first_line(text: str, limit: int) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _text_blocks(content: list[object]) -> str | None:
    """The text of a list of ``{"type": "text", "text": ...}`` blocks (how tool results come), else None."""
    if not content or not all(isinstance(b, dict) and b.get("type") == "text" for b in content):
        return None
    return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))


def pretty(content: object) -> RenderableType:
    """A content for reading: JSON indented and colored, text as text, None said."""
    if content is None or content == "":
        return Text("(no content)", style="dim italic")
    if isinstance(content, str):
        stripped = content.strip()
        if stripped[:1] in ("{", "[") and len(stripped) <= MAX_DETAIL_CHARS:
            try:
                return pretty(json.loads(stripped))
            except ValueError:
                pass
        return Text(_cut(content))
    if isinstance(content, list):
        texts = _text_blocks(content)
        if texts is not None:
            return Text(_cut(texts))
    if isinstance(content, dict) and set(content) == {"text"} and isinstance(content["text"], str):
        return Text(_cut(content["text"]))
    dumped = json.dumps(content, indent=2, ensure_ascii=False, default=str)
    return Syntax(_cut(dumped), "json", theme="ansi_dark", background_color="default", word_wrap=True)


def _cut(text: str) -> str:
    if len(text) <= MAX_DETAIL_CHARS:
        return text
    return text[:MAX_DETAIL_CHARS] + f"\n… ({len(text) - MAX_DETAIL_CHARS:,} more characters)"


@dataclass(frozen=True, slots=True)
class TraceTotals:
    nodes: int = 0
    tokens: int = 0
    errors: int = 0
    running: int = 0


@dataclass(slots=True)
class _Shape:
    """A subtree as it was drawn, to draw it again somewhere else."""

    key: Key
    expanded: bool
    children: list[_Shape] = field(default_factory=list)


class TraceView(Widget):
    DEFAULT_CSS = """
    TraceView {
        layout: vertical;
        height: 1fr;
        &.-side { layout: horizontal; }
        & > Tree {
            width: 1fr;
            height: 1fr;
            background: $surface;
            scrollbar-size-vertical: 1;
        }
        & > #trace-detail {
            width: 1fr;
            height: 1fr;
            padding: 0 1;
            border-top: solid $primary-darken-2;
            scrollbar-size-vertical: 1;
        }
        &.-side > #trace-detail { border-top: none; border-left: solid $primary-darken-2; }
    }
    """

    def __init__(
        self,
        *,
        agent_name: Callable[[str], str] | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.agent_name = agent_name or (lambda agent_id: agent_id[:8])
        #: The merged records, in the order they first came.
        self.records: dict[Key, TraceEventRecord] = {}
        self.nodes: dict[Key, TreeNode[Key]] = {}
        self.agents: dict[str, TreeNode[Key]] = {}
        #: The parent each node hangs under now (None: under its agent).
        self.placed: dict[Key, Key | None] = {}
        #: Parent key -> nodes waiting for it under their agent.
        self._orphans: dict[Key, set[Key]] = {}
        #: The last raw record merged per key: the live state hands the same object again.
        self._raw: dict[Key, TraceEventRecord] = {}
        self._arrival: dict[Key, int] = {}
        self._shown: Key | None = None
        #: Once the command has ended, a tool call without an end is shown as such, not as running.
        self.ended = False

    def compose(self) -> ComposeResult:
        tree: Tree[Key] = Tree("trace", id="trace-tree")
        tree.show_root = False
        tree.guide_depth = 3
        yield tree
        with VerticalScroll(id="trace-detail"):
            yield Static(Text("no trace recorded yet", style="dim italic"), id="trace-detail-body")

    @property
    def trace_tree(self) -> Tree[Key]:
        return self.query_one("#trace-tree", Tree)

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= SIDE_BY_SIDE_WIDTH, "-side")

    def focus_tree(self) -> None:
        self.trace_tree.focus()

    # -- what it holds -----------------------------------------------------------------------------
    @property
    def totals(self) -> TraceTotals:
        records = self.records.values()
        return TraceTotals(
            nodes=len(self.records),
            tokens=sum(r.tokens_used for r in records),
            errors=sum(1 for r in records if r.error),
            running=0 if self.ended else sum(1 for r in records if _running(r)),
        )

    # -- merging -----------------------------------------------------------------------------------
    def merge(self, records: Iterable[TraceEventRecord]) -> int:
        """Fold these records in; returns how many nodes were added or changed."""
        changed: list[Key] = []
        for raw in records:
            key = (raw.agent_id, raw.trace_id)
            if self._raw.get(key) is raw:
                continue
            self._raw[key] = raw
            old = self.records.get(key)
            record = merge_record(old, raw)
            if record == old:
                continue
            self.records[key] = record
            self._arrival.setdefault(key, len(self._arrival))
            changed.append(key)
        if not changed:
            return 0
        tree = self.trace_tree
        cursor = tree.cursor_node.data if tree.cursor_node is not None else None
        agents = {key[0] for key in changed}
        for key in self._parents_first(changed):
            self._place(key)
            for waiting in sorted(self._orphans.pop(key, ()), key=self._arrival.__getitem__):
                self._place(waiting)
        for agent_id in agents:
            self._agent_node(agent_id).set_label(self._agent_label(agent_id))
        # Lines are numbered lazily; build them so the cursor can go back to its node.
        _ = tree.last_line
        if cursor is not None and cursor in self.nodes and tree.cursor_node is not self.nodes[cursor]:
            tree.move_cursor(self.nodes[cursor])
        elif tree.cursor_line < 0:
            tree.move_cursor_to_line(0)
        shown = self._shown
        if shown is not None and (
            shown in changed or any(self.placed.get(k) == shown for k in changed) or shown[1] == ""
        ):
            self._show_detail(shown, keep_scroll=True)
        return len(changed)

    def set_ended(self, ended: bool) -> None:
        if ended == self.ended:
            return
        self.ended = ended
        for key, record in self.records.items():
            if record.type is TraceType.TOOL_CALL and record.completed_at is None:
                self.nodes[key].set_label(self.label(record))

    def _parents_first(self, keys: list[Key]) -> list[Key]:
        """The keys with a parent of the same batch after that parent (fewer moves on a REST load)."""
        pending = set(keys)
        ordered: list[Key] = []
        for start in keys:
            chain: list[Key] = []
            walk: Key | None = start
            while walk is not None and walk in pending:
                pending.discard(walk)
                chain.append(walk)
                parent_id = self.records[walk].parent_id
                walk = (walk[0], parent_id) if parent_id else None
            ordered.extend(reversed(chain))
        return ordered

    def _wanted_parent(self, key: Key) -> Key | None:
        """The node ``key`` belongs under: its parent if known and drawn, not in a cycle; else None."""
        parent_id = self.records[key].parent_id
        if not parent_id:
            return None
        parent = (key[0], parent_id)
        if parent not in self.nodes:
            return None
        seen = {key}
        walk: Key | None = parent
        while walk is not None:
            if walk in seen:
                return None  # a record that is its own ancestor: it stays on top rather than loop
            seen.add(walk)
            up = self.records[walk].parent_id if walk in self.records else None
            walk = (key[0], up) if up and (key[0], up) in self.records else None
        return parent

    def _place(self, key: Key) -> None:
        record = self.records[key]
        wanted = self._wanted_parent(key)
        node = self.nodes.get(key)
        if node is None:
            under = self.nodes[wanted] if wanted is not None else self._agent_node(key[0])
            self.nodes[key] = under.add(self.label(record), data=key, expand=True, allow_expand=False)
            under.allow_expand = True
        else:
            node.set_label(self.label(record))
            if self.placed.get(key) != wanted:
                self._move(key, wanted)
        self.placed[key] = wanted
        for waiting in self._orphans.values():
            waiting.discard(key)
        if wanted is None and record.parent_id:
            self._orphans.setdefault((key[0], record.parent_id), set()).add(key)

    def _move(self, key: Key, wanted: Key | None) -> None:
        """Draw ``key`` with its subtree under ``wanted`` (a Tree cannot move a node: redraw it)."""
        node = self.nodes[key]
        old_parent = node.parent
        shape = self._shape(node)
        node.remove()
        under = self.nodes[wanted] if wanted is not None else self._agent_node(key[0])
        self._grow(shape, under)
        under.allow_expand = True
        if old_parent is not None and not old_parent.children and old_parent.data and old_parent.data[1]:
            old_parent.allow_expand = False

    def _shape(self, node: TreeNode[Key]) -> _Shape:
        assert node.data is not None
        return _Shape(node.data, node.is_expanded, [self._shape(child) for child in node.children])

    def _grow(self, shape: _Shape, under: TreeNode[Key]) -> None:
        node = under.add(
            self.label(self.records[shape.key]),
            data=shape.key,
            expand=shape.expanded,
            allow_expand=bool(shape.children),
        )
        self.nodes[shape.key] = node
        for child in shape.children:
            self._grow(child, node)

    def _agent_node(self, agent_id: str) -> TreeNode[Key]:
        node = self.agents.get(agent_id)
        if node is None:
            node = self.agents[agent_id] = self.trace_tree.root.add(
                self._agent_label(agent_id), data=(agent_id, ""), expand=True
            )
        return node

    # -- how it looks ------------------------------------------------------------------------------
    def label(self, record: TraceEventRecord) -> Text:
        icon, style = ICONS.get(record.type, ("•", ""))
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{icon} ", style)
        name_style = "bold red" if record.error else ("bold" if record.type is TraceType.TOOL_CALL else "")
        text.append(record.name or record.type.value.lower(), name_style)
        hint = preview(record.content, 50)
        if hint:
            text.append(f" {hint}", "dim")
        if record.duration_ms is not None:
            text.append(f"  {fmt.duration_ms(record.duration_ms)}", "cyan")
        elif _running(record):
            text.append("  no end recorded" if self.ended else "  running…", "italic cyan")
        if record.tokens_used:
            text.append(f"  {fmt.tokens(record.tokens_used)} tok", "magenta")
        if record.error:
            text.append(f"  ✗ {_first_line(record.error, 60)}", "red")
        return text

    def _agent_label(self, agent_id: str) -> Text:
        records = [r for (a, _), r in self.records.items() if a == agent_id]
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(self.agent_name(agent_id), "bold")
        text.append(f"  {len(records)} nodes", "dim")
        tokens = sum(r.tokens_used for r in records)
        if tokens:
            text.append(f"  {fmt.tokens(tokens)} tok", "magenta")
        errors = sum(1 for r in records if r.error)
        if errors:
            text.append(f"  {errors} error{'s' if errors > 1 else ''}", "bold red")
        return text

    # -- the detail pane ---------------------------------------------------------------------------
    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Key]) -> None:
        event.stop()
        if event.node.data is not None:
            # The tree re-announces its cursor node when lines above it move: keep the scroll then.
            self._show_detail(event.node.data, keep_scroll=event.node.data == self._shown)

    def _show_detail(self, key: Key, *, keep_scroll: bool) -> None:
        self._shown = key
        self.query_one("#trace-detail-body", Static).update(self.detail(key))
        if not keep_scroll:
            self.query_one("#trace-detail", VerticalScroll).scroll_home(animate=False)

    def detail(self, key: Key) -> RenderableType:
        agent_id, trace_id = key
        if not trace_id:
            totals = [r for (a, _), r in self.records.items() if a == agent_id]
            return Group(
                self._agent_label(agent_id),
                Text(f"agent id {fmt.short_id(agent_id)}", style="dim"),
                Text(
                    f"{sum(1 for r in totals if r.type is TraceType.TOOL_CALL)} tool calls, "
                    f"{sum(1 for r in totals if r.type is TraceType.RESPONSE)} responses",
                    style="dim",
                ),
            )
        record = self.records[key]
        icon, style = ICONS.get(record.type, ("•", ""))
        title = Text()
        title.append(f"{icon} ", style)
        title.append(record.name, "bold")
        title.append(f"  {record.type.value}", "dim")
        info = Table.grid(padding=(0, 1))
        info.add_column(style="dim")
        info.add_column()
        info.add_row("agent", self.agent_name(agent_id))
        info.add_row("trace", trace_id + (f"  (under {record.parent_id})" if record.parent_id else ""))
        info.add_row("started", fmt.stamp(record.started_at))
        if record.completed_at or record.duration_ms is not None:
            ended = fmt.clock(record.completed_at)
            info.add_row("took", f"{fmt.duration_ms(record.duration_ms)}  (ended {ended})")
        elif _running(record):
            info.add_row("took", Text("no end recorded" if self.ended else "running…", style="italic cyan"))
        if record.tokens_used:
            info.add_row("tokens", f"{record.tokens_used:,}")
        parts: list[RenderableType] = [title, info]
        if record.error:
            parts.append(Text(f"error: {record.error}", style="bold red"))
        heading = Text(HEADINGS.get(record.type, "Content"), style="bold underline")
        parts += [Text(""), heading, pretty(record.content)]
        if record.type is TraceType.TOOL_CALL:
            # A tool call's result is its own node under it; the pane shows both together.
            for child in self.nodes[key].children if key in self.nodes else []:
                result = self.records.get(child.data) if child.data is not None else None
                if result is None or result.type is not TraceType.RESPONSE:
                    continue
                result_heading = Text("Result", style="bold underline")
                if result.error:
                    result_heading.append("  (error)", "bold red")
                parts += [Text(""), result_heading, pretty(result.content)]
        return Group(*parts)


def _running(record: TraceEventRecord) -> bool:
    return record.type is TraceType.TOOL_CALL and record.completed_at is None and record.duration_ms is None
