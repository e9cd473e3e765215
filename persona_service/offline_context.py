"""What the offline provider knows about a step: the requirement, taken apart.

Everything here is a pure, deterministic function of the StepRequest: no hashing of
sets, no clocks, no randomness, so the same request always yields the same files.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from persona_service.models import DependencyContext, StepRequest, TextFile

MAX_ITEMS = 12
MAX_ITEM_CHARS = 200
MAX_TITLE_CHARS = 72

# Words that describe software in general, not the thing this requirement is about.
_GENERIC_WORDS = """
    able about add added adding all allow allows also and any api app application apps
    are based be build builds can could create creates data delete deletes each easy
    endpoint endpoints for from get gets has have http into is it its json let lets list
    lists make manage managing mark marks may must need needs new not of on one or our
    provide provides python rest server service services should simple small so some
    store stored support supports system that the their them then there they this those
    through to tool update updates use used user using via want wants web when where
    which while who will with without would you your
"""
_GENERIC = frozenset(_GENERIC_WORDS.split())
_WORD = re.compile(r"[a-z]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def clean_text(text: str) -> str:
    """Collapses whitespace and drops control characters."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(printable.split())


def requirement_items(requirement: str) -> tuple[str, ...]:
    """Splits a requirement into statements: its lines, bullets and sentences."""
    items: list[str] = []
    for line in requirement.splitlines():
        line = _BULLET.sub("", line)
        for sentence in _SENTENCE_END.split(line):
            text = clean_text(sentence).rstrip(" .;:")
            if len(text) >= 3 and text not in items:
                items.append(text[:MAX_ITEM_CHARS])
    if not items:
        items.append(clean_text(requirement)[:MAX_ITEM_CHARS] or "Deliver the requested software")
    return tuple(items[:MAX_ITEMS])


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _plural(word: str) -> str:
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"


def key_nouns(requirement: str) -> tuple[str, ...]:
    """Returns the requirement's most frequent specific words, singular, best first.

    Ties go to the word that appears first, so the order is deterministic.
    """
    words = [_singular(w) for w in _WORD.findall(requirement.lower())]
    specific = [w for w in words if 3 <= len(w) <= 20 and w not in _GENERIC]
    counts = Counter(specific)
    first_seen = {w: i for i, w in reversed(list(enumerate(specific)))}
    return tuple(sorted(counts, key=lambda w: (-counts[w], first_seen[w])))


@dataclass(frozen=True)
class Context:
    """The requirement and dependency context one offline step works from."""

    requirement: str
    title: str
    items: tuple[str, ...]
    keywords: tuple[str, ...]
    noun: str
    resource: str
    step_id: str
    instructions: str
    dependencies: tuple[DependencyContext, ...]
    files: tuple[TextFile, ...]

    def file(self, path: str) -> TextFile | None:
        """Returns the dependency file at exactly this path, if given."""
        return next((f for f in self.files if f.path == path), None)

    def files_under(self, prefix: str) -> tuple[TextFile, ...]:
        """Returns the dependency files whose path starts with prefix."""
        return tuple(f for f in self.files if f.path.startswith(prefix))

    @property
    def python_files(self) -> tuple[TextFile, ...]:
        """The dependency files that are Python source."""
        return tuple(f for f in self.files if f.path.endswith(".py"))

    @property
    def packages(self) -> tuple[str, ...]:
        """Top-level Python packages among the dependency files (not tests), sorted."""
        found = {
            f.path.split("/", 1)[0]
            for f in self.files
            if f.path.count("/") == 1 and f.path.endswith("/__init__.py")
        }
        return tuple(sorted(found - {"tests"}))

    @property
    def omitted_paths(self) -> tuple[str, ...]:
        """Paths the scheduler left out of this step's context."""
        return tuple(p for d in self.dependencies for p in d.omitted_paths)


def build_context(request: StepRequest) -> Context:
    """Analyses a step request for the offline templates."""
    items = requirement_items(request.requirement)
    nouns = key_nouns(request.requirement)
    noun = nouns[0] if nouns else "item"
    title = clean_text(items[0])
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 3].rstrip() + "..."
    files: list[TextFile] = []
    seen: set[str] = set()
    for dependency in request.dependencies:
        for file in dependency.files:
            if file.path not in seen:
                seen.add(file.path)
                files.append(file)
    return Context(
        requirement=request.requirement.strip(),
        title=title,
        items=items,
        keywords=nouns[:8],
        noun=noun,
        resource=_plural(noun),
        step_id=request.step_id,
        instructions=clean_text(request.instructions),
        dependencies=request.dependencies,
        files=tuple(files),
    )
