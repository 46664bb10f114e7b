#!/usr/bin/env python3
"""Docs check: fails on a file the docs cite that does not exist, on a malformed `cpp complete`
block, and on a work-log word. Standard library only; run by scripts/run_tests.sh.

Usage: scripts/check_docs.py [--root DIR] [--quiet]
       scripts/check_docs.py --self-test   (builds a small repository in a temporary folder,
                                            plants each kind of error and checks it is found)

Pages: README.md, CHANGELOG.md and every *.md under docs/ (any depth) and under the code
folders (e.g. tests/golden/README.md). Code files: the sources, headers, scripts and CMake files
under include/ src/ kernels/ examples/ bench/ scripts/ tests/ cmake/ .ci/ and CMakeLists.txt.

1. Cited files (file:line: missing: PATH)
   - Markdown links and images with a relative target, [x](path) or [x](path#anchor), resolved
     against the page's folder (as a renderer does); http(s)/mailto/other schemes and pure
     #anchors are skipped.
   - Paths in inline code (`src/gemm_cpu.cpp`, `bash scripts/setup.sh --x`, `path:12`), every
     word of it, in the prose of the pages (bench/peers/run.sh), in shell-like fenced blocks,
     and in the comments of the code files (research/perf.md). A word is a cited path when it
     has a '/' and
       (a) starts with a top-level folder of the repository (include/ src/ kernels/ tests/
           bench/ examples/ scripts/ docs/ cmake/ .ci/ or any other folder at the root); in
           prose and comments it must also end in a file extension or '/';
       (b) or ends in .md (research/perf.md, notes/x.md: a note the repository does not have);
       (c) or ends in a source/data extension and its first folder is a folder somewhere in
           the repository (nn/quant_linear.h, tquant/tquant.h, lib/demo_cuda.*); such a
           partial path may resolve anywhere: it must be the tail of some file's path.
     It must exist relative to the repository root, the page's folder, include/ or
     include/tquant/ (file or folder; a glob must match something; {a,b} braces must all
     exist). Skipped: URLs, absolute paths, ~ and $VARIABLE paths, placeholders with <...> or
     "...", and paths inside build or install folders (build*/, prefix/, install/, .venv/,
     site-packages/, gpu_deps/, gpu_out/, .cache/). Paths of other projects (torch/csrc/...)
     are skipped by rule (c), since torch/ is no folder of this repository.
   - In every fenced C++ block: #include <tquant/...> and "tquant/..." headers must exist in
     include/.
2. `cpp complete` blocks (tests/package_test.sh extracts, builds and runs them)
   - the block must be closed by a ``` line before the page ends or before another fence with
     an info string opens (the extraction ends the block at the first line that starts with ```);
   - it must contain `int main(`;
   - a fence that names `complete` with a C++ language must be written exactly "```cpp complete"
     at the start of the line, otherwise the extraction silently skips it.
   The number of programs of every page that has some is printed.
3. Work-log words (file:line: work-log word: "...") - docs and comments describe the project,
   not how and by whom it was made. Case-insensitive, in pages and in whole lines of code files:
   - issue numbers: "issue 15", "issue #15", "issues #3 and #4" (not the verb: "ranks issue 2
     all-reduces"); a bare "#15" in prose
     (repository-qualified upstream references such as pytorch#107671 are allowed);
   - the issue or task as a source of requirements: "the issue's ...", "the issue asks/says/wants";
   - "session(s)" meaning a work session ("inference session", "ONNX Runtime ... session",
     InferenceSession and code such as self.session / session.run are allowed);
   - "this/next/previous round";
   - helpers, agents and reviews: "reviewer(s)", "code review", "review comments", "another
     helper", "helper 2", "other agents";
   - the lending machinery: "was lent", "is lent" (a GPU "where one is available" instead);
   - "work log" (but "work-log words", this check's name), "the brief", and first-person change narration: "we/I fixed, rewrote, reverted,
     refactored, renamed, tried, decided".
"""

from __future__ import annotations

import argparse
import fnmatch
import glob as globmod
import os
import re
import subprocess
import sys
import tempfile
from urllib.parse import unquote

CODE_DIRS = ("include", "src", "kernels", "examples", "bench", "scripts", "tests", "cmake", ".ci")
TOP_DIRS = frozenset(CODE_DIRS + ("docs",))
SKIP_DIR_NAMES = frozenset({".git", ".venv", "venv", "__pycache__", ".cache", "gpu_deps", "gpu_out",
                            ".whl", ".gtest", "node_modules"})
