"""Sphinx configuration of seqshm's documentation site (built by tests/test_docs.py with -W)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "seqshm"
author = "the seqshm authors"
copyright = "the seqshm authors, GPL-2.0-only"  # noqa: A001 (Sphinx's name)
try:
    import seqshm

    release = version = seqshm.__version__
except ImportError:  # the site is built against the installed package; say so plainly
    raise SystemExit(
        "docs: seqshm must be installed (pip install '.[docs]') to build the site") from None

extensions = [
    "myst_parser",  # the Markdown pages (docs/*.md) are pages of the site as they are
    "sphinx.ext.autodoc",  # the Python API from the docstrings
    "linuxdoc.rstKernelDoc",  # the C APIs from their kernel-doc comments (kernel-doc directive)
    "seqshm_docs",  # docs/_ext/seqshm_docs.py: private Python paths resolved by public names
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "README.md"]

# Warnings are errors (-W in the build): every Python reference must resolve.
nitpicky = True
# No intersphinx: CI has no network but PyPI and Debian's archive. References to other
# projects' types in signatures are left unlinked, by name here, never by a blanket pattern for
# seqshm's own names.
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|npt|numpy\.typing|prometheus_client|opentelemetry|h11|rich)(\..*)?"),
    (r"py:.*", r"(ssl|socket|socketserver|http|concurrent\.futures|multiprocessing)(\..*)?"),
    (r"py:.*", r"argparse(\..*)?"),
    (r"py:.*", r"(collections\.abc|typing|types|os|pathlib|asyncio|enum|threading)\..*"),
    (r"py:class", r"(ndarray|NDArray|DTypeLike|ArrayLike|dtype|Path|PathLike|StrPath|Meter)"),
    # C: the kernel's and libc's own types and functions, which the C API pages name but do not
    # define (seqshm's own C names all resolve: the uapi structs on the format page, the rest
    # on the kernel and C API pages).
    (r"c:.*", r"(u8|u16|u32|u64|s8|s16|s32|s64|__u8|__u16|__u32|__u64|__s32|__s64|bool)"),
    (r"c:.*", r"(size_t|ssize_t|off_t|dev_t|ino_t|pid_t|mode_t|umode_t|uint\d+_t|int\d+_t)"),
    (r"c:.*", r"(clockid_t|timespec|stat|sigset_t|FILE|va_list)"),
    (r"c:func", r"(ERR_PTR|IS_ERR|PTR_ERR|misc_register|vmalloc_user|kmalloc|kfree)"),
    (r"c:func", r"(read|write|poll|ppoll|epoll_wait|mmap|munmap|mprotect|open|openat|close|fork)"),
    (r"c:func", r"(fcntl|ioctl|futex|futex_waitv|flock|stat|fstat|malloc|free|memcpy|strerror)"),
]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # the pages link to each other's sections by their GitHub anchors
suppress_warnings: list[str] = []

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# The kernel-doc directive takes paths starting with "/" from the repository's root.
kernel_doc_srctree = str(REPO)
kernel_doc_mode = "reST"  # as the kernel's own kernel-doc: the comments are reST
kernel_doc_verbose_warn = True
kernel_doc_known_attrs = "SEQSHM_API"  # libseqshm's visibility macro, not a return type

# libseqshm's header marks its functions SEQSHM_API (visibility, empty for its users).
c_id_attributes = ["SEQSHM_API"]
c_paren_attributes = ["__attribute__"]

# Unlabelled code blocks (command lines, diagrams) are shown as they are, not guessed at.
highlight_language = "text"

html_theme = "furo"
html_title = f"seqshm {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# linkcheck (run by hand only: CI has no network): internal links are checked by the -W build.
linkcheck_anchors = False
os.environ.setdefault("srctree", str(REPO))
