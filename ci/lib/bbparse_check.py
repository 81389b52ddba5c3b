#!/usr/bin/env python3
"""Parse every BitBake file of the layer with BitBake's own parser (the `bb`
library of the bitbake-setup PyPI package).

.bb/.bbappend/.bbclass/.inc files go through BBHandler's statement parser
(syntax, unclosed functions, leftover lines); assignments, exports and
functions are then evaluated in a scratch datastore (override syntax, flags)
and every Python function, task and anonymous block is compiled. .conf files
are read by ConfHandler with LAYERDIR set. Inherits and includes are not
followed: the classes they name live in openembedded-core (see
../shared/tools/yocto-check for the parse against it).

Usage: bbparse_check.py LAYERDIR   -> prints one line per file, exit 1 on any error
"""
import os
import sys
import textwrap

import types

# bitbake-setup's wheel ships bb/ without hashserv, which bb.siggen imports at
# load time; parsing never talks to a hash server, so an empty module will do.
for _name in ("hashserv", "hashserv.client"):
    sys.modules.setdefault(_name, types.ModuleType(_name))
sys.modules["hashserv"].client = sys.modules["hashserv.client"]

import bb  # noqa: E402
import bb.data  # noqa: E402
import bb.parse  # noqa: E402
from bb.parse import ast
from bb.parse.parse_py import BBHandler, ConfHandler

EVALUATED = (ast.DataNode, ast.ExportNode, ast.UnsetNode, ast.UnsetFlagNode, ast.MethodNode, ast.PythonMethodNode)


def check_recipe_like(path, layer):
    BBHandler.cached_statements.pop(path, None)
    statements = BBHandler.get_statements(path, path, os.path.basename(path))
    if BBHandler.__dict__.get("__infunc__"):
        raise bb.parse.ParseError("function %s is never closed" % BBHandler.__infunc__[0], path)
    d = bb.data.init()
    d.setVar("LAYERDIR", layer)
    d.setVar("FILE", path)
    for node in statements:
        if isinstance(node, EVALUATED):
            node.eval(d)
        if isinstance(node, ast.MethodNode) and node.python:
            # python do_task() { } and python __anonymous() { }: compile the body.
            body = "\n".join(node.body) or "pass"
            src = "def %s():\n%s\n" % (node.func_name.replace("-", "_"), textwrap.indent(textwrap.dedent(body), "    "))
            compile(src, "%s:%d (%s)" % (path, node.lineno, node.func_name), "exec")


def check_conf(path, layer):
    d = bb.data.init()
    d.setVar("LAYERDIR", layer)
    ConfHandler.handle(path, d, 0)


def main():
    layer = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    skip = {"target", "tools", ".git", "docs", "ci"}
    files = []
    for root, dirs, names in os.walk(layer):
        dirs[:] = sorted(x for x in dirs if not (root == layer and x in skip))
        for n in sorted(names):
            # .conf files outside conf/ are payloads (e.g. a broker's config).
            if n.endswith((".bb", ".bbappend", ".bbclass", ".inc")) or (
                n.endswith(".conf") and "conf" in os.path.relpath(root, layer).split(os.sep)
            ):
                files.append(os.path.join(root, n))
    failed = 0
    for path in files:
        rel = os.path.relpath(path, layer)
        try:
            if path.endswith(".conf"):
                check_conf(path, layer)
            else:
                check_recipe_like(path, layer)
            print("bb.parse ok    %s" % rel)
        except (bb.parse.ParseError, SyntaxError, Exception) as e:  # noqa: B902 - report any parser failure
            failed += 1
            print("bb.parse FAIL  %s: %s" % (rel, str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__))
        finally:
            BBHandler.__infunc__ = []
            BBHandler.__body__ = []
            BBHandler.__residue__ = []
            BBHandler.__inpython__ = False
    print("bb.parse: %d files, %d failed" % (len(files), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
