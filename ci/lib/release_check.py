#!/usr/bin/env python3
"""The layer's Yocto releases against the facts of ci/yocto-series.

For LAYERDIR (default: this checkout), fail unless:
- every series LAYERSERIES_COMPAT_pantavisor-rs names is a Yocto series;
- every declared series is built by a kas configuration of ours: a machine
  file alone (the default release) or with an overlay of kas/release/;
- each such configuration pins every repository to a commit, pairs its
  openembedded-core branch with the BitBake branch of that series, and builds
  a series the layer declares;
- the Rust of each configuration (openembedded-core's, or the mixin's when
  the configuration adds a mixin layer at the commit ci/yocto-series lists)
  is at least the workspace's rust-version (Cargo.toml).

The kas files are merged as kas merges them (includes first, then the file,
then each overlay; mappings merged key by key), without fetching anything.

Usage: release_check.py [LAYERDIR] [--json | --series]
  --json: the resolved configurations (for ci/yocto-releases)
  --series: only print the declared series
  --summarize-dump FILE: one line of a `kas dump` output (for ci/yocto-releases)
"""
import glob
import json
import os
import sys
import tomllib

import yaml


def version(text):
    return tuple(int(x) for x in text.split("."))


def read_table(layer):
    series, mixins = {}, []
    path = os.path.join(layer, "ci", "yocto-series")
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if fields[0] == "series" and len(fields) == 5:
                name, yocto, bitbake, rust = fields[1:]
                series[name] = {"yocto": yocto, "bitbake": bitbake, "rust": None if rust == "-" else rust}
            elif fields[0] == "mixin" and len(fields) == 7:
                keys = ("series", "repo", "branch", "commit", "collection", "rust")
                mixins.append(dict(zip(keys, fields[1:])))
            else:
                raise SystemExit("%s:%d: not a series or mixin line: %s" % (path, n, line.strip()))
    return series, mixins


def layer_series(layer):
    """LAYERSERIES_COMPAT_pantavisor-rs, read by BitBake's own conf parser."""
    sys.path.insert(0, os.path.dirname(__file__))
    import bbparse_check  # noqa: F401  (stubs hashserv for the bb wheel)
    import bb.data
    from bb.parse.parse_py import ConfHandler

    d = bb.data.init()
    d.setVar("LAYERDIR", layer)
    ConfHandler.handle(os.path.join(layer, "conf", "layer.conf"), d, 0)
    return (d.getVar("LAYERSERIES_COMPAT_pantavisor-rs") or "").split()


