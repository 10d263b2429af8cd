"""Prints one value of a TOML, YAML or JSON file, for the shell scripts
(deploy/images/build.sh, deploy/lib/toolchain.sh): they read Cargo.toml and the
manifests with a parser, not with sed.

    python3 deploy/lib/config_value.py FILE KEY...

Each KEY goes one level down: a mapping's key, a list's index, or NAME=VALUE
for the list element whose NAME is VALUE. For example

    config_value.py Cargo.toml workspace package version
    config_value.py deploy/sink/kustomization.yaml images name=trace-sink newTag

The format follows the file's name: .toml (tomllib), .yaml / .yml (PyYAML,
Debian's python3-yaml), .json. The value must be a string, a number or a
boolean (printed as in the file: true / false). Errors: one line on stderr,
exit 1 (exit 2 when PyYAML, or tomllib of Python >= 3.11, is missing).
"""

import json
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11; said when a TOML file is read
    tomllib = None
try:
    import yaml
except ImportError:  # only YAML files need it; said when one is read
    yaml = None

PROG = "config_value.py"


def load(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".toml":
        if tomllib is None:
            print(f"{PROG}: reading {path} needs Python >= 3.11 (tomllib), this is {sys.version.split()[0]}",
                  file=sys.stderr)
            sys.exit(2)
        with path.open("rb") as f:
            return tomllib.load(f)
    if suffix in (".yaml", ".yml"):
        if yaml is None:
            print(f"{PROG}: reading {path} needs PyYAML (Debian: apt-get install python3-yaml)", file=sys.stderr)
            sys.exit(2)
        with path.open() as f:
            return yaml.safe_load(f)
    if suffix == ".json":
        with path.open() as f:
            return json.load(f)
    raise ValueError("unknown format (not .toml, .yaml, .yml or .json)")


def step(node, key: str):
    """One level down from node by key; KeyError with what was looked for."""
    if isinstance(node, dict):
        if key in node:
            return node[key]
        raise KeyError(f"no key {key!r}")
    if isinstance(node, list):
        if key.isdigit():
            if int(key) < len(node):
                return node[int(key)]
            raise KeyError(f"no element {key} (the list has {len(node)})")
        name, eq, value = key.partition("=")
        if eq:
            found = [e for e in node if isinstance(e, dict) and str(e.get(name)) == value]
            if len(found) == 1:
                return found[0]
            raise KeyError(f"{len(found)} elements with {name} = {value!r}, need exactly one")
    raise KeyError(f"{key!r} goes below a {type(node).__name__}")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(f"usage: {PROG} FILE KEY...", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 1
    path, keys = Path(argv[0]), argv[1:]
    # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
    unreadable = (OSError, ValueError) + ((yaml.YAMLError,) if yaml else ())
    try:
        node = load(path)
    except unreadable as e:
        print(f"{PROG}: {path}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    for depth, key in enumerate(keys, 1):
        try:
            node = step(node, key)
        except KeyError as e:
            print(f"{PROG}: {path}: {' '.join(keys[:depth])}: {e.args[0]}", file=sys.stderr)
            return 1
    if isinstance(node, bool):
        print("true" if node else "false")
    elif isinstance(node, (str, int, float)):
        print(node)
    else:
        print(f"{PROG}: {path}: {' '.join(keys)}: a {type(node).__name__}, not a single value", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
