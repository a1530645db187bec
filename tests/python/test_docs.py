"""The documentation a newcomer reads: a README of about a screen that starts with the two
commands, every page of docs/ linked from it, and no link that leads nowhere. (What the
quickstart's snippets print is checked against `make watch` by scripts/watch-smoke.sh.)"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))


def links(path):
    """Every relative link of a Markdown file, outside code blocks, as a path and an anchor."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^(https?:|mailto:)", target):
            continue
        yield target


def test_the_readme_starts_with_the_two_commands_and_stays_about_a_screen():
    lines = README.read_text(encoding="utf-8").split("\n")
    first_screen = "\n".join(lines[:30])
    assert "make watch" in first_screen and "make test" in first_screen
    assert len(lines) <= 110, f"README.md is {len(lines)} lines: the reference belongs in docs/"


def test_every_page_of_docs_is_linked_from_the_readme():
    linked = {(ROOT / target.split("#")[0]).resolve() for target in links(README)}
    assert PAGES, "docs/ has no pages"
    missing = [page.name for page in PAGES if page.resolve() not in linked]
    assert not missing, f"not linked from README.md: {missing}"


def test_no_relative_link_leads_nowhere():
    broken = []
    for path in [README, ROOT / "BENCHMARKS.md", *PAGES]:
        for target in links(path):
            file = target.split("#")[0]
            if file and not (path.parent / file).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_quickstarts_sdk_is_the_one_the_tests_pin():
    pinned = re.search(r"^openai==(\S+)$", (ROOT / "tools/requirements.txt").read_text(), re.M)
    assert pinned, "tools/requirements.txt pins no openai"
    assert f"openai=={pinned.group(1)}" in README.read_text(encoding="utf-8")
