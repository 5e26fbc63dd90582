"""The third-party browser files the UI ships, and how they are fetched again.

``static/vendor/manifest.json`` names each file: its npm package and version, the file in
the package, where it lies here, its sha256 and its licence. The files are committed, so
netmon serves them offline and nothing is built at install time; this module re-downloads
them from the npm registry (the tarball checked against the registry's own sha512
integrity, then each file against the manifest's sha256)::

    python -m netmon.ui.vendor           # fetch into static/vendor/, verify
    python -m netmon.ui.vendor --check   # verify the committed files only (no network)
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["VENDOR_DIR", "VendoredFile", "check", "fetch", "manifest"]

VENDOR_DIR = Path(__file__).parent / "static" / "vendor"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True, slots=True)
class VendoredFile:
    package: str
    version: str
    file: str  # path inside the package tarball (under package/)
    dest: str  # path under static/vendor/
    sha256: str
    licence: str


def manifest() -> list[VendoredFile]:
    data = json.loads((VENDOR_DIR / "manifest.json").read_text())
    return [VendoredFile(**entry) for entry in data["files"]]


def check() -> list[str]:
    """What differs between the committed files and the manifest (empty: all match)."""
    problems = []
    for entry in manifest():
        path = VENDOR_DIR / entry.dest
        if not path.is_file():
            problems.append(f"{entry.dest}: missing")
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry.sha256:
            problems.append(f"{entry.dest}: sha256 {digest}, the manifest says {entry.sha256}")
    return problems


def _tarball(client: httpx.Client, package: str, version: str) -> bytes:
    meta = client.get(f"{REGISTRY}/{package}/{version}").raise_for_status().json()
    dist = meta["dist"]
    body = client.get(dist["tarball"]).raise_for_status().content
    algorithm, _, expected = dist["integrity"].partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, body).digest()).decode()
    if actual != expected:
        raise ValueError(f"{package}@{version}: the tarball does not match its integrity")
    return body


def fetch() -> None:
    """Download every manifest file from the registry; refuse one whose sha256 differs."""
    entries = manifest()
    with httpx.Client(timeout=60, follow_redirects=True) as client:
        for package, version in sorted({(e.package, e.version) for e in entries}):
            body = io.BytesIO(_tarball(client, package, version))
            with tarfile.open(fileobj=body) as tar:
                for entry in (e for e in entries if (e.package, e.version) == (package, version)):
                    _extract(tar, entry)


def _extract(tar: tarfile.TarFile, entry: VendoredFile) -> None:
    member = tar.extractfile(f"package/{entry.file}")
    if member is None:
        raise ValueError(f"{entry.package}@{entry.version} has no {entry.file}")
    body = member.read()
    digest = hashlib.sha256(body).hexdigest()
    if digest != entry.sha256:
        raise ValueError(f"{entry.dest}: sha256 {digest}, expected {entry.sha256}")
    target = VENDOR_DIR / entry.dest
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)
    print(f"{entry.package}@{entry.version} {entry.file} -> {entry.dest}")


def main(argv: list[str]) -> int:
    if "--check" not in argv:
        fetch()
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
