"""Sphinx extension for seqshm's site: private Python paths resolved by public names, links to
the repository's own files, and the kernel-doc of a C header that may not be in the tree yet
(libseqshm's, before it lands)."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from linuxdoc.rstKernelDoc import KernelDoc
from sphinx import addnodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.transforms import SphinxTransform

# The modules whose names are public (the site documents each of their __all__); another
# helper's refactoring may move a definition between private modules at any time, so the site
# never links a private path.
PUBLIC_MODULES = ("seqshm", "seqshm.export", "seqshm.otel", "seqshm.testing")


def _is_private(target: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in target.split("."))


def _lookup(target: str) -> object | None:
    """The object a dotted path names, or None."""
    module, _, rest = target.partition(".")
    try:
        obj: object = importlib.import_module(module)
    except ImportError:
        return None
    parts = rest.split(".") if rest else []
    for i, part in enumerate(parts):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:
                obj = importlib.import_module(".".join([module, *parts[: i + 1]]))
            except ImportError:
                return None
    return obj


def public_name(target: str) -> str | None:
    """The public name (``seqshm.X``, ``seqshm.export.X``) of what a private path names."""
    obj = _lookup(target)
    if obj is None:
        return None
    last = target.rsplit(".", 1)[-1]
    for modname in PUBLIC_MODULES:
        mod = importlib.import_module(modname)
        if last in getattr(mod, "__all__", ()) and getattr(mod, last) is obj:
            return f"{modname}.{last}"
    return None


def missing_reference(app: Sphinx, env: BuildEnvironment, node: pending_xref,
                      contnode: nodes.TextElement) -> nodes.Element | None:
    """Resolve ``seqshm._private.Name`` to the public name of the same object; leave a private
    name that has no public one (a TypeVar, a helper class) as unlinked text, not a warning."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("seqshm.") or not _is_private(target):
        return None
    public = public_name(target)
    domain = env.get_domain("py")
    if public is not None:
        for typ in ("class", "exc", "func", "data", "attr", "meth", "obj"):
            ref = domain.resolve_xref(env, node["refdoc"], app.builder, typ, public, node,
                                      contnode)
            if ref is not None:
                return ref
        return None  # public but not documented: the warning stands
    return contnode  # private, with no public name: shown as written, unlinked


class RepositoryLinks(SphinxTransform):
    """The pages link to the repository's files outside docs/ (a test, a header, a benchmark
    report) as they do on a source browser. Such a link is checked like any other: a file or
    folder that exists becomes a link to a copy of the file shipped with the site (Sphinx's
    downloads; a Markdown file too, which MyST would otherwise take for a missing page) or,
    for a folder, its name as code; one that does not exist is left for MyST to report."""

    default_priority = 500  # after MyST made its references, before the env's collectors

    def apply(self, **kwargs: Any) -> None:
        srcdir = Path(self.env.srcdir).resolve()
        repo = srcdir.parent
        for node in list(self.document.findall(pending_xref)):
            if node.get("reftype") != "myst":
                continue
            target = self._repository_path(node, srcdir)
            if target is None or not target.is_relative_to(repo) or target.is_relative_to(srcdir):
                continue
            if target.is_file():
                rel = os.path.relpath(target, Path(self.env.doc2path(self.env.docname)).parent)
                new = addnodes.download_reference(
                    "", "", refdoc=self.env.docname, reftarget=rel, refexplicit=True,
                    refdomain=None, reftype="myst", classes=["xref", "download", "myst"])
                new.extend(child.deepcopy() for child in node.children)
                node.replace_self(new)
            elif target.is_dir():
                node.replace_self(nodes.literal(text=node.astext()))

    def _repository_path(self, node: pending_xref, srcdir: Path) -> Path | None:
        target = str(node.get("reftarget", ""))
        if node.get("refdomain") == "doc":  # a Markdown file MyST took for a page
            for suffix in self.config.source_suffix:
                path = Path(target + suffix)
                path = path if path.is_absolute() else srcdir / path
                if path.exists():
                    return path.resolve()
            return None
        if not target or "://" in target or target.startswith("#"):
            return None
        _, abspath = self.env.relfn2path(target.split("#", 1)[0], self.env.docname)
        return Path(abspath).resolve()


def _comment_text(comment: str) -> str:
    """A C block comment's text without its delimiters and leading stars."""
    lines = comment.strip().removeprefix("/*").removesuffix("*/").splitlines()
    return "\n".join(re.sub(r"^\s*\* ?", "", line) for line in lines).strip()


def top_comment(source: str) -> list[str]:
    """The paragraphs of a header's first block comment after its SPDX line (what the header
    says about every function: conventions), without the comment's first line when that
    only names the file."""
    m = re.search(r"/\*(?!\*)(?:(?!\*/).)*?\*/", re.sub(r"^/\* SPDX[^\n]*\*/\n", "", source),
                  re.S)
    if m is None:
        return []
    return [" ".join(p.split()) for p in _comment_text(m.group(0)).split("\n\n") if p.strip()]


def opaque_structs(source: str) -> list[tuple[str, str]]:
    """(name, the plain comment above it) of each struct the header declares without a body:
    the handles a C API passes around, which kernel-doc cannot document."""
    found = re.finditer(r"(?:/\*((?:(?!\*/).)*)\*/\s*\n)?^struct (\w+);", source, re.S | re.M)
    return [(m.group(2), " ".join(_comment_text("/*" + (m.group(1) or "") + "*/").split()))
            for m in found]


class OptionalKernelDoc(KernelDoc):
    """``kernel-doc`` of a header that this source tree may not hold yet: where the file is
    missing, a note saying so takes the place of its reference (tests/test_docs.py requires
    the header wherever its directory, lib/, exists, so the note cannot hide a lost header).
    Before the kernel-doc: the header's top comment (its conventions), and each opaque struct
    with the comment above its declaration, so that the functions' parameters link to them."""

    def run(self) -> list[nodes.Node]:
        path = self.arguments[0]
        root = Path(self.state.document.settings.env.config.kernel_doc_srctree)
        header = root / path.lstrip("/")
        if not header.is_file():
            note = nodes.note()
            note += nodes.paragraph(
                text=f"This source tree has no {path.lstrip('/')}: the reference is built from "
                     "that header's kernel-doc comments when the C library is in the tree.")
            return [note]
        reference = list(super().run())  # first: nested parsing below changes the source
        source = header.read_text()
        out: list[nodes.Node] = [nodes.paragraph(text=p) for p in top_comment(source)]
        rst = []
        for name, comment in opaque_structs(source):
            rst += [f".. c:struct:: {name}", "", f"   {comment or 'Opaque.'}", ""]
        if rst:
            holder = nodes.container()
            self.state.nested_parse(StringList(rst, source=str(header)), self.content_offset,
                                    holder)
            out += holder.children
        return out + reference


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", missing_reference)
    app.add_directive("seqshm-kernel-doc", OptionalKernelDoc)
    app.add_transform(RepositoryLinks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