# First folders of paths inside a build, install or environment folder: not repository files.
BUILD_FIRST = frozenset({"prefix", "install", ".venv", "venv", "site-packages", "gpu_deps",
                         "gpu_out", ".cache", ".whl", ".gtest", "out", "tmp", "root", "work"})
SOURCE_EXTS = frozenset("""h hpp hh cuh cu cpp cc cxx c py sh bash cmake txt md json jsonl yml yaml
                        toml in cfg ini csv safetensors pt onnx npz npy svg png html""".split())
C_FAMILY = frozenset(".h .hpp .hh .cuh .cu .cpp .cc .cxx .c .in".split())
HASH_COMMENT = frozenset(".py .sh .bash .cmake .txt .yml .yaml .toml".split())
SHELL_LANGS = frozenset({"", "bash", "sh", "shell", "console", "text", "txt", "sh-session"})
CPP_LANGS = frozenset({"cpp", "c++", "cxx", "cc", "c", "cuda", "h", "hpp"})

FENCE_RE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(.*?)\s*$")
COMPLETE_RE = re.compile(r"^```cpp complete[ \t]*$")  # the extraction's pattern, exactly
MAIN_RE = re.compile(r"\bint\s+main\s*\(")
LINK_RE = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+[\"'(][^)]*)?\)")
REFDEF_RE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)")
CODE_SPAN_RE = re.compile(r"(`+)(.+?)\1")
PROSE_PATH_RE = re.compile(r"(?<![\w/.$~@%<>:=-])(\.?[A-Za-z_][\w.+-]*/[\w./*+-]*)")
INCLUDE_RE = re.compile(r"#\s*include\s*[<\"](tquant/[^>\"]+)[>\"]")
URL_RE = re.compile(r"[A-Za-z][\w+.-]*://\S+")

WORKLOG_PATTERNS = [
    # "issue 15", "issue #15", "issues #3 and #4"; not the verb ("ranks issue 2 all-reduces").
    (re.compile(r"\b(?:issues?|tickets?|bugs?)\s*#\s*\d+(?:\s*(?:,|and)\s*#?\d+)*\b|"
                r"\b(?:issue|ticket)\s+\d+\b(?!\s*(?:[\w-]+s|x|times)\b)", re.I), None),
    (re.compile(r"(?:^|(?<=[\s(\[]))#\d+\b(?![\w'\"-])"), "prose"),
    (re.compile(r"\bthe (?:issue|task|ticket)(?:'s\b|\s+(?:asks?|asked|says|said|wants?|wanted|"
                r"requires?|required|requests?|requested|calls for|specifies|specified)\b)", re.I),
     None),
    (re.compile(r"\bsessions?\b", re.I), "session"),
    (re.compile(r"\b(?:this|next|previous|prior|last) round\b", re.I), None),
    (re.compile(r"\breviewers?\b|\b(?:code|peer|design) reviews?\b|"
                r"\breview (?:comments?|feedback|findings?|notes?|rounds?)\b", re.I), None),
    (re.compile(r"\b(?:another|other|second|parallel|fellow|sub-?)\s*(?:helpers?|agents?)\b|"
                r"\bhelpers?\s+(?:\d+|[A-Z]\b|session|agent)|\bhelper'?s (?:work|session|report|"
                r"change|review)", re.I), None),
    (re.compile(r"\b(?:was|were|is|are|been|be|being|not) lent\b", re.I), None),
    # (not "work-log words": the name of this check)
    (re.compile(r"\bwork[- ]?logs?\b(?!\s+words?\b)|\bthe brief\b", re.I), None),
    (re.compile(r"\b(?:we|I)\s+(?:fixed|rewrote|reverted|refactored|renamed|tried|decided)\b"),
     None),
]
SESSION_OK_BEFORE = re.compile(
    r"\b(?:inference|onnx\s*runtime|onnxruntime|ort|tensorflow|tf|runtime|training|ssh|tmux|"
    r"http|login|user)(?:\s+[\w-]+){0,2}\s*$", re.I)

SELF = os.path.normpath("scripts/check_docs.py")


