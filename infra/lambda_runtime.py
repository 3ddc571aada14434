"""What the Lambda python3.11 runtime brings, so no artifact ships it: boto3 and its
dependencies. The artifact test and the cold-start benchmark stand it in with the
development venv's copies (bytecode included, as the runtime has it)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

# distribution -> its top-level names on sys.path
RUNTIME_PROVIDED: dict[str, tuple[str, ...]] = {
    "boto3": ("boto3",),
    "botocore": ("botocore",),
    "s3transfer": ("s3transfer",),
    "jmespath": ("jmespath",),
    "python-dateutil": ("dateutil",),
    "six": ("six.py",),
    "urllib3": ("urllib3",),
}


def link_runtime_packages(directory: Path) -> Path:
    """`directory` holding links to this environment's copies of the runtime's packages, and
    nothing else: put it on sys.path after an artifact to import as Lambda would."""
    directory.mkdir(parents=True, exist_ok=True)
    for dist, names in RUNTIME_PROVIDED.items():
        try:
            found = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            raise LookupError(f"{dist} (runtime-provided) is not installed here") from None
        for name in names:
            (directory / name).symlink_to(found.locate_file(name))
    return directory
