"""The README and docs/ as a reader meets them: short, every link working, about the project alone.

Pure Python over the Markdown files of the repository; no TensorFlow.
"""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "BENCHMARKS.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                 recursive=True))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def without_code_blocks(text):
    """The text without its fenced code blocks, whose lines are neither links nor headings."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def prose(text):
    """The text without code blocks and code spans, where brackets are not links."""
    return re.sub(r"`[^`\n]*`", "", without_code_blocks(text))


def anchors(text):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to
    hyphens, and -1, -2, ... after repeats."""
    seen, found = {}, set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", without_code_blocks(text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def test_the_pages_under_test_include_the_readme_and_every_docs_page():
    assert {"README.md", "BENCHMARKS.md", os.path.join("docs", "explanation.md"),
            os.path.join("docs", "real_images.md")} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves_to_a_file_of_the_repository(page):
    broken = []
    for target in LINK.findall(prose(read(page))):
        if re.match(r"^[a-z]+:", target):      # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) \
            if path else os.path.join(ROOT, page)
        if not resolved.startswith(ROOT + os.sep) or not os.path.exists(resolved):
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.endswith(".md"):
            with open(resolved, encoding="utf-8") as f:
                if anchor not in anchors(f.read()):
                    broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page}: " + "; ".join(broken)


def test_the_readme_is_a_front_door_of_at_most_250_lines():
    assert len(read("README.md").splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES)
def test_a_page_names_no_issue_and_no_path_outside_the_repository(page):
    text = read(page)
    assert not re.findall(r"issue [0-9]", text, flags=re.I)
    assert not re.search(r"\.\./shared|/work/", text)


def test_the_anchor_of_a_heading_is_githubs():
    text = "# Speed\n## Train step (sparse_path.py)\n## A wider code: celeba_wide.flags\n" \
           "## Speed\n```\n# not a heading\n```\n"
    assert anchors(text) == {"speed", "train-step-sparse_pathpy",
                             "a-wider-code-celeba_wideflags", "speed-1"}
