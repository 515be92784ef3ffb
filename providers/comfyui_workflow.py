"""ComfyUI workflows for the bot: the operator's "API format" JSON (Save
(API) in ComfyUI), one file per capability, with placeholders where the
bot puts what the user asked for.

A placeholder is an input whose whole value is the string ``"$name"``, or
``"$name=default"`` for the value used when the user gives none:

    "text": "$prompt"            "seed": "$seed"        "steps": "$steps=30"
    "ckpt_name": "$checkpoint"   "image": "$image"      "denoise": "$strength=0.55"

``$prompt`` and ``$negative`` may also sit inside a longer text
("masterpiece, $prompt"). What each file must have is checked when the bot
loads it (``check``, and every start), so a workflow that cannot work is
refused then, with the file and the reason, not at the first request.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from providers.types import Capability

# name → the type the value is given as (ComfyUI rejects "20" for an INT).
PLACEHOLDERS: dict[str, type] = {
    "prompt": str, "negative": str, "checkpoint": str,
    "seed": int, "width": int, "height": int, "steps": int, "batch": int,
    "cfg": float, "strength": float, "scale": float,
    "image": str, "image2": str, "image3": str, "image4": str, "image5": str,
}
IMAGE_PLACEHOLDERS = ("image", "image2", "image3", "image4", "image5")
# What the bot uses when neither the user nor the placeholder's default says.
DEFAULTS: dict[str, Any] = {"negative": "", "steps": 20, "cfg": 7.0, "strength": 0.6, "scale": 2.0, "batch": 1}
SEED_MAX = 2**32 - 1  # fits every sampler's seed input (KSampler's is 64-bit, others 32)
SHIPPED = "(shipped)"  # how a default workflow is named in messages
LONG_SIDE = 1024  # without "$width=..." defaults: SDXL's native size

WHOLE = re.compile(r"\$([a-z][a-z0-9_]*)(?:=(.*))?", re.DOTALL)
EMBEDDED = re.compile(r"\$(prompt|negative)\b")

# What each capability's workflow must mark. A sampler without $seed would
# give the same (cached) picture for the same prompt every time.
REQUIRED: dict[Capability, tuple[str, ...]] = {
    Capability.TXT2IMG: ("prompt", "seed"),
    Capability.IMG2IMG: ("prompt", "seed", "image"),
    Capability.EDIT: ("prompt", "seed", "image"),
    Capability.VARIATION: ("seed", "image"),
    Capability.UPSCALE: ("image",),
    Capability.ANIME: ("image",),
    Capability.REMOVE_BG: ("image",),
    Capability.FACESWAP: ("image", "image2"),
    Capability.BLEND: ("image", "image2"),
}
# With no file of their own, these run the img2img workflow.
SERVED_BY_IMG2IMG = (Capability.EDIT, Capability.VARIATION)


class WorkflowError(ValueError):
    """A workflow file the bot cannot use; the message names the file."""


@dataclass(frozen=True)
class Slot:
    """One placeholder in the workflow: where it is and its default."""

    node: str
    input: str
    name: str
    default: Any = None
    embedded: bool = False  # "$prompt" inside a longer text


@dataclass(frozen=True)
class Workflow:
    capability: Capability
    source: str  # the file, for messages
    graph: dict[str, Any]
    slots: tuple[Slot, ...] = field(default=())

    @property
    def names(self) -> frozenset[str]:
        return frozenset(slot.name for slot in self.slots)

    @property
    def images(self) -> int:
        """How many input images the workflow takes."""
        return sum(1 for name in IMAGE_PLACEHOLDERS if name in self.names)

    def default(self, name: str) -> Any:
        for slot in self.slots:
            if slot.name == name and slot.default is not None:
                return slot.default
        return DEFAULTS.get(name)

    def long_side(self) -> int:
        """The model's native size, from "$width=..."/"$height=..." defaults."""
        sides = [v for v in (self.default("width"), self.default("height")) if isinstance(v, int)]
        return max(sides) if sides else LONG_SIDE

    def fill(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The graph to POST, every placeholder replaced. ``values`` holds
        what the user asked for; the rest comes from the defaults."""
        graph = copy.deepcopy(self.graph)
        for slot in self.slots:
            value = values.get(slot.name)
            if value is None:
                value = self.default(slot.name)
            if value is None:
                raise WorkflowError(f"{self.source}: nothing to put in ${slot.name}")
            inputs = graph[slot.node]["inputs"]
            if slot.embedded:
                inputs[slot.input] = EMBEDDED.sub(
                    lambda m: str(values.get(m[1]) or self.default(m[1]) or ""), self.graph[slot.node]["inputs"][slot.input]
                )
            else:
                inputs[slot.input] = PLACEHOLDERS[slot.name](value)
        return graph

    def problems_on(self, object_info: Mapping[str, Any], checkpoints: list[str]) -> list[str]:
        """What a ComfyUI server (its GET /object_info) would refuse in this
        workflow, as validate_prompt does: unknown nodes, missing inputs,
        links to outputs that are not there or of another type, values of
        the wrong type, out of range or not in a list, no output node."""
        problems: list[str] = []
        has_output = False
        slots = {(s.node, s.input): s for s in self.slots if not s.embedded}
        for node_id, node in self.graph.items():
            info = object_info.get(node["class_type"])
            where = f"node {node_id} ({node['class_type']})"
            if not isinstance(info, Mapping):
                problems.append(f"{where}: this ComfyUI has no such node (a custom node not installed?)")
                continue
            has_output = has_output or bool(info.get("output_node"))
            declared = info.get("input") or {}
            required = declared.get("required") or {}
            specs = {**(declared.get("optional") or {}), **required}
            problems += [f"{where}: the required input '{name}' is missing" for name in required if name not in node["inputs"]]
            for name, value in node["inputs"].items():
                spec = specs.get(name)
                if isinstance(spec, list) and spec:
                    problem = self._input_problem(object_info, spec, value, slots.get((node_id, name)))
                    if problem:
                        problems.append(f"{where}: {name} {problem}")
        if not has_output:
            problems.append("no output node (Save Image or Preview Image)")
        if "checkpoint" in self.names and not self.default("checkpoint") and not checkpoints:
            problems.append("$checkpoint: this ComfyUI has no checkpoint installed")
        return [f"{self.source}: {p}" for p in problems]

    def _input_problem(self, object_info: Mapping[str, Any], spec: list[Any], value: Any, slot: Slot | None) -> str:
        expected, options = spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):  # a link
            source = self.graph.get(str(value[0])) or {}
            outputs = (object_info.get(source.get("class_type")) or {}).get("output") or []
            if not 0 <= value[1] < len(outputs):
                return f"links to output {value[1]} of node {value[0]}, which has {len(outputs)}"
            given = outputs[value[1]]
            if isinstance(expected, str) and "*" not in (given, expected) and given != expected:
                return f"takes {expected}, but node {value[0]} gives {given}"
            return ""
        if slot is not None:  # a placeholder: its type against the input's
            kind = PLACEHOLDERS[slot.name]
            fits = {"INT": kind is int, "FLOAT": kind in (int, float), "STRING": kind is str}.get(
                expected if isinstance(expected, str) else "COMBO", kind is str)
            return "" if fits else f"takes {expected if isinstance(expected, str) else 'a name from a list'}, not ${slot.name}"
        if isinstance(expected, list):
            if value not in expected:
                return f"'{value}' is not on this server (it has: {', '.join(map(str, expected[:5])) or 'none'})"
            return ""
        if expected in ("INT", "FLOAT"):
            if isinstance(value, bool) or not isinstance(value, int | float) or (expected == "INT" and not float(value).is_integer()):
                return f"takes a number ({expected}), not {value!r}"
            low, high = options.get("min"), options.get("max")
            if (isinstance(low, int | float) and value < low) or (isinstance(high, int | float) and value > high):
                return f"{value} is out of range ({low}..{high})"
        return ""


def random_seed() -> int:
    return random.randint(0, SEED_MAX)


def parse(text: str, capability: Capability, source: str) -> Workflow:
    """A workflow from a file's text, or WorkflowError saying why not."""
    try:
        graph = json.loads(text)
    except ValueError as exc:
        raise WorkflowError(f"{source}: not JSON ({exc})") from None
    if not isinstance(graph, dict) or not graph:
        raise WorkflowError(f"{source}: not a workflow (an object of nodes)")
    if "nodes" in graph and "links" in graph:
        raise WorkflowError(f"{source}: this is the UI format; export it with Save (API) instead")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"{source}: node {node_id} has no class_type")
        if not isinstance(node.get("inputs"), dict):
            raise WorkflowError(f"{source}: node {node_id} ({node['class_type']}) has no inputs")
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                if str(value[0]) not in graph:
                    raise WorkflowError(f"{source}: node {node_id} input '{name}' links to node {value[0]}, which is not in the file")
    slots = tuple(_slots(graph, source))
    workflow = Workflow(capability, source, graph, slots)
    missing = [f"${name}" for name in REQUIRED.get(capability, ()) if name not in workflow.names]
    if capability is Capability.DESCRIBE:
        raise WorkflowError(f"{source}: a workflow makes images; describe answers with text")
    if missing:
        raise WorkflowError(f"{source}: {capability.value} needs {', '.join(missing)} (see README, ComfyUI workflows)")
    return workflow


