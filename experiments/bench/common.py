"""Helpers shared by the benchmark scripts (run as scripts: this folder is on sys.path)."""


def parse_overrides(text: str) -> dict:
    import yaml

    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--arch-override: expected key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out
