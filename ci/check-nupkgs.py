#!/usr/bin/env python3
"""Checks the packed nupkgs (ci/check-packages.sh): python3 ci/check-nupkgs.py FEED VERSION.

One line per package, "check-packages: ok|FAIL ...": the nuspec's id, version, licence expression (Apache-2.0), readme
(README.md in the package), repository (url and commit), and per package the files and dependencies a user relies
on: XML docs beside every library, a PDB carrying source link, the library depending on the managed TorchSharp only
(the backend is the user's choice), DiffusionLens.Testing on DiffusionLens and xunit.v3's assert/extensibility only
(no test runner, no test-only junk), the reference maker under tools/, the tool's DotnetToolSettings.xml, its embedded
tiny model and libtorch, and every package under nuget.org's 250 MB limit. Exit status: the number of failed packages.
"""
import sys
import zipfile
import xml.etree.ElementTree as ET
from pathlib import Path

feed, version = Path(sys.argv[1]), sys.argv[2]
NUGET_LIMIT = 250 * 1024 * 1024
failed = 0


def report(name: str, problems: list[str], detail: str) -> None:
    global failed
    if problems:
        failed += 1
        print(f"check-packages: FAIL {name}: " + "; ".join(problems))
    else:
        print(f"check-packages: ok   {name}: {detail}")


def nuspec(z: zipfile.ZipFile) -> ET.Element:
    name = next(n for n in z.namelist() if n.endswith(".nuspec") and "/" not in n)
    return ET.fromstring(z.read(name))


def find(root: ET.Element, tag: str):
    return root.find(f".//{{*}}{tag}")


def dependencies(root: ET.Element) -> dict[str, str]:
    return {d.get("id"): d.get("version") for d in root.iter() if d.tag.endswith("dependency")}


def common(path: Path, package_id: str) -> tuple[zipfile.ZipFile, ET.Element, list[str]]:
    z = zipfile.ZipFile(path)
    root = nuspec(z)
    problems = []
    meta = {tag: (find(root, tag).text if find(root, tag) is not None else None)
            for tag in ("id", "version", "license", "readme", "description", "authors")}
    if meta["id"] != package_id: problems.append(f"id {meta['id']} (expected {package_id})")
    if meta["version"] != version: problems.append(f"version {meta['version']} (expected {version})")
    if meta["license"] != "Apache-2.0" or find(root, "license").get("type") != "expression":
        problems.append(f"licence {meta['license']!r} is not the expression Apache-2.0")
    if meta["readme"] != "README.md" or "README.md" not in z.namelist(): problems.append("no README.md readme")
    for f in ("LICENSE", "NOTICE"):
        if f not in z.namelist(): problems.append(f"no {f}")
    repo = find(root, "repository")
    if repo is None or not (repo.get("url") or "").startswith("https://") or len(repo.get("commit") or "") != 40:
        problems.append(f"repository url/commit missing ({None if repo is None else repo.attrib})")
    if not meta["description"] or not meta["authors"]: problems.append("no description/authors")
    size = path.stat().st_size
    if size > NUGET_LIMIT: problems.append(f"{size / 2**20:.0f} MB is over nuget.org's 250 MB limit")
    return z, root, problems


def source_linked(z: zipfile.ZipFile, pdb: str) -> bool:
    # a portable PDB's source link record is the JSON {"documents":{"/path/*":"https://raw.githubusercontent.com/..."}}
    data = z.read(pdb)
    return b'{"documents":' in data and b"https://" in data