def rust_version(layer):
    with open(os.path.join(layer, "Cargo.toml"), "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["rust-version"]


def merge(dest, upd):
    out = dict(dest)
    for key, val in upd.items():
        if isinstance(out.get(key), dict) and isinstance(val, dict):
            out[key] = merge(out[key], val)
        else:
            out[key] = val
    return out


def load_kas(layer, rel, seen=()):
    if rel in seen:
        raise ValueError("%s includes itself" % rel)
    with open(os.path.join(layer, rel)) as f:
        doc = yaml.safe_load(f) or {}
    merged = {}
    for inc in (doc.get("header") or {}).get("includes") or []:
        if not isinstance(inc, str):
            raise ValueError("%s: includes from other repositories are not checked" % rel)
        merged = merge(merged, load_kas(layer, inc, seen + (rel,)))
    body = {k: v for k, v in doc.items() if k != "header"}
    return merge(merged, body)


def configurations(layer):
    """(name, merged config) of every machine file, alone and with each release overlay."""
    machines = sorted(os.path.relpath(p, layer) for p in glob.glob(os.path.join(layer, "kas", "*.yml")))
    overlays = sorted(os.path.relpath(p, layer) for p in glob.glob(os.path.join(layer, "kas", "release", "*.yml")))
    for m in machines:
        base = load_kas(layer, m)
        yield m, base
        for o in overlays:
            yield "%s:%s" % (m, o), merge(base, load_kas(layer, o))


def check(layer):
    errors = []
    table, mixins = read_table(layer)
    declared = layer_series(layer)
    need = rust_version(layer)
    if not declared:
        errors.append("conf/layer.conf: LAYERSERIES_COMPAT_pantavisor-rs is empty")
    for s in declared:
        if s not in table:
            errors.append("conf/layer.conf: LAYERSERIES_COMPAT_pantavisor-rs names \"%s\", which is not a Yocto "
                          "release series (ci/yocto-series knows: %s)" % (s, " ".join(table)))
    built = {}
    resolved = []
    for name, cfg in configurations(layer):
        repos = cfg.get("repos") or {}
        core = repos.get("openembedded-core") or {}
        series = core.get("branch")
        if series not in table:
            errors.append("%s: openembedded-core branch %r is not a Yocto series" % (name, series))
            continue
        for rname, repo in repos.items():
            if repo and repo.get("url") and not repo.get("commit"):
                errors.append("%s: repository %s is not pinned to a commit" % (name, rname))
        bitbake = (repos.get("bitbake") or {}).get("branch")
        if str(bitbake) != table[series]["bitbake"]:
            errors.append("%s: %s needs BitBake %s, the configuration has %s" % (name, series, table[series]["bitbake"], bitbake))
        if series not in declared:
            errors.append("%s builds %s, which conf/layer.conf does not declare" % (name, series))
        rust, source = table[series]["rust"], "openembedded-core"
        for mx in mixins:
            repo = repos.get(mx["repo"]) or {}
            if mx["series"] == series and repo.get("commit") == mx["commit"] and repo.get("branch") == mx["branch"]:
                rust, source = mx["rust"], "%s %s" % (mx["repo"], mx["branch"])
        if rust is None:
            errors.append("%s: the Rust of %s is not known (ci/yocto-series)" % (name, series))
        elif version(rust) < version(need):
            errors.append("%s: %s's Rust is %s (%s), older than the workspace's rust-version %s" % (name, series, rust, source, need))
        built.setdefault(series, []).append(name)
        resolved.append({"config": name, "series": series, "rust": rust, "rust_from": source,
                         "machine": cfg.get("machine"), "repos": repos})
    for s in declared:
        if s in table and s not in built:
            errors.append("conf/layer.conf declares %s, but no kas configuration builds it (add kas/release/%s.yml)" % (s, s))
    return declared, need, built, resolved, errors


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    layer = os.path.abspath(args[0] if args else os.path.join(os.path.dirname(__file__), "..", ".."))
    if "--summarize-dump" in sys.argv:
        with open(args[0]) as f:
            d = yaml.safe_load(f)
        def layers(repo):
            named = (repo or {}).get("layers")
            if named is None:
                return "."
            return ",".join(name for name, v in named.items() if v != "disabled") or "no layers"
        repos = " ".join("%s@%s(%s)" % (k, ((v or {}).get("commit") or "local")[:12], layers(v))
                         for k, v in sorted(d["repos"].items()))
        print("machine %s, distro %s, target %s, local_conf_header %s; repos %s" % (
            d.get("machine"), d.get("distro"), d.get("target"), "+".join(sorted(d.get("local_conf_header") or {})), repos))
        return 0
    if "--series" in sys.argv:
        print(" ".join(layer_series(layer)))
        return 0
    declared, need, built, resolved, errors = check(layer)
    if "--json" in sys.argv:
        json.dump(resolved, sys.stdout, indent=1)
        return 1 if errors else 0
    for e in errors:
        print("releases: %s" % e)
    summary = ", ".join("%s (%s)" % (s, ", ".join(sorted({r["rust"] + " from " + r["rust_from"] for r in resolved if r["series"] == s})))
                        for s in declared if s in built)
    print("releases: %s; rust-version %s; %d kas configurations; %s" % (
        " ".join(declared), need, len(resolved), "%d problems" % len(errors) if errors else "ok: " + summary))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