class Checker:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.findings: list[str] = []
        self.programs: list[tuple[str, int]] = []
        self._folder_names: set[str] | None = None
        self._all_files: list[str] | None = None

    # ---- files -------------------------------------------------------------------------------
    def walk(self, top: str):
        base = os.path.join(self.root, top)
        if os.path.isfile(base):
            yield top
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames
                                 if d not in SKIP_DIR_NAMES and not d.startswith("build"))
            for name in sorted(filenames):
                yield os.path.relpath(os.path.join(dirpath, name), self.root)

    def pages(self):
        seen = []
        for name in ("README.md", "CHANGELOG.md"):
            if os.path.isfile(os.path.join(self.root, name)):
                seen.append(name)
        for top in ("docs",) + CODE_DIRS:
            seen += [p for p in self.walk(top) if p.endswith(".md")]
        return seen

    def code_files(self):
        files = []
        for top in CODE_DIRS + ("CMakeLists.txt",):
            for rel in self.walk(top):
                ext = os.path.splitext(rel)[1]
                base = os.path.basename(rel)
                if os.path.normpath(rel) == SELF:
                    continue  # its patterns and planted examples
                if ext in C_FAMILY or ext in HASH_COMMENT or base == "CMakeLists.txt" or \
                        (ext == "" and rel.startswith(".ci")):
                    files.append(rel)
        return files

    def folder_names(self):
        if self._folder_names is None:
            names = set()
            for top in ("docs",) + CODE_DIRS:
                for dirpath, dirnames, _ in os.walk(os.path.join(self.root, top)):
                    dirnames[:] = [d for d in dirnames
                                   if d not in SKIP_DIR_NAMES and not d.startswith("build")]
                    names.update(dirnames)
            names.update(self.top_dirs())
            self._folder_names = names
        return self._folder_names

    def all_files(self):
        if self._all_files is None:
            files = []
            for top in ("docs",) + CODE_DIRS:
                files += ["/" + p.replace(os.sep, "/") for p in self.walk(top)]
            self._all_files = files
        return self._all_files

    def top_dirs(self):
        dirs = set(TOP_DIRS)
        for name in os.listdir(self.root):
            if os.path.isdir(os.path.join(self.root, name)) and name not in SKIP_DIR_NAMES \
                    and not name.startswith("build") and name not in BUILD_FIRST:
                dirs.add(name)
        return dirs

    # ---- cited paths -------------------------------------------------------------------------
    @staticmethod
    def clean(word: str) -> str:
        word = word.strip().strip("\"'`")
        if "=" in word and not word.startswith("="):
            word = word.split("=", 1)[1]  # --flag=path
        word = word.rstrip(".,;:!?)]}'\"")
        word = word.lstrip("([{'\"")
        word = re.sub(r"(?::\d+)+$", "", word)  # path:line[:col]
        word = re.sub(r"#L?\d+(?:-L?\d+)?$", "", word)
        return word

    def candidate(self, word: str, mode: str) -> str | None:
        """The repository path a word cites, or None. mode: code (inline code / shell block
        word), prose (page prose or a code comment)."""
        word = self.clean(word)
        if "/" not in word or len(word) < 3:
            return None
        if URL_RE.match(word) or re.match(r"^[A-Za-z][\w+.-]*:", word):
            return None
        if word[0] in "/~$%@<-" or "<" in word or ">" in word or "..." in word or "$" in word:
            return None
        if re.search(r"[\s\\|&;`^]", word) or word.count("{") != word.count("}"):
            return None
        if word.startswith("./"):
            word = word[2:]
        first = word.split("/", 1)[0]
        if first == "..":
            return word  # relative to the page (or the file's folder)
        if not first or first.startswith("build") or first in BUILD_FIRST:
            return None
        last = word.rstrip("/").rsplit("/", 1)[-1]
        ext = last.rsplit(".", 1)[1].lower() if "." in last else ""
        has_ext = ext in SOURCE_EXTS or bool(re.search(r"\.[*{]", last))
        if first in self.top_dirs():
            if mode == "prose" and not (has_ext or word.endswith("/")):
                return None
            return word
        if ext == "md":
            return word
        if has_ext and first in self.folder_names():
            return word
        return None

    def exists(self, path: str, page_dir: str, partial_ok: bool) -> bool:
        variants = [path]
        brace = re.search(r"\{([^{}]*)\}", path)
        if brace:
            variants = [path[:brace.start()] + alt + path[brace.end():]
                        for alt in brace.group(1).split(",")]
            return all(self.exists(v, page_dir, partial_ok) for v in variants)
        bases = [self.root, os.path.join(self.root, page_dir),
                 os.path.join(self.root, "include"), os.path.join(self.root, "include", "tquant")]
        for base in bases:
            full = os.path.normpath(os.path.join(base, path))
            if any(ch in path for ch in "*?["):
                if globmod.glob(full, recursive=True):
                    return True
            elif os.path.exists(full):
                return True
        if partial_ok:
            tail = "/" + path.rstrip("/")
            if any(ch in path for ch in "*?["):
                return any(fnmatch.fnmatch(f, "*" + tail) for f in self.all_files())
            return any(f.endswith(tail) or tail + "/" in f for f in self.all_files())
        return False

    def cite(self, rel: str, lineno: int, word: str, mode: str):
        path = self.candidate(word, mode)
        if path is None:
            return
        first = path.split("/", 1)[0]
        partial = first not in self.top_dirs() and not path.endswith(".md")
        if not self.exists(path, os.path.dirname(rel), partial):
            self.findings.append(f"{rel}:{lineno}: missing: {path}")

    def check_link(self, rel: str, lineno: int, target: str):
        target = target.strip("<>")
        if not target or target.startswith("#") or URL_RE.match(target) or \
                re.match(r"^[A-Za-z][\w+.-]*:", target):
            return
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not path or "<" in path or path.startswith("$"):
            return
        path = unquote(path)
        base = self.root if path.startswith("/") else os.path.join(self.root, os.path.dirname(rel))
        if not os.path.exists(os.path.normpath(os.path.join(base, path.lstrip("/")))):
            self.findings.append(f"{rel}:{lineno}: missing: {path} (link)")

    # ---- work-log words ----------------------------------------------------------------------
    def worklog(self, rel: str, lineno: int, text: str, prose: bool, only: str | None = None,
                skip: str | None = None):
        """prose: page prose (a bare #12 counts there); only / skip: the kind of pattern to
        check alone / to leave out (code files: session(s) only in comments, since a variable
        may be an ONNX Runtime session)."""
        spans: list[tuple[int, int]] = []
        for pattern, kind in WORKLOG_PATTERNS:
            if (kind == "prose" and not prose) or (only and kind != only) or \
                    (skip and kind == skip):
                continue
            for m in pattern.finditer(text):
                if any(m.start() < end and start < m.end() for start, end in spans):
                    continue  # one finding per word ("issue #7", not also "#7")
                if kind == "session":
                    before, after = text[:m.start()], text[m.end():]
                    if re.search(r"\w[._]$", before) or re.match(r"[._]\w|[(\[]", after):
                        continue  # code: self.session, session.run(...)
                    if SESSION_OK_BEFORE.search(before):
                        continue
                spans.append(m.span())
                self.findings.append(f"{rel}:{lineno}: work-log word: \"{m.group(0).strip()}\"")

    # ---- pages -------------------------------------------------------------------------------
    def check_page(self, rel: str):
        with open(os.path.join(self.root, rel), encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        fence = None  # (char, length, lang, start line) of an ordinary open fence
        complete = None  # start line of an open `cpp complete` block
        complete_text: list[str] = []
        count = 0
        for i, line in enumerate(lines, 1):
            m = FENCE_RE.match(line)
            if complete is not None:
                if line.startswith("```"):
                    if m and m.group(3):
                        self.findings.append(
                            f"{rel}:{complete}: cpp complete block is not closed before the "
                            f"fence at line {i} (its ``` line is missing)")
                    elif not MAIN_RE.search("\n".join(complete_text)):
                        self.findings.append(f"{rel}:{complete}: cpp complete block has no "
                                             f"`int main(`")
                    complete = None
                    continue
                complete_text.append(line)
                self.worklog(rel, i, line, prose=False)
                for inc in INCLUDE_RE.finditer(line):
                    if not os.path.exists(os.path.join(self.root, "include", inc.group(1))):
                        self.findings.append(f"{rel}:{i}: missing: include/{inc.group(1)}")
                continue
            if fence is not None:
                char, length, lang, _ = fence
                if m and m.group(2)[0] == char and len(m.group(2)) >= length and not m.group(3):
                    fence = None
                    continue
                self.worklog(rel, i, line, prose=False)
                if lang in CPP_LANGS:
                    for inc in INCLUDE_RE.finditer(line):
                        if not os.path.exists(os.path.join(self.root, "include", inc.group(1))):
                            self.findings.append(f"{rel}:{i}: missing: include/{inc.group(1)}")
                elif lang in SHELL_LANGS:
                    for word in re.split(r"\s+", line.split(" #", 1)[0]):
                        path = self.candidate(word, "code")
                        if path and path.split("/", 1)[0] in self.top_dirs():
                            self.cite(rel, i, word, "code")
                continue
            if m:
                info = m.group(3)
                if COMPLETE_RE.match(line):
                    complete, complete_text = i, []
                    count += 1
                    continue
                if re.search(r"\bcomplete\b", info) and \
                        re.match(r"(?:cpp|c\+\+|cxx|cc)\b", info.strip(), re.I):
                    self.findings.append(f"{rel}:{i}: fence \"{line.strip()}\" is not extracted "
                                         f"by tests/package_test.sh: write \"```cpp complete\" "
                                         f"at the start of the line")
                lang = info.split()[0].lower() if info.split() else ""
                fence = (m.group(2)[0], len(m.group(2)), lang, i)
                continue
            # Prose.
            self.worklog(rel, i, line, prose=True)
            rest = line
            for lm in LINK_RE.finditer(line):
                self.check_link(rel, i, lm.group(1))
            rest = LINK_RE.sub(" ", rest)
            rm = REFDEF_RE.match(line)
            if rm:
                self.check_link(rel, i, rm.group(1))
                rest = ""
            for cm in CODE_SPAN_RE.finditer(rest):
                for word in cm.group(2).split():
                    self.cite(rel, i, word, "code")
            rest = CODE_SPAN_RE.sub(" ", rest)
            rest = URL_RE.sub(" ", rest)
            for pm in PROSE_PATH_RE.finditer(rest):
                self.cite(rel, i, pm.group(1), "prose")
        if complete is not None:
            self.findings.append(f"{rel}:{complete}: cpp complete block is never closed")
        if count:
            self.programs.append((rel, count))

    # ---- code files --------------------------------------------------------------------------
    @staticmethod
    def comments(rel: str, lines: list[str]):
        """(line number, comment text) of a code file."""
        ext = os.path.splitext(rel)[1]
        c_family = ext in C_FAMILY
        in_block = False
        for i, line in enumerate(lines, 1):
            if c_family:
                parts = []
                rest = line
                while rest:
                    if in_block:
                        end = rest.find("*/")
                        if end < 0:
                            parts.append(rest)
                            rest = ""
                        else:
                            parts.append(rest[:end])
                            rest = rest[end + 2:]
                            in_block = False
                    else:
                        m = re.search(r"//|/\*", rest)
                        if not m:
                            break
                        if m.group(0) == "//":
                            parts.append(rest[m.end():])
                            break
                        in_block = True
                        rest = rest[m.end():]
                if parts:
                    yield i, " ".join(parts)
            else:
                m = re.search(r"(?:^|\s)#(?![!{#])(.*)$", line)
                if m:
                    yield i, m.group(1)

    def check_code(self, rel: str):
        with open(os.path.join(self.root, rel), encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines, 1):
            self.worklog(rel, i, line, prose=False, skip="session")
        for i, text in self.comments(rel, lines):
            self.worklog(rel, i, text, prose=False, only="session")
            text = URL_RE.sub(" ", text)
            for cm in CODE_SPAN_RE.finditer(text):
                for word in cm.group(2).split():
                    self.cite(rel, i, word, "code")
            text = CODE_SPAN_RE.sub(" ", text)
            for pm in PROSE_PATH_RE.finditer(text):
                self.cite(rel, i, pm.group(1), "prose")

    def run(self):
        for rel in self.pages():
            self.check_page(rel)
        for rel in self.code_files():
            self.check_code(rel)
        return self.findings


def check(root: str, quiet: bool = False) -> int:
    checker = Checker(root)
    findings = checker.run()
    if not quiet:
        for rel, count in checker.programs:
            print(f"docs check: {rel}: {count} cpp complete program(s)")
    for finding in findings:
        print(finding)
    missing = sum(": missing: " in f for f in findings)
    words = sum(": work-log word: " in f for f in findings)
    blocks = len(findings) - missing - words
    total = sum(c for _, c in checker.programs)
    print(f"docs check: {len(checker.pages())} pages, {len(checker.code_files())} code files, "
          f"{total} cpp complete programs; {missing} missing cited files, {blocks} block "
          f"errors, {words} work-log words: {'FAIL' if findings else 'OK'}")
    return 1 if findings else 0


# ---- self-test ---------------------------------------------------------------------------------
CLEAN_FILES = {
    "README.md": """# demo
See [the API](docs/api.md#functions), [guide](docs/guide/start.md), [web](https://example.com),
[mail](mailto:a@b.c) and [top](#demo). The kernels are in `src/gemm.cpp` and `include/tquant/`,
tests in `tests/*_test.cpp`, headers `nn/quant_linear.h` and `tquant/tquant.h`, the example
`examples/cnn/digits.{h,cpp}`; run `bash scripts/setup.sh --jobs 2` or scripts/setup.sh, then
`build/bench/tquant_bench`, `<prefix>/lib/libtquant.so`, `$TQUANT_DATA_DIR/x.csv`,
`torch/csrc/distributed/c10d/ProcessGroupGloo.hpp` and `/usr/include/gloo`. Upstream bugs:
pytorch#107671. ONNX Runtime runs an inference session (`ort.InferenceSession`); the ONNX
Runtime CPU session is sequential. Round 2 of 7; rounds are interleaved. A helper function.

```cpp complete
#include <tquant/tquant.h>
int main() { return 0; }
```

```bash
bash scripts/setup.sh
build/examples/app
```
""",
    "docs/api.md": "# API\n## Functions\nBack to the [README](../README.md).\n",
    "docs/guide/start.md": """# Start
Read [the API](../api.md) and `docs/api.md`; the source is src/gemm.cpp.

```cpp complete
int main() { return 0; }
```
""",
    "include/tquant/tquant.h": "// The umbrella header (src/gemm.cpp has the kernels).\n",
    "include/tquant/nn/quant_linear.h": "#pragma once\n",
    "src/gemm.cpp": "// GEMM; see docs/api.md. self.session is code.\nint f() { return 0; }\n",
    "tests/gemm_test.cpp": "// Tests src/gemm.cpp.\n",
    "examples/cnn/digits.h": "\n",
    "examples/cnn/digits.cpp": "\n",
    "scripts/setup.sh": "#!/bin/sh\n# Set-up (docs/guide/start.md).\necho ${#x}\n",
    "bench/peers/peers.py": "# One ONNX Runtime CPU session per model.\n"
                            "session = ort.InferenceSession(p)\n",
}

# (file, text to append, the finding expected, as a substring)
PLANTED = [
    ("docs/guide/start.md", "See [gone](../gone.md).\n",
     "docs/guide/start.md:{n}: missing: ../gone.md (link)"),
    ("README.md", "The fast path: `src/gemm_avx512.cpp`.\n",
     "README.md:{n}: missing: src/gemm_avx512.cpp"),
    ("README.md", "Targets are in research/perf.md, section 6.\n",
     "README.md:{n}: missing: research/perf.md"),
    ("src/gemm.cpp", "// Ampere only (research/perf.md 2.1).\n",
     "src/gemm.cpp:{n}: missing: research/perf.md"),
    ("include/tquant/tquant.h", "/// Shapes as in `tests/shapes_test.cpp`.\n",
     "include/tquant/tquant.h:{n}: missing: tests/shapes_test.cpp"),
    ("docs/api.md", "The header is `nn/quant_conv.h`.\n",
     "docs/api.md:{n}: missing: nn/quant_conv.h"),
    ("docs/api.md", "```cpp\n#include <tquant/old.h>\n```\n",
     "docs/api.md:{n1}: missing: include/tquant/old.h"),
    ("docs/api.md", "```bash\nbash scripts/missing.sh\n```\n",
     "docs/api.md:{n1}: missing: scripts/missing.sh"),
    ("README.md", "Fixed in issue 15.\n",
     "README.md:{n}: work-log word: \"issue 15\""),
    ("docs/api.md", "Both ranks issue 2 all-reduces (see issue #7).\n",
     "docs/api.md:{n}: work-log word: \"issue #7\""),
    ("docs/api.md", "See #12 for more.\n",
     "docs/api.md:{n}: work-log word: \"#12\""),
    ("docs/guide/start.md", "Prepared in the previous session.\n",
     "docs/guide/start.md:{n}: work-log word: \"session\""),
    ("docs/api.md", "The issue's candidate is 7 %.\n",
     "docs/api.md:{n}: work-log word: \"The issue's\""),
    ("src/gemm.cpp", "// Asked for by the reviewer.\n",
     "src/gemm.cpp:{n}: work-log word: \"reviewer\""),
    ("scripts/setup.sh", "# Another helper owns this part.\n",
     "scripts/setup.sh:{n}: work-log word: \"Another helper\""),
    ("docs/api.md", "Untested: no GPU was lent.\n",
     "docs/api.md:{n}: work-log word: \"was lent\""),
    ("README.md", "It was fixed in this round.\n",
     "README.md:{n}: work-log word: \"this round\""),
    ("docs/guide/start.md", "```cpp complete\nint main() { return 0; }\n",
     "docs/guide/start.md:{n}: cpp complete block is never closed"),
    ("docs/guide/start.md", "```cpp complete\nvoid f() {}\n```\n",
     "docs/guide/start.md:{n}: cpp complete block has no `int main(`"),
    ("docs/api.md", "```cpp complete\nint main() {}\n```bash\nls\n```\n",
     "docs/api.md:{n}: cpp complete block is not closed before the fence at line {n2}"),
    ("docs/api.md", "1. Run:\n   ```cpp complete\n   int main() {}\n   ```\n",
     "docs/api.md:{n1}: fence \"```cpp complete\" is not extracted"),
]


def self_test() -> int:
    failures = 0

    def make(base: str):
        for rel, text in CLEAN_FILES.items():
            path = os.path.join(base, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)

    with tempfile.TemporaryDirectory(prefix="check_docs_selftest.") as tmp:
        clean = os.path.join(tmp, "clean")
        make(clean)
        checker = Checker(clean)
        findings = checker.run()
        if findings or checker.programs != [("README.md", 1), ("docs/guide/start.md", 1)]:
            failures += 1
            print("self-test: FAIL: the clean repository has findings:", *findings,
                  f"programs {checker.programs}", sep="\n  ")
        else:
            print("self-test: ok   clean repository: no findings, programs README.md 1, "
                  "docs/guide/start.md 1")
        for k, (rel, text, expected) in enumerate(PLANTED):
            base = os.path.join(tmp, f"planted{k}")
            make(base)
            n = CLEAN_FILES[rel].count("\n") + 1  # the first planted line
            expected = expected.format(n=n, n1=n + 1, n2=n + 2)
            with open(os.path.join(base, rel), "a", encoding="utf-8") as f:
                f.write(text)
            findings = Checker(base).run()
            ok = any(expected in f for f in findings) and len(findings) == 1
            failures += not ok
            first_line = text.strip().split("\n")[0]
            print(f"self-test: {'ok  ' if ok else 'FAIL'} planted {first_line!r} in {rel}: "
                  + ("; ".join(findings) if findings else "nothing found"))
            if not ok:
                print(f"  expected exactly one finding containing: {expected}")
        # The command line fails on a planted error and passes on the clean repository.
        rc_clean = subprocess.run([sys.executable, os.path.abspath(__file__), "--root", clean,
                                   "--quiet"], stdout=subprocess.DEVNULL).returncode
        rc_planted = subprocess.run([sys.executable, os.path.abspath(__file__), "--root",
                                     os.path.join(tmp, "planted0"), "--quiet"],
                                    stdout=subprocess.DEVNULL).returncode
        ok = rc_clean == 0 and rc_planted == 1
        failures += not ok
        print(f"self-test: {'ok  ' if ok else 'FAIL'} exit status: clean {rc_clean}, "
              f"planted {rc_planted}")
    print(f"self-test: {len(PLANTED) + 2 - failures} of {len(PLANTED) + 2} passed: "
          + ("OK" if not failures else "FAIL"))
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--root", default=os.path.join(here, ".."),
                        help="repository root (default: this script's repository)")
    parser.add_argument("--self-test", action="store_true",
                        help="plant each kind of error in a temporary repository and check "
                             "that it is found")
    parser.add_argument("--quiet", action="store_true", help="no per-page program counts")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    return check(args.root, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