def _slots(graph: Mapping[str, Any], source: str) -> Iterator[Slot]:
    for node_id, node in graph.items():
        for name, value in node["inputs"].items():
            if not isinstance(value, str) or "$" not in value:
                continue
            where = f"{source}: node {node_id} ({node['class_type']}) input '{name}'"
            match = WHOLE.fullmatch(value)
            if match is None and WHOLE.fullmatch(value.strip()):
                raise WorkflowError(f"{where}: {value!r} has spaces around the placeholder")
            if match is None:
                for embedded in EMBEDDED.finditer(value):
                    yield Slot(node_id, name, embedded[1], embedded=True)
                continue
            placeholder, default = match[1], match[2]
            if placeholder not in PLACEHOLDERS:
                known = ", ".join(f"${p}" for p in PLACEHOLDERS)
                raise WorkflowError(f"{where}: ${placeholder} is not a placeholder (known: {known})")
            if default is not None:
                try:
                    default = PLACEHOLDERS[placeholder](default)
                except ValueError:
                    raise WorkflowError(f"{where}: the default of ${placeholder} is not a number") from None
            yield Slot(node_id, name, placeholder, default)


def shipped() -> dict[Capability, str]:
    """The default workflows that come with the bot: capability → text."""
    folder = resources.files("providers") / "comfyui_workflows"
    return {Capability(entry.name.removesuffix(".json")): entry.read_text(encoding="utf-8")
            for entry in folder.iterdir() if entry.name.endswith(".json")}


def load(directory: str) -> dict[Capability, Workflow]:
    """The shipped workflows, each replaced by the operator's file of the
    same name in ``directory``; a file that is not a capability's is refused."""
    texts = {capability: (text, f"{SHIPPED} {capability.value}.json") for capability, text in shipped().items()}
    if directory:
        folder = Path(directory)
        if not folder.is_dir():
            raise WorkflowError(f"COMFYUI_WORKFLOWS_DIR: {directory} is not a directory")
        for path in sorted(folder.glob("*.json")):
            try:
                capability = Capability(path.stem)
            except ValueError:
                names = ", ".join(f"{c.value}.json" for c in Capability if c is not Capability.DESCRIBE)
                raise WorkflowError(f"{path}: not a capability's name (one of {names})") from None
            texts[capability] = (path.read_text(encoding="utf-8"), str(path))
    workflows = {capability: parse(text, capability, source) for capability, (text, source) in texts.items()}
    img2img = workflows.get(Capability.IMG2IMG)
    for capability in SERVED_BY_IMG2IMG:
        if capability not in workflows and img2img is not None:
            workflows[capability] = img2img
    return workflows