def library(path: Path, package_id: str, dll: str, deps_ok, extra=()) -> None:
    z, root, problems = common(path, package_id)
    names = set(z.namelist())
    for f in (f"lib/net10.0/{dll}.dll", f"lib/net10.0/{dll}.xml", f"lib/net10.0/{dll}.pdb", *extra):
        if f not in names: problems.append(f"no {f}")
    if f"lib/net10.0/{dll}.pdb" in names and not source_linked(z, f"lib/net10.0/{dll}.pdb"):
        problems.append(f"{dll}.pdb carries no source link")
    deps = dependencies(root)
    problems += deps_ok(deps)
    junk = [n for n in names if n.startswith(("runtimes/", "build/", "buildTransitive/")) or n.endswith((".runtimeconfig.json", ".deps.json"))]
    if junk: problems.append(f"unexpected files {junk[:5]}")
    report(f"nupkg {path.name}", problems,
           f"Apache-2.0, README.md, repository+commit, XML docs, source-linked PDB; depends on {', '.join(sorted(deps))}; {path.stat().st_size / 2**20:.1f} MB")


def lens_deps(deps: dict) -> list[str]:
    p = []
    if "TorchSharp" not in deps: p.append("no dependency on the managed TorchSharp")
    backends = [d for d in deps if d.lower().startswith(("torchsharp-", "libtorch"))]
    if backends: p.append(f"forces a TorchSharp backend on users: {backends}")
    return p


def testing_deps(deps: dict) -> list[str]:
    p = []
    if deps.get("DiffusionLens") != version: p.append(f"DiffusionLens dependency {deps.get('DiffusionLens')} (expected {version})")
    allowed = {"DiffusionLens", "xunit.v3.assert", "xunit.v3.extensibility.core"}
    extra = sorted(set(deps) - allowed)
    if extra: p.append(f"test-only or unexpected dependencies {extra}")
    for need in ("xunit.v3.assert", "xunit.v3.extensibility.core"):
        if need not in deps: p.append(f"no {need} dependency")
    return p


library(feed / f"DiffusionLens.{version}.nupkg", "DiffusionLens", "DiffusionLens", lens_deps)
library(feed / f"DiffusionLens.Testing.{version}.nupkg", "DiffusionLens.Testing", "DiffusionLens.Testing", testing_deps,
        extra=("tools/diffusion-lens-reference/pyproject.toml",
               "tools/diffusion-lens-reference/src/diffusion_lens_reference/make_reference.py"))

# the tool: a pointer package and the linux-x64 package with the bits
pointer, rid = feed / f"DiffusionLens.Cli.{version}.nupkg", feed / f"DiffusionLens.Cli.linux-x64.{version}.nupkg"
for path, package_id in ((pointer, "DiffusionLens.Cli"), (rid, "DiffusionLens.Cli.linux-x64")):
    if not path.exists():
        report(f"nupkg {path.name}", ["not packed"], "")
        continue
    z, root, problems = common(path, package_id)
    names = set(z.namelist())
    types = [t.get("name") for t in root.iter() if t.tag.endswith("packageType")]
    want = "DotnetTool" if path is pointer else "DotnetToolRidPackage"
    if want not in types: problems.append(f"package type {types} is not {want}")
    settings = [n for n in names if n.endswith("DotnetToolSettings.xml")]
    if not settings: problems.append("no DotnetToolSettings.xml")
    else:
        s = ET.fromstring(z.read(settings[0]))
        cmd = find(s, "Command")
        if path is rid and (cmd is None or cmd.get("Name") != "lens"): problems.append("DotnetToolSettings.xml names no command 'lens'")
        if path is pointer and not any(r.get("RuntimeIdentifier") == "linux-x64" for r in s.iter() if r.tag.endswith("RuntimeIdentifierPackage")):
            problems.append("the pointer package names no linux-x64 package")
    if path is rid:
        prefix = "tools/net10.0/linux-x64/"
        for f in ("lens.dll", "lens.xml", "DiffusionLens.dll", "models/sd-tiny-12/model_index.json", "libtorch.so"):
            if prefix + f not in names: problems.append(f"no {prefix}{f}")
    report(f"nupkg {path.name}", problems, f"{want}, DotnetToolSettings.xml, {path.stat().st_size / 2**20:.1f} MB")

sys.exit(failed)  # the number of packages that failed
